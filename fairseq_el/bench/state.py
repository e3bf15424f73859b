"""Exact decoding-state accounting: what the generator holds between decoding steps.

Decoding state is every tensor in the incremental state (self-attention and encoder-decoder
caches of every decoder layer) plus the encoder output the generator keeps and reorders. Bytes
are counted per distinct storage, so a tensor shared by two entries (stock BART's padding mask)
counts once, and views count their whole storage (what the allocator really holds).

State is linear in the batch size for a fixed source length, beam and step count, so the largest
batch that fits a budget is found from two small measured batches (:func:`LinearState.fit`),
without allocating the budget. :func:`expected_bytes` is the same count derived by hand from
fairseq 0.12's code, checked against the measurement by the tests.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set

import torch
from torch import nn

from fairseq_el.attention.cache import capacity

# The parts of the decoding state reported separately.
PARTS = ("encoder_out", "encdec_cache", "self_cache", "other")


def storage_bytes(obj: Any, seen: Optional[Set[int]] = None) -> int:
    """Bytes of the distinct tensor storages in a nest of dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(storage_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(storage_bytes(v, seen) for v in obj)
    return 0


def attention_kinds(model: nn.Module) -> Dict[str, str]:
    """Incremental-state id of every decoder attention module -> ``self_cache``/``encdec_cache``."""
    kinds = {}
    for layer in getattr(model.decoder, "layers", []):
        for attr, kind in (("self_attn", "self_cache"), ("encoder_attn", "encdec_cache")):
            module = getattr(layer, attr, None)
            state_id = getattr(module, "_incremental_state_id", None)
            if state_id is not None:
                kinds[state_id] = kind
    return kinds


def decoding_state(
    kinds: Dict[str, str], encoder_outs: Any, incremental_states: Any
) -> Dict[str, int]:
    """Bytes per part of the state one decoding step leaves behind (distinct storages)."""
    seen: Set[int] = set()
    parts = dict.fromkeys(PARTS, 0)
    parts["encoder_out"] = storage_bytes(encoder_outs, seen)
    for states in incremental_states or []:
        for key, value in states.items():
            kind = kinds.get(key.rsplit(".", 1)[0], "other")
            parts[kind] += storage_bytes(value, seen)
    parts["total"] = sum(parts[p] for p in PARTS)
    return parts


class StateMeter:
    """Wraps an ``EnsembleModel.forward_decoder`` and weighs the decoding state after each step.

    ``peak``: the parts of the largest state seen (distinct storages, capacity included).
    ``per_token``: per step, the incremental-state bytes / (hypotheses x positions decoded).
    """

    def __init__(self, ensemble: nn.Module):
        self.kinds: Dict[str, str] = {}
        for model in ensemble.models:
            self.kinds.update(attention_kinds(model))
        self.peak: Dict[str, int] = dict.fromkeys((*PARTS, "total"), 0)
        self.steps = 0
        self.per_token: List[float] = []
        self._forward = ensemble.forward_decoder
        ensemble.forward_decoder = self

    def __call__(self, tokens, encoder_outs, incremental_states, temperature=1.0):
        out = self._forward(tokens, encoder_outs, incremental_states, temperature)
        parts = decoding_state(self.kinds, encoder_outs, incremental_states)
        self.steps += 1
        rows, positions = tokens.shape  # (hypotheses, positions decoded)
        self.per_token.append((parts["total"] - parts["encoder_out"]) / (rows * positions))
        if parts["total"] >= self.peak["total"]:
            self.peak = parts
        return out


def largest_batch(fits: Callable[[int], bool], limit: int = 1 << 24) -> int:
    """The largest batch in [0, limit] for which ``fits`` holds, by bisection; ``fits`` must be
    monotone (true up to some batch, false after it). 0 if even batch 1 does not fit."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class LinearState:
    """Decoding-state bytes as ``per_sentence * batch + fixed``: exact, state is linear in batch."""

    per_sentence: int
    fixed: int

    @classmethod
    def fit(cls, batch1: int, bytes1: int, batch2: int, bytes2: int) -> "LinearState":
        if batch1 == batch2:
            raise ValueError("two different batch sizes are needed to fit the state")
        per, rem = divmod(bytes2 - bytes1, batch2 - batch1)
        if rem:
            raise ValueError(
                f"state is not linear in batch: {bytes1} at {batch1}, {bytes2} at {batch2}"
            )
        return cls(per, bytes1 - per * batch1)

    def at(self, batch: int) -> int:
        return self.per_sentence * batch + self.fixed

    def largest_batch(self, budget_bytes: int, limit: int = 1 << 24) -> int:
        """The largest batch whose state fits ``budget_bytes`` (0 if none)."""
        return largest_batch(lambda batch: self.at(batch) <= budget_bytes, limit)


@dataclass(frozen=True)
class Dims:
    """What the state depends on: decoder layers, widths, heads and dtype size."""

    layers: int
    embed_dim: int
    encoder_dim: int
    heads: int
    dtype_bytes: int = 4


def held_encoder_output(
    variant: str, dims: Dims, batch: int, hyps: int, src_len: int
) -> Dict[str, int]:
    """Bytes of each tensor of the encoder output the generator holds, by hand.

    ``encoder_out`` (S, rows, Ce) and ``encoder_embedding`` (rows, S, Ce), the bool padding mask
    (rows, S) and int32 ``src_lengths`` (rows, 1); rows are hypotheses when the generator
    expands the output (stock per-beam), sentences otherwise (stock BART, EL), where EL adds its
    int64 row->sentence map (N,). fairseq's decoder never reads ``encoder_embedding``, and the EL
    encoder drops it at the generator's first reorder.
    """
    rows = batch * hyps if variant == "stock-per-beam" else batch
    tensor = src_len * rows * dims.encoder_dim * dims.dtype_bytes
    row_sentence = 8 * batch * hyps if variant.startswith("el") else 0
    embedding = 0 if variant.startswith("el") else tensor
    return {"encoder_out": tensor, "encoder_embedding": embedding, "padding_mask": rows * src_len,
            "src_lengths": 4 * rows, "row_sentence": row_sentence}  # fmt: skip


def expected_bytes(
    variant: str, dims: Dims, batch: int, hyps: int, src_len: int, positions: int
) -> Dict[str, int]:
    """The decoding state fairseq 0.12 holds after ``positions`` decoded positions, by hand.

    Encoder output: :func:`held_encoder_output`. Encoder-decoder cache: keys and values
    (rows, H, S, D) per layer plus the padding mask, which ``MultiheadAttention`` stores per layer
    as float32. Self-attention cache: keys and values (N, H, T, D) per layer; EL self-attention:
    its layer inputs (N, T, C) per layer. EL models keep either in a
    :class:`~fairseq_el.attention.cache.DecodingCache`: room for
    :func:`~fairseq_el.attention.cache.capacity` positions, plus its ancestry under beam search.
    """
    b, L, S = dims.dtype_bytes, dims.layers, src_len
    n = batch * hyps
    rows = n if variant == "stock-per-beam" else batch
    parts = dict.fromkeys(PARTS, 0)
    parts["encoder_out"] = sum(held_encoder_output(variant, dims, batch, hyps, S).values())
    if variant.startswith("stock"):
        # keys, values and the padding mask fairseq stores as float32 (``.float()``)
        parts["encdec_cache"] = L * rows * S * (2 * dims.embed_dim * b + 4)
    per_position = dims.embed_dim if variant == "el-sa" else 2 * dims.embed_dim
    if variant.startswith("stock"):
        parts["self_cache"] = L * n * positions * per_position * b
    else:
        # the in-place cache holds capacity(positions) positions, and, once beams reorder
        # (hyps > 1), an int64 ancestry per hypothesis and position
        ancestry = 8 if hyps > 1 else 0
        parts["self_cache"] = L * n * capacity(positions) * (per_position * b + ancestry)
    parts["total"] = sum(parts[p] for p in PARTS)
    return parts
