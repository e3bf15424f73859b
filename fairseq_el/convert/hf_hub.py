"""``--hf-model DIR_OR_HUB_ID``: a Hugging Face model from the local cache, converted once.

A hub id (``facebook/bart-large-cnn``, optionally ``@revision``) is looked up in the local Hugging
Face cache only, never downloaded: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``, in the hub's layout::

    models--facebook--bart-large-cnn/
        refs/main                  # the commit hash of the snapshot "main" names
        snapshots/<hash>/          # config.json, model.safetensors | pytorch_model.bin, ...

The converted fairseq checkpoint goes to a cache of its own, keyed by that snapshot (or, for a
local folder, by its path and its files' sizes and times): ``$FAIRSEQ_EL_CACHE`` (default
``~/.cache/fairseq_el``)``/hf/<models--org--name>/<hash>/`` holding ``model.pt`` and the
dictionaries. It is written into a temporary folder and renamed into place, so a killed
conversion leaves nothing that looks converted, and a second run only reads it.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from fairseq_el.files import sha256, write_json
from fairseq_el.usage import UsageError

# the weight files save_pretrained writes (one of them, or a shard index)
WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
HASH_LENGTH = 40


@dataclass(frozen=True)
class HFModel:
    """Where a model's ``save_pretrained`` files are, and the key of its conversion."""

    folder: Path
    name: str  # as the user gave it, for messages
    key: str  # cache sub-path: models--org--name/<snapshot hash>, or local--<digest>


def hub_cache(env: Optional[Mapping[str, str]] = None) -> Path:
    """The Hugging Face hub cache, as ``huggingface_hub`` finds it."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):  # the older name
        return Path(env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def own_cache(env: Optional[Mapping[str, str]] = None) -> Path:
    """This package's cache of converted models."""
    env = os.environ if env is None else env
    root = env.get("FAIRSEQ_EL_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME", "~/.cache"), "fairseq_el"
    )
    return Path(root).expanduser() / "hf"


def check_folder(folder: Path, option: str) -> None:
    """A ``save_pretrained`` folder: a ``config.json`` that is a JSON object, a weights file."""
    config = folder / "config.json"
    if not config.is_file():
        raise UsageError(f"{option} {folder}: no config.json (not a save_pretrained folder)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"{option} {config}: not a JSON config ({err})") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{option} {config}: not a JSON object")
    require_weights(folder, option)


def require_weights(folder: Path, option: str) -> None:
    """A weights file in ``folder`` (``is_file``: a hub snapshot's link to a missing blob is
    not one)."""
    if not any((folder / name).is_file() for name in WEIGHTS):
        names = ", ".join(WEIGHTS[:2])
        raise UsageError(
            f"{option} {folder}: no weights file ({names}): the download is "
            "incomplete or the folder holds only a config"
        )


def _local_key(folder: Path) -> str:
    """A local folder's key: its path and every file's size and modification time."""
    parts = [str(folder.resolve())]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        parts.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    key = sha256(f"{part}\n".encode() for part in parts)
    return f"local--{key[:16]}"


def resolve(
    spec: str, option: str = "--hf-model", env: Optional[Mapping[str, str]] = None
) -> HFModel:
    """``spec``: a ``save_pretrained`` folder, or a hub id (``org/name[@revision]``) found in the
    local Hugging Face cache; a :class:`UsageError` in one line otherwise. Nothing is
    downloaded."""
    local = Path(spec).expanduser()
    if local.is_dir():
        check_folder(local, option)
        return HFModel(local, spec, _local_key(local))
    repo, _, revision = spec.partition("@")
    revision = revision or "main"
    if repo.count("/") > 1 or not repo or repo.startswith(("/", ".", "~")):
        raise UsageError(f"{option} {spec}: no such folder, and not a hub id (org/name)")
    cache = hub_cache(env)
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    where = f"the local Hugging Face cache ({cache}; set HF_HUB_CACHE or HF_HOME)"
    if not repo_dir.is_dir():
        raise UsageError(
            f"{option} {spec}: not in {where}; nothing is downloaded: fetch it "
            f"once (huggingface-cli download {repo}) or give a save_pretrained "
            "folder"
        )
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        snapshot = ref.read_text(encoding="utf-8").strip()
    elif (repo_dir / "snapshots" / revision).is_dir():
        snapshot = revision  # a commit hash given as the revision
    else:
        raise UsageError(
            f"{option} {spec}: revision {revision!r} is not in {repo_dir} "
            "(no refs/ entry or snapshot of that name)"
        )
    folder = repo_dir / "snapshots" / snapshot
    if not folder.is_dir():
        raise UsageError(
            f"{option} {spec}: {ref} names snapshot {snapshot}, which is not in "
            f"{repo_dir / 'snapshots'}"
        )
    check_folder(folder, option)
    return HFModel(folder, spec, f"{repo_dir.name}/{snapshot}")


def converted_dir(model: HFModel, env: Optional[Mapping[str, str]] = None) -> Path:
    """Where ``model``'s conversion is (or will be) kept."""
    return own_cache(env) / model.key


def ensure_converted(
    model: HFModel, dict_path: str, env: Optional[Mapping[str, str]] = None
) -> Dict[str, object]:
    """``model`` converted into :func:`converted_dir` unless it already is; what was done.

    The conversion is written into a temporary folder beside the destination and renamed into
    place: a killed conversion leaves no folder that looks converted; when two processes
    convert at once, the first rename wins and the other's copy is dropped.
    """
    from fairseq_el.convert.cli import convert_dir  # imports transformers: only when needed

    target = converted_dir(model, env)
    if (target / "model.pt").is_file():
        return {"converted": False, "dir": str(target)}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        converted = convert_dir(str(model.folder), dict_path)
        converted.save(str(tmp), data=str(target))
        write_json(tmp / "source.json", {"hf_model": model.name, "folder": str(model.folder)})
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.pt").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"converted": True, "dir": str(target), "summary": converted.summary}
