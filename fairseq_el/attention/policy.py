"""Per layer and per run: EL, or a projection cached once per sentence? Both are exact.

EL reads one (S, C) encoder output per sentence but spends H times the attention FLOPs; a cached
projection (what fairseq 0.12's BART does) reads 2 (S, C) per sentence per layer at stock FLOPs
and needs that memory. ``--el-policy auto`` prices both with a roofline cost model of the device
(FLOP/s and memory bandwidth measured once per device and dtype) and takes the faster one, as long
as the caches fit ``--el-memory-budget``; past the budget, layers use EL.
"""

import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Set, Tuple

import torch
from torch import Tensor

POLICIES = ("el", "cached", "auto")
# the default: exact either way, and never the slower of the two where the caches fit (measured in
# docs/benchmarks.md); "el" keeps the smallest state (what --batch-size auto sizes batches for)
DEFAULT_POLICY = "auto"
AMORTIZED_STEPS = 64  # the one-time projection of a cached layer is spread over this many steps


@dataclass(frozen=True)
class Hardware:
    flops: float  # matmul FLOP/s
    bandwidth: float  # copy bytes/s


_MEASURED: Dict[Tuple[str, torch.dtype], Hardware] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_hardware(device: torch.device, dtype: torch.dtype) -> Hardware:
    """Matmul FLOP/s and copy bandwidth of ``device`` (measured once, a few milliseconds)."""
    key = (str(device), dtype)
    if key not in _MEASURED:
        n, reps = 512, 4
        # any values: never draws from the global generator, which sampling shares (a random
        # matrix here changed every sampled hypothesis of a run that measured)
        a = torch.full((n, n), 0.5, device=device, dtype=dtype)
        src = torch.empty(1 << 22, device=device, dtype=dtype)
        dst = torch.empty_like(src)
        a @ a, dst.copy_(src)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ a
        _sync(device)
        flops = 2 * n**3 * reps / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(reps):
            dst.copy_(src)
        _sync(device)
        bandwidth = 2 * src.numel() * src.element_size() * reps / (time.perf_counter() - start)
        _MEASURED[key] = Hardware(flops, bandwidth)
    return _MEASURED[key]


def roofline_seconds(flops: float, nbytes: float, flops_per_s: float, bytes_per_s: float) -> float:
    """A kernel is bound by its FLOPs or by the bytes it moves, whichever takes longer."""
    return max(flops / flops_per_s, nbytes / bytes_per_s)


def cross_attention_work(
    rows: int, sentences: int, src_len: int, embed_dim: int, kdim: int, heads: int, elem: int
) -> Dict[str, Tuple[float, float]]:
    """(FLOPs, bytes) of one layer's encoder-decoder attention at one decoding step.

    ``el``: expanded queries against the shared (S, C) encoder output of each sentence (H times
    the attention FLOPs); ``cached``: attention against keys and values projected once per
    sentence (the projection itself not included). ``rows`` query rows, ``sentences`` memories.
    """
    return {
        "el": (
            4 * rows * embed_dim * kdim + 4 * rows * heads * src_len * kdim,
            2 * sentences * src_len * kdim * elem,  # the encoder output, for scores and sum
        ),
        "cached": (
            4 * rows * src_len * embed_dim,
            2 * sentences * src_len * embed_dim * elem,  # keys and values
        ),
    }


def step_seconds(
    hw: Hardware,
    rows: int,
    sentences: int,
    src_len: int,
    embed_dim: int,
    kdim: int,
    heads: int,
    elem: int,
) -> Tuple[float, float]:
    """Roofline seconds of one decoding step of one layer: (EL, cached projection)."""
    work = cross_attention_work(rows, sentences, src_len, embed_dim, kdim, heads, elem)
    el_flops, el_bytes = work["el"]
    cached_flops, cached_bytes = work["cached"]
    # the one-time projection of a cached layer, spread over the run
    cached_flops += 4 * sentences * src_len * kdim * embed_dim / AMORTIZED_STEPS
    return (
        roofline_seconds(el_flops, el_bytes, hw.flops, hw.bandwidth),
        roofline_seconds(cached_flops, cached_bytes, hw.flops, hw.bandwidth),
    )


_MEMORY: Dict[str, int] = {}  # device -> bytes, read once (a compiled step only looks it up)


def device_memory(device: torch.device) -> int:
    key = str(device)
    if key not in _MEMORY:
        if device.type == "cuda":
            _MEMORY[key] = torch.cuda.get_device_properties(device).total_memory
        else:
            _MEMORY[key] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return _MEMORY[key]


class ELPolicy:
    """Shared by the encoder-decoder attentions of one decoder.

    ``memory_budget`` (bytes) bounds the cached projections of all its layers together; ``None``
    means a tenth of the device's memory.
    """

    def __init__(self, mode: str = "el", memory_budget: Optional[float] = None) -> None:
        if mode not in POLICIES:
            raise ValueError(f"--el-policy must be one of {POLICIES}, not {mode!r}")
        self.mode = mode
        self.memory_budget = memory_budget
        self.members: Set[str] = set()  # incremental-state ids of the attentions it serves

    @classmethod
    def from_options(cls, options) -> "ELPolicy":
        """From :class:`~fairseq_el.models.options.ELOptions` (budget in GB)."""
        budget = options.memory_budget
        return cls(options.policy, None if budget is None else budget * 1e9)

    def use_el(
        self,
        attention,
        incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
        query: Tensor,
        key: Tensor,
    ) -> bool:
        """Whether ``attention`` runs EL for this call (only asked when it holds no cache)."""
        if self.mode != "auto":
            return self.mode == "el"
        rows, sentences, src_len = query.size(1), key.size(1), key.size(0)
        elem = key.element_size()
        cache = 2 * sentences * src_len * attention.embed_dim * elem
        budget = self.memory_budget
        if budget is None:
            budget = device_memory(key.device) / 10
        if self._cached_bytes(incremental_state) + cache > budget:
            return True
        hw = measure_hardware(key.device, key.dtype)
        el, cached = step_seconds(
            hw,
            rows,
            sentences,
            src_len,
            attention.embed_dim,
            attention.kdim,
            attention.num_heads,
            elem,
        )
        # a tie goes to the cache: the model prices both at the same bytes there, and EL's many
        # small matmuls run below the roofline on a CPU (bart-base, batch 4, greedy: a tie in the
        # model, and EL decoded at x0.74 of stock's speed; docs/benchmarks.md)
        return el < cached

    def _cached_bytes(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]]) -> int:
        total = 0
        for name, buffer in incremental_state.items():
            if name.split(".")[0] in self.members:
                total += sum(t.numel() * t.element_size() for t in buffer.values() if t is not None)
        return total
