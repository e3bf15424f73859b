"""What the Hugging Face converters share: loading, refusing, key-map copying, writing.

A converter is a declarative key map (fairseq key template -> Hugging Face key template, ``{}``
standing for the layer index) plus a few named tensor transforms. :func:`map_state` checks
the map against both models before copying anything, so a key left over on either side, or a
shape that differs, stops the conversion instead of leaving a silently random weight.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from fairseq.data import Dictionary
from fairseq.models import FairseqModel

from fairseq_el.convert.checkpoint import ConversionError, save_checkpoint

Transform = Callable[[torch.Tensor], torch.Tensor]
KeyMap = Dict[str, Tuple[str, Transform]]

# Hugging Face activation -> fairseq activation that computes the same function.
# gelu_new / gelu_pytorch_tanh are the tanh approximation, fairseq's gelu_accurate;
# HF gelu and fairseq gelu are both the exact erf form.
ACTIVATIONS = {
    "gelu_new": "gelu_accurate",
    "gelu_pytorch_tanh": "gelu_accurate",
    "gelu": "gelu",
    "relu": "relu",
}

# fairseq-internal buffers that have no Hugging Face counterpart and carry no weights.
FAIRSEQ_ONLY = ("encoder.version", "decoder.version")


def refuse(field: str, value: Any, why: str) -> ConversionError:
    """An error naming the Hugging Face config field (or weight) that stops the conversion."""
    return ConversionError(f"cannot convert: {field}={value!r}: {why}")


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


def import_transformers() -> Any:
    """Import ``transformers`` (the ``hf`` extra), or explain how to install it.

    fairseq-fixed pulls in a torchaudio that may be built for another torch, and transformers
    imports torchaudio whenever it is installed; a torchaudio that cannot load is hidden from
    transformers (we never need audio) instead of making every model import fail.
    """
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        pass
    except OSError:  # installed but its compiled extension does not match this torch
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None  # type: ignore[assignment]
    try:
        import transformers
    except ImportError as err:
        raise ConversionError(
            "Hugging Face conversion needs transformers: pip install 'fairseq-el[hf]'"
        ) from err
    return transformers


def hf_model_type(hf_dir: str) -> str:
    """``model_type`` from ``hf_dir/config.json``; refuses folders not from ``save_pretrained``."""
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isdir(hf_dir):
        raise ConversionError(f"{hf_dir!r} is not a directory")
    if not os.path.isfile(config_path):
        raise ConversionError(
            f"{hf_dir!r} is not a Hugging Face model folder: it has no config.json "
            "(expected a folder written by save_pretrained, e.g. a local copy of 'gpt2')"
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, ValueError) as err:
        raise ConversionError(f"{config_path}: not a JSON config ({err})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{config_path}: not a JSON object")
    model_type = config.get("model_type")
    if model_type is None:
        raise ConversionError(f"{config_path} has no model_type: not a Hugging Face model config")
    return model_type


def check_config(config: Any, required: Mapping[str, Any], why: Mapping[str, str]) -> None:
    """Refuse when ``config.<field>`` differs from ``required[field]``; absent fields pass."""
    for field, wanted in required.items():
        value = getattr(config, field, wanted)
        if value != wanted:
            raise refuse(field, value, why[field])


def activation(config: Any) -> str:
    """The fairseq ``--activation-fn`` computing ``config.activation_function``."""
    name = config.activation_function
    if name not in ACTIVATIONS:
        raise refuse(
            "activation_function",
            name,
            f"fairseq has no exact match (supported: {sorted(ACTIVATIONS)})",
        )
    return ACTIVATIONS[name]


def expand(
    layer_map: Mapping[str, Tuple[str, Transform]], layers: int, prefix_map: KeyMap
) -> KeyMap:
    """``prefix_map`` plus ``layer_map`` with ``{}`` replaced by each layer index."""
    out = dict(prefix_map)
    for i in range(layers):
        for fs_key, (hf_key, fn) in layer_map.items():
            out[fs_key.format(i)] = (hf_key.format(i), fn)
    return out


def map_state(
    model: FairseqModel,
    hf_state: Mapping[str, torch.Tensor],
    key_map: KeyMap,
    hf_checked: Iterable[str] = (),
) -> List[str]:
    """Load ``hf_state`` into ``model`` through ``key_map``; returns the converted fairseq keys.

    ``hf_checked`` are Hugging Face keys the caller has verified separately (tied copies, a
    zero bias); every other key on both sides must be in the map, with equal shapes.
    """
    target = model.state_dict()
    fs_keys = set(target) - set(FAIRSEQ_ONLY)
    unmapped_fs = sorted(fs_keys - set(key_map))
    unknown_fs = sorted(set(key_map) - fs_keys)
    used_hf = {hf_key for hf_key, _ in key_map.values()} | set(hf_checked)
    unmapped_hf = sorted(set(hf_state) - used_hf)
    missing_hf = sorted(used_hf - set(hf_state))
    for what, keys in [
        ("fairseq keys with no Hugging Face source", unmapped_fs),
        ("mapped keys fairseq does not have", unknown_fs),
        ("Hugging Face keys nothing converts", unmapped_hf),
        ("Hugging Face keys missing from the checkpoint", missing_hf),
    ]:
        if keys:
            raise ConversionError(f"{what}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
    state = {key: target[key] for key in FAIRSEQ_ONLY if key in target}
    for fs_key in sorted(key_map):
        hf_key, fn = key_map[fs_key]
        tensor = fn(hf_state[hf_key].detach().float())
        if tensor.shape != target[fs_key].shape:
            raise ConversionError(
                f"shape mismatch: {fs_key} {tuple(target[fs_key].shape)} "
                f"<- {hf_key} {tuple(hf_state[hf_key].shape)} gives {tuple(tensor.shape)}"
            )
        state[fs_key] = tensor
    model.load_state_dict(state, strict=True)
    return sorted(key_map)


def check_tied(hf_state: Mapping[str, torch.Tensor], source: str, copies: Iterable[str]) -> None:
    """Refuse when a weight fairseq shares (``share_*_embed``) differs in the HF checkpoint."""
    for key in copies:
        if not torch.equal(hf_state[key], hf_state[source]):
            raise refuse(key, "differs from " + source, "fairseq ties these embeddings")


def read_dict(path: str) -> Dictionary:
    """A fairseq ``dict.txt``; fairseq itself rejects duplicate symbols."""
    try:
        return Dictionary.load(path)
    except (OSError, RuntimeError, ValueError) as err:
        raise ConversionError(f"cannot read fairseq dictionary {path!r}: {err}") from err


@dataclasses.dataclass
class Converted:
    """A converted fairseq model with what is needed to save and describe it."""

    model: FairseqModel
    args: argparse.Namespace
    dictionary: Dictionary
    dict_names: Tuple[str, ...]
    summary: List[str]
    task: Optional[Any] = None

    def save(self, out_dir: str, data: Optional[str] = None) -> List[str]:
        """Write ``model.pt`` and the dictionaries; ``args.data`` points at ``out_dir`` (or at
        ``data``, where ``out_dir`` is renamed to afterwards)."""
        os.makedirs(out_dir, exist_ok=True)
        self.args.data = data or os.path.abspath(out_dir)
        written = []
        for name in self.dict_names:
            path = os.path.join(out_dir, name)
            self.dictionary.save(path)
            written.append(path)
        path = os.path.join(out_dir, "model.pt")
        save_checkpoint(self.model, self.args, path)
        return [path] + written
