"""Command-line options of the EL models, carried from ``args`` to the layers that use them.

fairseq's ``TransformerConfig.from_namespace`` keeps only its own fields, so the EL models read
these from ``args`` once (:func:`el_options`) and hand them to the decoder explicitly.
"""

import argparse
from dataclasses import dataclass
from typing import Any, Optional

from fairseq_el.attention.policy import DEFAULT_POLICY, POLICIES
from fairseq_el.errors import UserError

EL_SELF_ATTENTION_HELP = (
    "EL decoder self-attention: cache each layer's input (C numbers per position) instead of its "
    "projected keys and values (2C), and attend with expanded queries. Lossless; off by default "
    "because it does H times the attention FLOPs (see docs/benchmarks.md)"
)
POLICY_HELP = (
    "encoder-decoder attention per layer: el (no key/value cache), cached (project the encoder "
    "output once per sentence and cache it, as stock BART), or auto (the faster of the two by a "
    "cost model of the device, within --el-memory-budget; the default). All three give the same "
    "outputs; el keeps the smallest state (fairseq-el-generate --batch-size auto uses it)"
)
MEMORY_BUDGET_HELP = (
    "GB the cached projections of --el-policy auto may take (default: a tenth of the device's "
    "memory)"
)
ENCODER_BATCH_HELP = (
    "encode at most this many sentences at a time (same outputs): bounds the encoder's transient "
    "activations, the peak of long-source generation once EL has removed the caches"
)
KV_HEADS_HELP = (
    "grouped-query decoder attention with this many key/value heads (1: multi-query; the number "
    "of attention heads: stock). Changes the model: train or uptrain it"
)
COMPILE_MODES = ("none", "default", "reduce-overhead")
COMPILE_HELP = (
    "run the decoder's incremental step through torch.compile: none (eager), default (inductor), "
    "or reduce-overhead (inductor with CUDA graphs on CUDA). Same outputs (within 1e-4 in fp32); "
    "the first steps of a run pay the compile time; runs eagerly, saying so, where compiling is "
    "impossible (see docs/compile.md)"
)


# the EL model options as --model-overrides keys (args attributes), read by el_options below
OVERRIDE_KEYS = (
    "el_self_attention",
    "el_policy",
    "el_memory_budget",
    "el_encoder_batch",
    "decoder_kv_heads",
    "el_compile",
)


class ELOptionError(UserError, ValueError):
    """An EL model option with a value of the wrong type or range; the message names it."""


@dataclass(frozen=True)
class ELOptions:
    self_attention: bool = False  # --el-self-attention
    kv_heads: Optional[int] = None  # --decoder-kv-heads
    policy: str = DEFAULT_POLICY  # --el-policy
    memory_budget: Optional[float] = None  # --el-memory-budget, GB
    encoder_batch: Optional[int] = None  # --el-encoder-batch
    compile: str = "none"  # --el-compile

    def __post_init__(self) -> None:
        for option, value, least in (
            ("--el-encoder-batch", self.encoder_batch, 1),
            ("--decoder-kv-heads", self.kv_heads, 1),
            ("--el-memory-budget", self.memory_budget, 0),
        ):
            if value is not None and value < least:
                raise ELOptionError(f"{option} must be at least {least}, not {value}")
        if self.self_attention and self.kv_heads is not None:
            raise ELOptionError(
                "--el-self-attention and --decoder-kv-heads do not combine: a grouped cache "
                "(2 x kv_heads x head_dim per position) replaces the one EL would shrink"
            )
        if self.compile not in COMPILE_MODES:
            raise ELOptionError(
                f"--el-compile must be one of {', '.join(COMPILE_MODES)}, not {self.compile!r}"
            )


def add_el_args(parser: argparse.ArgumentParser) -> None:
    """Add the EL model options to a model's argument group."""
    parser.add_argument("--el-self-attention", action="store_true", help=EL_SELF_ATTENTION_HELP)
    parser.add_argument("--decoder-kv-heads", type=int, metavar="N", help=KV_HEADS_HELP)
    parser.add_argument("--el-policy", choices=POLICIES, default=DEFAULT_POLICY, help=POLICY_HELP)
    parser.add_argument("--el-memory-budget", type=float, metavar="GB", help=MEMORY_BUDGET_HELP)
    parser.add_argument("--el-encoder-batch", type=int, metavar="N", help=ENCODER_BATCH_HELP)
    parser.add_argument("--el-compile", choices=COMPILE_MODES, default="none", help=COMPILE_HELP)


def el_options(args: argparse.Namespace) -> ELOptions:
    """The EL options in ``args``; absent ones (e.g. a converted stock checkpoint) take defaults.

    Values may come from ``--model-overrides`` as any Python literal, so each is checked: a
    boolean is True/False/1/0 (or those words as strings), never any truthy value.
    """
    policy = _typed(args, "el_policy", str) or DEFAULT_POLICY
    if policy not in POLICIES:
        raise ELOptionError(f"--el-policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    return ELOptions(
        self_attention=bool(_typed(args, "el_self_attention", bool)),
        kv_heads=_typed(args, "decoder_kv_heads", int),
        policy=policy,
        memory_budget=_typed(args, "el_memory_budget", float),
        encoder_batch=_typed(args, "el_encoder_batch", int),
        compile=_typed(args, "el_compile", str) or "none",
    )


BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _typed(args: argparse.Namespace, name: str, kind: type) -> Any:
    """``args.name`` as ``kind`` (None if absent); an :class:`ELOptionError` naming it otherwise."""
    value = getattr(args, name, None)
    if value is None:
        return None
    option = "--" + name.replace("_", "-")
    if kind is bool:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in BOOLEANS:
            return BOOLEANS[value.strip().lower()]
        raise ELOptionError(f"{option} ({name}) takes true/false/1/0, not {value!r}")
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ELOptionError(f"{option} ({name}) takes a {kind.__name__}, not {value!r}")
