"""Stock <-> EL fairseq checkpoints: the architecture name is rewritten, the weights are not.

EL models keep fairseq's parameter names, so converting is renaming ``arch`` (``bart_large`` ->
``el_bart_large``) wherever the checkpoint records it, then proving the two load the same state
dict and give the same decoder outputs (:func:`fairseq_el.verify.compare_decoders`).
"""

import argparse
import copy
import os
import pickle
from typing import Any, Dict, Optional, Tuple

import torch
from fairseq.models import ARCH_MODEL_NAME_REGISTRY

from fairseq_el.convert.common import ConversionError
from fairseq_el.models.architectures import EL_PREFIX

Checkpoint = Dict[str, Any]


def load_checkpoint(path: str) -> Checkpoint:
    """Load a fairseq checkpoint with torch's safe loader, or say why it is not one."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":  # zip (torch >= 1.6) or a legacy pickle
        raise ConversionError(f"{path}: not a torch checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line),
                      str(err).splitlines()[0])  # fmt: skip
        raise ConversionError(
            f"{path}: refused by torch's weights_only loader: it holds an object fairseq does "
            f"not write into checkpoints, so it is not loaded ({reason})"
        ) from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise ConversionError(f"{path}: not a torch checkpoint ({err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    if state.get("args") is None and not state.get("cfg"):
        raise ConversionError(f"{path}: not a fairseq checkpoint (neither 'args' nor 'cfg')")
    return state


def model_config(state: Checkpoint) -> Any:
    """The object holding ``arch``: ``args`` (legacy), or ``cfg['model']`` (fairseq >= 0.10)."""
    if state.get("args") is not None:
        return state["args"]
    model_cfg = state["cfg"]["model"]
    if model_cfg is None:
        raise ConversionError("not a fairseq checkpoint: cfg['model'] is empty")
    return model_cfg


def get_arch(state: Checkpoint) -> str:
    cfg = model_config(state)
    if isinstance(cfg, argparse.Namespace):
        arch = getattr(cfg, "arch", None)
    else:
        arch = cfg.get("arch", None) or cfg.get("_name", None)
    if not arch:
        raise ConversionError("the checkpoint records no model architecture ('arch')")
    return arch


def target_arch(arch: str, to: str) -> str:
    """The architecture a checkpoint of ``arch`` gets when converted ``to`` 'el' or 'stock'."""
    if to == "el":
        if arch.startswith(EL_PREFIX):
            raise ConversionError(f"architecture {arch!r} is already an EL architecture")
        if EL_PREFIX + arch not in ARCH_MODEL_NAME_REGISTRY:
            known = sorted(a for a in ARCH_MODEL_NAME_REGISTRY if a.startswith(EL_PREFIX))
            raise ConversionError(
                f"no EL variant of architecture {arch!r}; known EL architectures: {known}"
            )
        return EL_PREFIX + arch
    if to == "stock":
        if not arch.startswith(EL_PREFIX) or arch[len(EL_PREFIX) :] not in ARCH_MODEL_NAME_REGISTRY:
            raise ConversionError(f"architecture {arch!r} is not an EL architecture")
        return arch[len(EL_PREFIX) :]
    raise ValueError(f"to must be 'el' or 'stock', not {to!r}")


def with_config(state: Checkpoint, **fields: Any) -> Checkpoint:
    """A copy of ``state`` whose model configuration has ``fields`` set (``arch`` also sets
    ``_name`` where the checkpoint records one); tensors are shared, not copied."""
    new = dict(state)
    if state.get("args") is not None:
        new["args"] = copy.copy(state["args"])
    if state.get("cfg"):
        new["cfg"] = copy.deepcopy(state["cfg"])
    targets = [new["args"]] if new.get("args") is not None else []
    if new.get("cfg") and new["cfg"].get("model") is not None:
        targets.append(new["cfg"]["model"])
    for cfg in targets:
        for name, value in fields.items():
            names = [name, "_name"] if name == "arch" else [name]
            for key in names:
                if isinstance(cfg, argparse.Namespace):
                    if key != "_name" or hasattr(cfg, key):
                        setattr(cfg, key, value)
                elif key != "_name" or key in cfg:
                    cfg[key] = value
    return new


def with_arch(state: Checkpoint, arch: str) -> Checkpoint:
    """A copy of ``state`` naming ``arch``; weights shared."""
    return with_config(state, arch=arch)


def with_kv_heads(state: Checkpoint, kv_heads: int) -> Checkpoint:
    """Average each group's key/value heads (grouped-query attention: the model must be
    uptrained), and record ``decoder_kv_heads`` in the configuration."""
    from fairseq_el.gqa_convert import average_kv_heads

    cfg = model_config(state)
    heads = (
        getattr(cfg, "decoder_attention_heads", None)
        if isinstance(cfg, argparse.Namespace)
        else cfg.get("decoder_attention_heads")
    )
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
    arch = get_arch(state)
    new_arch = target_arch(arch, to)
    if kv_heads is not None and to != "el":
        raise ConversionError("--kv-heads makes a grouped-query EL checkpoint: use it with --to el")
    converted = with_arch(state, new_arch)
    max_diff = None
    if kv_heads is not None:
        converted = with_kv_heads(converted, kv_heads)
        if verify:
            from fairseq_el.verify import build_from_state

            build_from_state(converted)
    elif verify:
        from fairseq_el.verify import compare_decoders

        max_diff = compare_decoders(state, converted)
    torch.save(converted, dst)
    return arch, new_arch, max_diff
