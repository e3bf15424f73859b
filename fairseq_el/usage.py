"""User errors of the console scripts: one line naming the option or file, exit code 2.

Every entry point validates its arguments before it does any work and raises :class:`UsageError`
(or another :class:`~fairseq_el.errors.UserError`: a bad checkpoint, an unreadable input, a full
disk) with a message that names the option or the file, and line where there is one.
:func:`entry_point` turns those into ``prog: message`` on stderr and exit code 2. Anything else is
a bug of ours and keeps its traceback.
"""

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TypeVar

from fairseq_el.errors import UserError
from fairseq_el.version import __version__

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Optional[int]])


class UsageError(UserError, ValueError):
    """A user error: the message names the option or file (and line) to fix."""


class InputError(UsageError):
    """An input file whose content cannot be used; the message names the file and line."""


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file's content; :class:`InputError` naming the file (and line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not UTF-8 text ({err.reason})") from None


def json_object(line: str, where: str) -> Dict[str, Any]:
    """One JSON-lines record; :class:`InputError` ``where: not JSON`` / ``not a JSON object``
    (``where`` names the file and line)."""
    try:
        record = json.loads(line)
    except ValueError as err:
        raise InputError(f"{where}: not JSON ({err})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: not a JSON object")
    return record


def entry_point(prog: str) -> Callable[[F], F]:
    """Decorate a console script's main: user errors become one line and exit code 2."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except UserError as err:
                message = "; ".join(x.strip() for x in str(err).splitlines() if x.strip())
                print(f"{prog}: {message}", file=sys.stderr)
                raise SystemExit(EXIT_USAGE) from None
            except KeyboardInterrupt:
                print(f"{prog}: interrupted; the run is marked incomplete", file=sys.stderr)
                raise SystemExit(130) from None

        return run  # type: ignore[return-value]

    return wrap


class Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line (``prog: message``), exit code 2; every console
    script built on it answers ``--version`` (``prog VERSION``, from :mod:`fairseq_el.version`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def input_file(option: str, path: Optional[Path]) -> Optional[Path]:
    """``path`` if it is a readable file; a :class:`UsageError` naming ``option`` otherwise."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} {path}: no such file")
    if not path.is_file():
        raise UsageError(f"{option} {path}: not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path}: not readable")
    return path


def input_dir(option: str, path: Optional[Path]) -> Optional[Path]:
    """``path`` if it is a readable directory; a :class:`UsageError` naming ``option`` otherwise."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{option} {path}: no such directory")
    return path


def output_path(option: str, path: Path) -> Path:
    """``path`` if a file can be created there (its directory exists and is writable)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {parent} is not writable")
    return path


def output_dir(option: str, path: Path) -> Path:
    """``path`` if it is, or can be created as, a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{option} {path}: {existing} is not writable")
    return path


def at_least(option: str, value: Optional[float], least: float) -> None:
    """A :class:`UsageError` unless ``value`` (when given) is at least ``least``."""
    if value is not None and value < least:
        raise UsageError(f"{option} must be at least {least:g}, not {value:g}")
