"""``--batch-size auto``: the largest batch that fits a memory budget, per source-length bucket.

A batch of ``B`` sentences of up to ``S`` source tokens, ``k`` hypotheses each, decoded for up to
``T`` positions, holds on top of the weights:

* the decoding state, by the project's exact count (:func:`fairseq_el.accounting.state_bytes`;
  EL keeps no encoder-decoder cache and one encoder output per sentence, stock BART a projected
  cache per sentence, a stock Transformer one per hypothesis);
* while encoding: the encoder's largest transient (attention scores and the FFN of one layer,
  as :func:`fairseq_el.bench.analytic.memory_bytes` counts it) and its output;
* while decoding: the search (the vocabulary-wide log-probabilities of a step, three float32
  copies, and the token/score buffers) on top of the state.

The peak is the larger of the two phases. The EL encoder encodes ``sentences_per_pass``
sentences at a time (``--el-encoder-batch``, same outputs); under ``--batch-size auto`` an EL
model without that option encodes as many per pass as fit :data:`ENCODER_SHARE` of the budget
left after the weights, so its batch is bounded by its decoding state, not by the encoder.

Sources are bucketed by length (multiples of :data:`BUCKET`), each bucket gets its own batch.
"""

import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from fairseq_el.accounting import GIB, Attention, Dims, largest_batch, state_bytes

logger = logging.getLogger(__name__)
BUCKET = 64  # source-length bucket width, tokens
FREE_SHARE = 0.9  # default budget: this share of the free device memory
MAX_BATCH = 1 << 16
ENCODER_SHARE = 0.25  # EL under auto: the encoder's transient may take this share


@dataclass(frozen=True)
class ModelMemory:
    """What one model's batch memory depends on."""

    variant: Attention  # how the model keeps its decoding state
    dims: Dims
    encoder_heads: int
    encoder_ffn: int
    vocab: int
    cached_projection: bool  # EL with --el-policy cached/auto may cache like stock BART
    sentences_per_pass: Optional[int] = None  # EL encoder: --el-encoder-batch

    @classmethod
    def of(cls, model: nn.Module) -> "ModelMemory":
        decoder, encoder = model.decoder, model.encoder
        layer, enc_layer = decoder.layers[0], encoder.layers[0]
        options = getattr(decoder, "el_options", None)
        variant = Attention.of(model)
        dtype_bytes = next(model.parameters()).element_size()
        dims = Dims(
            len(decoder.layers),
            decoder.embed_dim,
            enc_layer.embed_dim,
            layer.self_attn.num_heads,
            dtype_bytes,
        )
        return cls(
            variant,
            dims,
            enc_layer.self_attn.num_heads,
            enc_layer.fc1.out_features,
            decoder.output_projection.out_features,
            options is not None and options.policy != "el",
            options.encoder_batch if options is not None else None,
        )

    @property
    def el(self) -> bool:
        return self.variant.el

    def encoder_bytes(self, sentences: int, src_len: int) -> int:
        """The encoder's largest transient for ``sentences`` encoded together."""
        per = src_len * (2 * self.encoder_heads * src_len + self.encoder_ffn)
        return sentences * per * self.dims.dtype_bytes

    def batch_bytes(
        self, batch: int, src_len: int, hyps: int, positions: int, per_pass: Optional[int]
    ) -> Dict[str, int]:
        """Bytes beyond the weights, by part, for ``batch`` sentences (``per_pass``: sentences
        the encoder takes at a time, None for all)."""
        d = self.dims
        state = state_bytes(
            self.variant, d, batch, hyps, src_len, positions, self.cached_projection
        )["total"]
        encoded = src_len * batch * d.encoder_dim * d.dtype_bytes
        encoder = self.encoder_bytes(min(batch, per_pass or batch), src_len) + encoded
        rows = batch * hyps
        search = 3 * rows * self.vocab * 4 + 2 * rows * (positions + 2) * 12
        return {"encoding": encoder, "decoding": state + search, "state": state}


def weight_bytes(models: Sequence[nn.Module]) -> int:
    return sum(
        t.numel() * t.element_size() for m in models for t in (*m.parameters(), *m.buffers())
    )


def default_budget(device: torch.device, weights: int, local_world: int) -> int:
    """Weights + 90% of the device's free memory (on CPU, shared by the host's ranks)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return weights + int(FREE_SHARE * free)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    return weights + int(FREE_SHARE * available / max(local_world, 1))


@dataclass
class AutoBatch:
    """Chooses and remembers the batch of each bucket; halves it after an out-of-memory."""

    models: List[ModelMemory]
    weights: int
    budget: int
    hyps: int
    max_len_a: float
    max_len_b: int
    max_len: int

    def __post_init__(self) -> None:
        self.chosen: Dict[int, int] = {}

    def per_pass(self, model: ModelMemory, src_len: int) -> Optional[int]:
        """Sentences the encoder takes at a time: ``--el-encoder-batch``; for EL without it, as
        many as fit :data:`ENCODER_SHARE` of the free budget; stock: all."""
        if not model.el or model.sentences_per_pass:
            return model.sentences_per_pass
        share = ENCODER_SHARE * (self.budget - self.weights)
        return max(1, largest_batch(lambda n: model.encoder_bytes(n, src_len) <= share, MAX_BATCH))

    def positions(self, src_len: int) -> int:
        """Target positions the generator may fill (fairseq's ``max_len`` rule, plus eos)."""
        return min(int(self.max_len_a * src_len + self.max_len_b), self.max_len - 1) + 1

    def parts(self, batch: int, src_len: int) -> Dict[str, int]:
        """weights, the encoding and decoding phases, and the state (part of decoding)."""
        total = {"weights": self.weights, "encoding": 0, "decoding": 0, "state": 0}
        for model in self.models:
            found = model.batch_bytes(
                batch, src_len, self.hyps, self.positions(src_len), self.per_pass(model, src_len)
            )
            for name, value in found.items():
                total[name] += value
        return total

    def peak(self, batch: int, src_len: int) -> int:
        parts = self.parts(batch, src_len)
        return parts["weights"] + max(parts["encoding"], parts["decoding"])

    def fits(self, batch: int, src_len: int) -> bool:
        return self.peak(batch, src_len) <= self.budget

    @staticmethod
    def bucket(src_len: int) -> int:
        return BUCKET * max(1, math.ceil(src_len / BUCKET))

    def batch(self, bucket: int) -> int:
        """The batch for sources of up to ``bucket`` tokens (0: not even one fits)."""
        if bucket not in self.chosen:
            batch = largest_batch(lambda b: self.fits(b, bucket), MAX_BATCH)
            self.chosen[bucket] = batch
            logger.info(self.explain(bucket, batch))
        return self.chosen[bucket]

    def explain(self, bucket: int, batch: int) -> str:
        shown = max(batch, 1)
        p = self.parts(shown, bucket)
        variants = "/".join(sorted({m.variant.value for m in self.models}))
        passes = [self.per_pass(m, bucket) for m in self.models]
        return (
            f"--batch-size auto: sources up to {bucket} tokens, {self.hyps} hypotheses, up "
            f"to {self.positions(bucket)} positions: batch {batch} ({variants}; at batch "
            f"{shown}: weights {p['weights'] / GIB:.3f} + max(encoding "
            f"{p['encoding'] / GIB:.3f}, decoding {p['decoding'] / GIB:.3f} of which state "
            f"{p['state'] / GIB:.3f}) = "
            f"{self.peak(shown, bucket) / GIB:.3f} GiB of a {self.budget / GIB:.3f} GiB "
            f"budget; encoder sentences per pass {passes})"
        )
