"""Stock <-> EL fairseq checkpoints: the architecture name is rewritten, the weights are not.

EL models keep fairseq's parameter names, so converting is renaming ``arch`` (``bart_large`` ->
``el_bart_large``) wherever the checkpoint records it, then proving the two load the same state
dict and give the same decoder outputs (:func:`fairseq_el.convert.verify.compare_decoders`).
"""

import argparse
from typing import Any, Optional, Tuple

from fairseq_el.convert.checkpoint import (
    Checkpoint,
    ConversionError,
    checkpoint_arch,
    load_checkpoint,
    model_config,
    with_arch,
    with_config,
)
from fairseq_el.files import save_torch
from fairseq_el.models.architectures import ArchitectureError, el_arch, is_el_arch, stock_arch


def target_arch(arch: str, to: str) -> str:
    """The architecture a checkpoint of ``arch`` gets when converted ``to`` 'el' or 'stock'."""
    if to == "el":
        if is_el_arch(arch):
            raise ConversionError(f"architecture {arch!r} is already an EL architecture")
        try:
            return el_arch(arch)
        except ArchitectureError as err:
            raise ConversionError(str(err)) from err
    if to == "stock":
        if not is_el_arch(arch):
            raise ConversionError(f"architecture {arch!r} is not an EL architecture")
        return stock_arch(arch)
    raise ValueError(f"to must be 'el' or 'stock', not {to!r}")


def _config_value(state: Checkpoint, name: str) -> Any:
    cfg = model_config(state)
    return getattr(cfg, name, None) if isinstance(cfg, argparse.Namespace) else cfg.get(name)


# model options that EL cannot compute exactly: option -> why
UNSUPPORTED = {
    "cross_self_attention": "its self-attention attends to the encoder output concatenated to "
    "every hypothesis's states, while EL keeps the encoder output once per sentence",
}


def unsupported_option(state: Checkpoint) -> Optional[str]:
    """Why a checkpoint's model has no EL variant (an option EL has no exact form of, named),
    or None; asked before anything is built."""
    for name, why in UNSUPPORTED.items():
        if _config_value(state, name):
            return f"a --{name.replace('_', '-')} model has no EL variant: {why}"
    return None


def with_kv_heads(state: Checkpoint, kv_heads: int) -> Checkpoint:
    """Average each group's key/value heads (grouped-query attention: the model must be
    uptrained), and record ``decoder_kv_heads`` in the configuration."""
    from fairseq_el.convert.kv_heads import average_kv_heads

    heads = _config_value(state, "decoder_attention_heads")
    if not heads:
        raise ConversionError("the checkpoint records no decoder_attention_heads")
    try:
        weights = average_kv_heads(state["model"], heads, kv_heads)
    except ValueError as err:
        raise ConversionError(str(err)) from err
    return with_config(dict(state, model=weights), decoder_kv_heads=kv_heads)


def convert_checkpoint(
    src: str, dst: str, to: str = "el", verify: bool = True, kv_heads: Optional[int] = None
) -> Tuple[str, str, Optional[float]]:
    """Convert ``src`` into ``dst``; returns (old arch, new arch, max decoder diff if verified).

    With ``kv_heads`` the EL checkpoint gets grouped-query decoder attention by head averaging:
    it computes something else, so it is verified by building and loading, not by comparison.
    """
    state = load_checkpoint(src)
    arch = checkpoint_arch(state)
    new_arch = target_arch(arch, to)
    if kv_heads is not None and to != "el":
        raise ConversionError("--kv-heads makes a grouped-query EL checkpoint: use it with --to el")
    grouped = _config_value(state, "decoder_kv_heads")
    if to == "stock" and grouped is not None:
        raise ConversionError(
            f"{src}: a grouped-query model (decoder_kv_heads={grouped}) has no stock fairseq "
            "architecture: stock attention has as many key/value heads as query heads; keep it "
            f"as {arch}"
        )
    converted = with_arch(state, new_arch)
    max_diff = None
    if kv_heads is not None:
        converted = with_kv_heads(converted, kv_heads)
        if verify:
            from fairseq_el.convert.verify import build_from_state

            build_from_state(converted)
    elif verify:
        from fairseq_el.convert.verify import compare_decoders

        max_diff = compare_decoders(state, converted)
    save_torch(converted, dst)
    return arch, new_arch, max_diff
