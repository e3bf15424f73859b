"""Reading fairseq checkpoints safely, and copies with another model configuration.

Both layouts fairseq writes are understood: ``args`` (an ``argparse.Namespace``, legacy and
fairseq-train < 0.10) and ``cfg['model']`` (fairseq >= 0.10), as are both torch file formats (zip,
torch >= 1.6, and the legacy pickle).
"""

import argparse
import copy
import os
import pickle
from typing import Any, Dict

import torch
from fairseq.models import FairseqModel

from fairseq_el.errors import UserError
from fairseq_el.files import save_torch

Checkpoint = Dict[str, Any]
ZIP_MAGIC = b"PK"  # torch >= 1.6 saves a zip archive; older torch a bare pickle (0x80 ...)


class ConversionError(UserError, ValueError):
    """The input cannot be converted without changing what the model computes."""


def load_checkpoint(path: str, mmap: bool = False) -> Checkpoint:
    """Load a fairseq checkpoint with torch's safe loader, or say why it is not one.

    ``mmap`` maps the tensors instead of reading them (cheap for reading the configuration of a
    large model); torch can map only the zip format, so a legacy file is read as usual.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != ZIP_MAGIC and magic[:1] != b"\x80":  # zip (torch >= 1.6) or a legacy pickle
        raise ConversionError(f"{path}: not a torch checkpoint file")
    try:
        state = torch.load(
            path, map_location="cpu", weights_only=True, mmap=mmap and magic == ZIP_MAGIC
        )
    except pickle.UnpicklingError as err:
        reason = next(
            (line.strip() for line in str(err).splitlines() if "GLOBAL" in line),
            str(err).splitlines()[0],
        )
        raise ConversionError(
            f"{path}: refused by torch's weights_only loader: it holds an object fairseq does "
            f"not write into checkpoints, so it is not loaded ({reason})"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(
            f"{path}: unreadable checkpoint, truncated or corrupt ({first})"
        ) from err
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


def checkpoint_arch(state: Checkpoint) -> str:
    """The architecture the checkpoint records (``arch``, else ``_name``)."""
    cfg = model_config(state)
    if isinstance(cfg, argparse.Namespace):
        arch = getattr(cfg, "arch", None)
    else:
        arch = cfg.get("arch", None) or cfg.get("_name", None)
    if not arch:
        raise ConversionError("the checkpoint records no model architecture ('arch')")
    return arch


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


def save_checkpoint(model: FairseqModel, args: argparse.Namespace, path: str) -> None:
    """Write ``model`` as a fairseq checkpoint (``args`` + ``model``, as fairseq-train does)."""
    state = {
        "args": args,
        "cfg": None,
        "model": model.state_dict(),
        "optimizer_history": [
            {
                "criterion_name": "CrossEntropyCriterion",
                "optimizer_name": "Adam",
                "lr_scheduler_state": {},
                "num_updates": 0,
            }
        ],
        "extra_state": {},
    }
    save_torch(state, path)
