"""The decoding state by hand: what the generator holds between steps, and the largest batch.

Decoding state is every tensor in the incremental state (self-attention and encoder-decoder
caches of every decoder layer) plus the encoder output the generator keeps and reorders. What it
weighs depends on the sizes (:class:`Dims`) and on how the model keeps its attention
(:class:`Attention`); :func:`state_bytes` counts it from fairseq 0.12's code and this package's
cache (``bench/state.py`` measures the same count on real runs, and the tests hold the two equal).
``fairseq-el-generate --batch-size auto`` sizes its batches with it; the benchmark names its
variants by these layouts.
"""

import enum
from dataclasses import dataclass
from typing import Callable, Dict

from fairseq.models.bart import BARTModel
from torch import nn

from fairseq_el.attention.cache import capacity

# The parts of the decoding state counted separately.
GIB = 1 << 30  # bytes in a GiB: memory options are given in GiB
PARTS = ("encoder_out", "encdec_cache", "self_cache", "other")


class Attention(enum.Enum):
    """How a model keeps its decoding state; the value is the name logs and the benchmark use."""

    # fairseq's Transformer: encoder output and encoder-decoder cache once per hypothesis
    STOCK_PER_BEAM = "stock-per-beam"
    # fairseq's BART (``set_beam_size``): encoder output and encoder-decoder cache per sentence
    STOCK_PER_SENTENCE = "stock-per-sentence"
    # EL: no encoder-decoder cache, encoder output per sentence, self-attention keys and values
    # in a DecodingCache
    EL = "el"
    # EL with --el-self-attention: the DecodingCache holds layer inputs (C per position, not 2C)
    EL_SELF_ATTENTION = "el-sa"

    @property
    def el(self) -> bool:
        return self in (Attention.EL, Attention.EL_SELF_ATTENTION)

    @classmethod
    def of(cls, model: nn.Module) -> "Attention":
        """The layout of an encoder-decoder model built by fairseq or by this package."""
        options = getattr(model.decoder, "el_options", None)
        if options is None:
            return cls.STOCK_PER_SENTENCE if isinstance(model, BARTModel) else cls.STOCK_PER_BEAM
        return cls.EL_SELF_ATTENTION if options.self_attention else cls.EL


@dataclass(frozen=True)
class Dims:
    """What the state depends on: decoder layers, widths, heads and dtype size."""

    layers: int
    embed_dim: int
    encoder_dim: int
    heads: int
    dtype_bytes: int = 4


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


def encoder_output_bytes(
    attention: Attention, dims: Dims, batch: int, hyps: int, src_len: int
) -> Dict[str, int]:
    """Bytes of each tensor of the encoder output the generator holds.

    ``encoder_out`` (S, rows, Ce) and ``encoder_embedding`` (rows, S, Ce), the bool padding mask
    (rows, S) and int32 ``src_lengths`` (rows, 1); rows are hypotheses when the generator
    expands the output (stock per-beam), sentences otherwise (stock BART, EL), where EL adds its
    int64 row->sentence map (N,). fairseq's decoder never reads ``encoder_embedding``, and the EL
    encoder drops it at the generator's first reorder.
    """
    rows = batch * hyps if attention is Attention.STOCK_PER_BEAM else batch
    tensor = src_len * rows * dims.encoder_dim * dims.dtype_bytes
    row_sentence = 8 * batch * hyps if attention.el else 0
    embedding = 0 if attention.el else tensor
    return {
        "encoder_out": tensor,
        "encoder_embedding": embedding,
        "padding_mask": rows * src_len,
        "src_lengths": 4 * rows,
        "row_sentence": row_sentence,
    }


def cross_cache_bytes(dims: Dims, rows: int, src_len: int) -> int:
    """An encoder-decoder cache of projected keys and values, (rows, H, S, D) each per layer, plus
    the padding mask, which ``MultiheadAttention`` stores per layer as float32 (``.float()``)."""
    return dims.layers * rows * src_len * (2 * dims.embed_dim * dims.dtype_bytes + 4)


def state_bytes(
    attention: Attention,
    dims: Dims,
    batch: int,
    hyps: int,
    src_len: int,
    positions: int,
    cached_projection: bool = False,
) -> Dict[str, int]:
    """The decoding state held after ``positions`` decoded positions, by part and ``total``.

    Encoder output: :func:`encoder_output_bytes`. Encoder-decoder cache: stock only
    (:func:`cross_cache_bytes`, rows per hypothesis or per sentence), and EL with
    ``cached_projection`` (``--el-policy cached/auto`` may cache a projection once per sentence,
    as stock BART). Self-attention cache: keys and values (N, H, T, D) per layer; EL
    self-attention: its layer inputs (N, T, C) per layer. EL models keep either in a
    :class:`~fairseq_el.attention.cache.DecodingCache`: room for
    :func:`~fairseq_el.attention.cache.capacity` positions, plus its ancestry under beam search.
    """
    b, L = dims.dtype_bytes, dims.layers
    n = batch * hyps
    parts = dict.fromkeys(PARTS, 0)
    parts["encoder_out"] = sum(encoder_output_bytes(attention, dims, batch, hyps, src_len).values())
    if not attention.el:
        rows = n if attention is Attention.STOCK_PER_BEAM else batch
        parts["encdec_cache"] = cross_cache_bytes(dims, rows, src_len)
    elif cached_projection:
        parts["encdec_cache"] = cross_cache_bytes(dims, batch, src_len)
    inputs_only = attention is Attention.EL_SELF_ATTENTION  # C per position, not keys and values
    per_position = dims.embed_dim if inputs_only else 2 * dims.embed_dim
    if not attention.el:
        parts["self_cache"] = L * n * positions * per_position * b
    else:
        # the in-place cache holds capacity(positions) positions, and, once beams reorder
        # (hyps > 1), an int64 ancestry per hypothesis and position
        ancestry = 8 if hyps > 1 else 0
        parts["self_cache"] = L * n * capacity(positions) * (per_position * b + ancestry)
    parts["total"] = sum(parts[p] for p in PARTS)
    return parts
