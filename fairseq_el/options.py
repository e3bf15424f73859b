"""Command-line options of the EL models, carried from ``args`` to the layers that use them.

fairseq's ``TransformerConfig.from_namespace`` keeps only its own fields, so the EL models read
these from ``args`` once (:func:`el_options`) and hand them to the decoder explicitly.
"""

import argparse
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ELOptions:
    self_attention: bool = False  # --el-self-attention: cache layer inputs, not keys and values
    kv_heads: Optional[int] = None  # --decoder-kv-heads: grouped/multi-query decoder attention


def add_el_args(parser: argparse.ArgumentParser) -> None:
    """Add the EL model options to a model's argument group."""
    parser.add_argument(
        "--el-self-attention",
        action="store_true",
        help="EL decoder self-attention: cache each layer's input (C numbers per position) "
        "instead of its projected keys and values (2C), attend with expanded queries",
    )


def el_options(args: argparse.Namespace) -> ELOptions:
    """The EL options in ``args``; absent ones (e.g. a converted stock checkpoint) take defaults."""
    return ELOptions(
        self_attention=bool(getattr(args, "el_self_attention", False)),
        kv_heads=getattr(args, "decoder_kv_heads", None),
    )
