"""Exact decoding-state accounting: what the generator holds between decoding steps.

Decoding state is every tensor in the incremental state (self-attention and encoder-decoder
caches of every decoder layer) plus the encoder output the generator keeps and reorders. Bytes
are counted per distinct storage, so a tensor shared by two entries (stock BART's padding mask)
counts once, and views count their whole storage (what the allocator really holds).

State is linear in the batch size for a fixed source length, beam and step count, so the largest
batch that fits a budget is found from two small measured batches (:func:`LinearState.fit`),
without allocating the budget. :func:`expected_bytes` is the same count derived by hand
(:mod:`fairseq_el.accounting`) for a benchmark variant, checked against the measurement by the
tests.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set

import torch
from torch import nn

from fairseq_el.accounting import (
    PARTS,
    Attention,
    Dims,
    encoder_output_bytes,
    largest_batch,
    state_bytes,
)


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


# The benchmark's variants, by how they keep their decoding state.
ATTENTION = {
    "stock-per-beam": Attention.STOCK_PER_BEAM,
    "stock-per-sentence": Attention.STOCK_PER_SENTENCE,
    "el": Attention.EL,
    "el-sa": Attention.EL_SELF_ATTENTION,
}


def held_encoder_output(
    variant: str, dims: Dims, batch: int, hyps: int, src_len: int
) -> Dict[str, int]:
    """:func:`~fairseq_el.accounting.encoder_output_bytes` of a benchmark variant."""
    return encoder_output_bytes(ATTENTION[variant], dims, batch, hyps, src_len)


def expected_bytes(
    variant: str, dims: Dims, batch: int, hyps: int, src_len: int, positions: int
) -> Dict[str, int]:
    """:func:`~fairseq_el.accounting.state_bytes` of a benchmark variant: the count by hand that
    the measurement (:class:`StateMeter`) is checked against."""
    return state_bytes(ATTENTION[variant], dims, batch, hyps, src_len, positions)
