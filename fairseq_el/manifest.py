"""Run directories that know what they hold: ``manifest.json``, written as the run goes.

A run directory belongs to one run: its kind (``run-task``, ``compare``, ``prepare``, ``demo``),
its configuration and its inputs (sizes and SHA-256 of every file). The manifest records them, the
versions, the steps completed so far and whether the run is ``complete``; it is rewritten
atomically after each step and last of all, so an interrupted run is visibly ``incomplete``.

Opening a used directory resumes the missing steps when configuration and inputs are the same,
and refuses to mix otherwise, unless ``overwrite`` (then the old run is removed first). A
non-empty directory without a manifest is never written into.
"""

import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from fairseq_el.files import file_sha256, write_json
from fairseq_el.usage import UsageError

MANIFEST = "manifest.json"
COMPLETE, INCOMPLETE = "complete", "incomplete"


def file_digest(path: Path) -> Dict[str, Any]:
    """Size and SHA-256 of a file."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def digests(path: Path) -> Dict[str, Any]:
    """Digests of a file, or of every file under a directory (its own manifest excluded)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise UsageError(f"{path}: no such file or directory")
    return {
        str(p.relative_to(path)): file_digest(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }


def versions() -> Dict[str, str]:
    import fairseq
    import torch

    import fairseq_el

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": fairseq.__version__,
        "fairseq_el": fairseq_el.__version__,
    }


def identity(kind: str, config: Mapping[str, Any], inputs: Mapping[str, Path]) -> Dict[str, Any]:
    """What a run is: its kind, configuration and the digests of its inputs."""
    return {
        "kind": kind,
        "config": json.loads(json.dumps(config, default=str)),
        "inputs": {name: digests(p) for name, p in inputs.items()},
    }


def claim(path: Path, ident: Dict[str, Any], overwrite: bool, option: str) -> Optional[Dict]:
    """Make ``path`` this run's: returns the old manifest when it is a run of the same identity
    (to resume); else refuses to mix (or, with ``overwrite``, removes the old run) and returns
    None. A non-empty directory without a manifest is refused either way."""
    path = Path(path)
    manifest = path / MANIFEST
    old = None
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise UsageError(f"{manifest}: unreadable manifest ({err})") from err
    if old is not None and old.get("identity") == ident:
        return old
    if old is None and not (path.is_dir() and any(path.iterdir())):
        return None
    if old is None:
        raise UsageError(
            f"{option} {path}: not empty and not a fairseq-el run directory (no {MANIFEST}); "
            "refusing to mix results: use a new or empty directory"
        )
    if not overwrite:
        before = old.get("identity", {})
        differs = [key for key in ("kind", "config", "inputs") if before.get(key) != ident[key]]
        raise UsageError(
            f"{option} {path}: holds a {before.get('kind')} run ({old.get('status')}) of another "
            f"{' and '.join(differs)}; refusing to mix results: pass --overwrite to replace it, "
            "or use another directory"
        )
    shutil.rmtree(path)
    return None


def write_manifest(
    path: Path,
    ident: Dict[str, Any],
    status: str,
    completed: Mapping[str, Any],
    outputs: Optional[List[str]] = None,
) -> None:
    """The manifest of the run in ``path`` (atomically); ``outputs`` are digested."""
    write_json(
        Path(path) / MANIFEST,
        {
            "identity": ident,
            "status": status,
            "completed": dict(completed),
            "outputs": {name: digests(Path(path) / name) for name in outputs or []},
            "versions": versions(),
            "command": sys.argv,
        },
    )


def check_complete(option: str, path: Path) -> None:
    """A :class:`UsageError` if ``path`` holds a run whose manifest says it is not complete."""
    manifest = Path(path) / MANIFEST
    if manifest.is_file():
        status = json.loads(manifest.read_text(encoding="utf-8")).get("status")
        if status != COMPLETE:
            raise UsageError(
                f"{option} {path}: its {MANIFEST} says the run that wrote it is {status} "
                "(interrupted or failed): rerun it first"
            )


class RunDir:
    """One run's directory: resumable steps and a manifest written after each of them."""

    def __init__(
        self,
        path: Path,
        kind: str,
        config: Mapping[str, Any],
        inputs: Mapping[str, Path],
        overwrite: bool = False,
        option: str = "--out",
    ) -> None:
        self.path = Path(path)
        self.identity = identity(kind, config, inputs)
        old = claim(self.path, self.identity, overwrite, option)
        self.completed: Dict[str, Any] = dict(old.get("completed", {})) if old else {}
        if old is not None:
            done = ", ".join(self.completed) or "nothing"
            print(f"{self.path}: same run, resuming ({old.get('status')}; done: {done})")
        self.path.mkdir(parents=True, exist_ok=True)
        write_manifest(self.path, self.identity, INCOMPLETE, self.completed)

    def is_done(self, step: str) -> bool:
        return step in self.completed

    def record(self, step: str) -> Any:
        """What :meth:`done` recorded for ``step``."""
        return self.completed[step]

    def done(self, step: str, record: Any = True) -> None:
        """Mark ``step`` complete (with a JSON-able ``record``); the manifest is rewritten."""
        self.completed[step] = json.loads(json.dumps(record, default=str))
        write_manifest(self.path, self.identity, INCOMPLETE, self.completed)

    def finish(self, outputs: Optional[List[str]] = None) -> None:
        """The run is complete: the manifest, with the outputs' digests, is written last."""
        write_manifest(self.path, self.identity, COMPLETE, self.completed, outputs)
