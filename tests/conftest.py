"""Test tiers by folder, and session fixtures (a tiny Transformer trained for seconds, so
hypotheses are not degenerate).

Tiers: ``module`` (attention modules against stock), ``model`` (decoders and generators),
``convert`` (checkpoints), ``tools`` (benchmark, recipes), ``e2e`` (the console scripts and
fairseq's CLIs end to end). Each test is marked with its folder's tier; every ``e2e`` test and
each test that runs a real CLI elsewhere is also ``slow``: ``pytest -m "not slow"`` is the inner
loop.
"""

import os
from pathlib import Path

# Every reorder of every run in the tests (subprocesses included) is checked against the layout
# of fairseq's generators that EL's caches assume (fairseq_el/attention/cache.py CHECK_ORDERS).
os.environ.setdefault("FAIRSEQ_EL_CHECK_ORDERS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from fairseq_el.testing import build_translation_model, make_dictionary, tiny_args  # noqa: E402

from helpers import make_batch, train_step  # noqa: E402

# Tiny models: one thread is faster than two (no OpenMP hand-offs) and steadier on a busy machine.
torch.set_num_threads(1)

TIERS = ("module", "model", "convert", "tools", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "e2e":
            item.add_marker(pytest.mark.slow)


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device of a parity test: "cpu" always, "cuda" too where CUDA is available (the test
    ids hold ``cpu`` / ``cuda``, so ``-k cuda`` selects the CUDA half)."""
    return request.param


@pytest.fixture(scope="session")
def trained_transformer():
    """A 2-layer Transformer trained to reverse its input; returns (model, task, dictionary)."""
    dictionary = make_dictionary(16)
    model, task, _ = build_translation_model(
        "transformer", dictionary, extra=tiny_args(dim=32, heads=4, ffn=64), seed=0
    )
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    pad = dictionary.pad()
    for step in range(300):
        lengths = torch.randint(3, 9, (32,), generator=torch.Generator().manual_seed(step))
        sample = make_batch(dictionary, lengths.tolist(), seed=step)
        loss = train_step(model, optimizer, sample, pad)
    print(f"trained transformer: final loss {loss.item():.3f}")
    return model.eval(), task, dictionary
