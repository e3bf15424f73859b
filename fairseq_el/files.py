"""Atomic writes (a result is either complete at its path or not there at all) and digests.

Everything the package writes (checkpoints, JSON, reports, generated text, prepared data) goes
through :func:`atomic_write`: a temporary file in the destination directory, flushed and fsynced,
then renamed over the destination. A failed or interrupted write leaves the destination as it was.
Every SHA-256 the package records (manifests, prepared data, resumable runs) is :func:`sha256`.
"""

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Union

from fairseq_el.errors import UserError

PathLike = Union[str, "os.PathLike[str]"]


class OutputError(UserError, OSError):
    """A result could not be written; the message names the path and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    binary = "b" in mode
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(err.errno, f"{path}: cannot write here ({err.strerror})") from err
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": encoding})
        ) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise OutputError(errno.ENOSPC, f"{path}: no space left on device") from err
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file (same path, a link to it, or a hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def sha256(blocks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the concatenated ``blocks``."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read 1 MiB at a time."""
    with open(path, "rb") as f:
        return sha256(iter(lambda: f.read(1 << 20), b""))
