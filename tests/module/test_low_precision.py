"""Tier 1 in fp16 and bf16: EL is at most twice as far from an fp32 reference as stock is.

The rule and the cases are :mod:`fairseq_el.testing.precision` (the GPU check reports the same
numbers): every attention variant the project adds, incremental as a decoder calls it, with odd
head counts, beams 1 and 4, with and without padding, on every available device.
"""

import itertools

import pytest
import torch

from fairseq_el.bench.precision import DTYPES
from fairseq_el.testing.precision import (
    Diffs,
    cross_attention,
    grouped_cross_attention,
    grouped_self_attention,
    half_ulp,
    self_attention,
)

from helpers import OUTPUT_TOL

LOW = ["fp16", "bf16"]
BEAM_PADDING = list(itertools.product([1, 4], [False, True]))


def check(outputs, dtype: str, label: str) -> None:
    ref, stock, el = outputs["output"]
    assert ref.dtype == torch.float32 and stock.dtype == el.dtype == DTYPES[dtype]
    for name, (ref, stock, el) in outputs.items():
        diffs = Diffs.of(ref, stock, el, DTYPES[dtype])
        print(f"{label} {name}: {diffs.describe()}")
        assert diffs.stock_max > 0, "stock is exact: the inputs did not reach low precision"
        assert diffs.holds(), f"{label} {name}: {diffs.describe()}"


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("beam,padding", BEAM_PADDING)
@pytest.mark.parametrize("heads,head_dim,kdim", [(1, 8, None), (3, 4, None), (5, 3, 10),
                                                 (7, 2, None), (4, 16, 24)])  # fmt: skip
def test_cross_attention(heads, head_dim, kdim, beam, padding, dtype, device):
    outputs = cross_attention(heads, head_dim, beam, padding, DTYPES[dtype], device, kdim=kdim)
    check(
        outputs,
        dtype,
        f"cross H={heads} D={head_dim} kdim={kdim} beam={beam} pad={padding} {dtype}",
    )


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("beam,padding", BEAM_PADDING)
@pytest.mark.parametrize("heads,head_dim", [(1, 8), (3, 4), (5, 3), (4, 16)])
def test_self_attention(heads, head_dim, beam, padding, dtype, device):
    outputs = self_attention(heads, head_dim, beam, padding, DTYPES[dtype], device)
    check(outputs, dtype, f"self H={heads} D={head_dim} beam={beam} pad={padding} {dtype}")


GROUPS = [(4, 1, 4), (4, 2, 4), (6, 3, 3), (3, 1, 5)]  # (heads, kv heads, head dim): odd ones too


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("beam,padding", BEAM_PADDING)
@pytest.mark.parametrize("heads,kv_heads,head_dim", GROUPS)
def test_grouped_self_attention(heads, kv_heads, head_dim, beam, padding, dtype, device):
    outputs = grouped_self_attention(heads, kv_heads, head_dim, beam, padding, DTYPES[dtype],
                                     device)  # fmt: skip
    check(outputs, dtype, f"grouped self H={heads} N={kv_heads} beam={beam} pad={padding} {dtype}")


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("beam,padding", BEAM_PADDING)
@pytest.mark.parametrize("heads,kv_heads,head_dim", GROUPS)
def test_grouped_cross_attention(heads, kv_heads, head_dim, beam, padding, dtype, device):
    outputs = grouped_cross_attention(heads, kv_heads, head_dim, beam, padding, DTYPES[dtype],
                                      device)  # fmt: skip
    check(outputs, dtype, f"grouped cross H={heads} N={kv_heads} beam={beam} pad={padding} {dtype}")


@pytest.mark.parametrize("case", [cross_attention, self_attention])
def test_fp32_is_exact_within_the_parity_tolerance(case, device):
    """The same cases in fp32: the reference and stock are one computation, EL is within the
    1e-5 of the fp32 parity tests (so the low-precision cases compare like with like)."""
    for name, (ref, stock, el) in case(5, 3, 4, True, torch.float32, device).items():
        assert torch.equal(ref, stock), name
        assert float((el - ref).abs().max()) <= OUTPUT_TOL, name


def test_half_ulp():
    assert half_ulp(torch.float16, 1.0) == 2**-11 and half_ulp(torch.float16, 3.9) == 2**-10
    assert half_ulp(torch.bfloat16, 0.3) == 2**-10 and half_ulp(torch.float16, 0.0) == 0.0
    half = half_ulp(torch.float16, 3.0)  # fp16 numbers near 3 are 2 * half apart
    assert float(torch.tensor(3.0 + 0.9 * half).half()) == 3.0
    assert float(torch.tensor(3.0 + 1.1 * half).half()) == 3.0 + 2 * half


def test_rule_rejects_an_el_twice_as_far_as_stock():
    """The rule is not vacuous: a result 2x stock's error plus more than eps fails it."""
    ref = torch.linspace(-1, 1, 101)
    stock = (ref + 1e-2).half()
    assert Diffs.of(ref, stock, stock, torch.float16).holds()
    worse = (ref + 2.1e-2).half()
    diffs = Diffs.of(ref, stock, worse, torch.float16)
    assert diffs.el_max > 2 * diffs.stock_max + diffs.eps_max and not diffs.holds()
