"""Seeded random encoder-decoder models and fairseq checkpoints, for tests, demos and benchmarks.

The product never imports this package (``tests/tools/test_layering.py``): what a conversion needs
to build a model (:mod:`fairseq_el.convert.fairseq_inputs`) lives there and is re-exported here.
:mod:`.precision` is the low-precision oracle the tests and the GPU check share.

Nothing is downloaded: a model is built from fairseq's own argument parser (so every
architecture default applies), initialised from a seed, and saved in the format
``fairseq-train`` writes, so ``fairseq-generate`` loads it like any trained checkpoint.
"""

import argparse
from typing import List, Optional, Sequence, Tuple

import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import FairseqModel
from fairseq.tasks.language_modeling import LanguageModelingTask
from fairseq.tasks.translation import TranslationTask

from fairseq_el.convert.fairseq_inputs import lm_args, make_dictionary, translation_args
from fairseq_el.models.architectures import is_el_arch

__all__ = [
    "build_language_model",
    "build_translation_model",
    "generation_args",
    "lm_args",
    "make_dictionary",
    "tiny_args",
    "tiny_lm_args",
    "translation_args",
]


def pinned(arch: str, extra: Sequence[str]) -> List[str]:
    """``extra`` with ``--el-policy el`` for an EL encoder-decoder ``arch`` that names no policy:
    a test of EL attention runs EL in every layer, whatever the device (the default, ``auto``,
    chooses per layer by a measured cost; tests of it name it)."""
    if is_el_arch(arch) and "--el-policy" not in extra:
        return [*extra, "--el-policy", "el"]
    return list(extra)


def build_translation_model(
    arch: str,
    src_dict: Dictionary,
    tgt_dict: Optional[Dictionary] = None,
    extra: Sequence[str] = (),
    seed: int = 0,
) -> Tuple[FairseqModel, TranslationTask, argparse.Namespace]:
    """Build ``arch`` for translation from ``src_dict`` to ``tgt_dict`` with seeded weights."""
    tgt_dict = src_dict if tgt_dict is None else tgt_dict
    args = translation_args(arch, extra=pinned(arch, extra))
    task = TranslationTask(args, src_dict, tgt_dict)
    torch.manual_seed(seed)
    model = task.build_model(args)
    return model.eval(), task, args


def build_language_model(
    arch: str, dictionary: Dictionary, extra: Sequence[str] = (), seed: int = 0
) -> Tuple[FairseqModel, LanguageModelingTask, argparse.Namespace]:
    """Build the decoder-only ``arch`` over ``dictionary`` with seeded weights."""
    args = lm_args(arch, extra=extra)
    task = LanguageModelingTask(args, dictionary, dictionary)
    torch.manual_seed(seed)
    model = task.build_model(args)
    return model.eval(), task, args


def tiny_lm_args(layers: int = 2, dim: int = 16, heads: int = 4, ffn: int = 32) -> List[str]:
    """Command-line overrides that make any transformer_lm architecture tiny."""
    return [
        "--decoder-layers",
        str(layers),
        "--decoder-embed-dim",
        str(dim),
        "--decoder-ffn-embed-dim",
        str(ffn),
        "--decoder-attention-heads",
        str(heads),
        "--decoder-input-dim",
        str(dim),
        "--decoder-output-dim",
        str(dim),
        "--dropout",
        "0",
        "--attention-dropout",
        "0",
    ]


def tiny_args(layers: int = 2, dim: int = 16, heads: int = 4, ffn: int = 32) -> List[str]:
    """Command-line overrides that make any Transformer/BART architecture tiny."""
    return [
        "--encoder-layers",
        str(layers),
        "--decoder-layers",
        str(layers),
        "--encoder-embed-dim",
        str(dim),
        "--decoder-embed-dim",
        str(dim),
        "--encoder-ffn-embed-dim",
        str(ffn),
        "--decoder-ffn-embed-dim",
        str(ffn),
        "--encoder-attention-heads",
        str(heads),
        "--decoder-attention-heads",
        str(heads),
        "--dropout",
        "0",
        "--attention-dropout",
        "0",
    ]


def generation_args(argv: Sequence[str]) -> argparse.Namespace:
    """fairseq-generate's arguments for ``argv`` (search options), as its parser fills them."""
    parser = options.get_generation_parser(default_task="translation")
    return options.parse_args_and_arch(parser, ["<none>", *argv])
