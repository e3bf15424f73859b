"""Build two models from checkpoint states and compare their decoders as a generator drives them.

Used by the checkpoint converter to prove that a converted checkpoint computes what the original
does. No data directory is needed: dictionaries are rebuilt at the sizes the embeddings have.
"""

import argparse
import copy
from typing import Any, Dict

import torch
from fairseq.data import Dictionary
from fairseq.models import build_model
from omegaconf import OmegaConf

from fairseq_el.convert.checkpoint import ConversionError
from fairseq_el.convert.fairseq_inputs import make_dictionary

TOLERANCE = 1e-4  # on decoder log-probabilities, fp32
HYPOTHESES = 2  # per sentence, as beam search lays them out


class _Dictionaries:
    """The part of a fairseq task that ``build_model`` reads."""

    def __init__(self, source: Dictionary, target: Dictionary) -> None:
        self.source_dictionary = source
        self.target_dictionary = target
        self.dictionary = target


def build_from_state(state: Dict[str, Any]) -> torch.nn.Module:
    """The model a checkpoint state describes, with the state's weights, in eval mode."""
    if state.get("args") is not None:
        cfg = copy.copy(state["args"])
    else:
        cfg = state["cfg"]["model"]
        cfg = copy.copy(cfg) if isinstance(cfg, argparse.Namespace) else OmegaConf.create(cfg)
    for path_arg in ("encoder_embed_path", "decoder_embed_path"):  # pretrained files: not needed
        if getattr(cfg, path_arg, None):
            setattr(cfg, path_arg, None)
    weights = state["model"]
    tgt_dict = make_dictionary(weights["decoder.embed_tokens.weight"].size(0) - 4)
    src_dict = tgt_dict
    if "encoder.embed_tokens.weight" in weights:
        src_size = weights["encoder.embed_tokens.weight"].size(0)
        if src_size != len(tgt_dict):
            src_dict = make_dictionary(src_size - 4)
    bad = [name for name, t in weights.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise ConversionError(f"corrupt checkpoint: non-finite weights in {', '.join(bad[:3])}")
    model = build_model(cfg, _Dictionaries(src_dict, tgt_dict))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ConversionError(
            f"the checkpoint's weights do not fit its architecture: {first}"
        ) from err
    return model.eval()


@torch.no_grad()
def decode_steps(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    """Log-probs of incremental decoding, ``HYPOTHESES`` per sentence, on a seeded random batch."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.decoder.embed_tokens.num_embeddings
    pad = model.decoder.embed_tokens.padding_idx
    prev = torch.randint(4, vocab, (2 * HYPOTHESES, 6), generator=gen)  # (B*hyps, T)
    encoder_out = None
    if getattr(model, "encoder", None) is not None:
        src = torch.randint(4, model.encoder.embed_tokens.num_embeddings, (2, 9), generator=gen)
        src[1, :4] = pad  # left padding: sources of different lengths
        lengths = src.ne(pad).sum(1)
        encoder_out = model.encoder(src, src_lengths=lengths)
        rows = torch.arange(2).repeat_interleave(HYPOTHESES)
        encoder_out = model.encoder.reorder_encoder_out(encoder_out, rows)
    state: Dict[str, Dict[str, Any]] = {}
    steps = []
    for t in range(prev.size(1)):
        logits, _ = model.decoder(
            prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state
        )
        steps.append(logits.float().log_softmax(-1))
    return torch.cat(steps, dim=1)  # (B*hyps, T, V)


def compare_decoders(state_a: Dict[str, Any], state_b: Dict[str, Any]) -> float:
    """Max abs difference of the two models' decoding log-probs; refuses above ``TOLERANCE``."""
    diff = decode_steps(build_from_state(state_a)) - decode_steps(build_from_state(state_b))
    max_diff = diff.abs().max().item()
    if not max_diff <= TOLERANCE:
        raise ConversionError(
            f"verification failed: decoder log-probs differ by {max_diff:.3g} (> {TOLERANCE})"
        )
    return max_diff
