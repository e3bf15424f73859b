"""The recipes' own paths: task configs, the output root, ``--data-root``; the shipped data is
:mod:`fairseq_el.paths`."""

from pathlib import Path
from typing import Optional

from fairseq_el.paths import DATA_DIR

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RUNS_DIR = Path("runs")  # default output root, relative to the working directory

DATA_ROOT_HELP = "folder of the shipped samples (default: the package's own data)"


def data_root(option: Optional[Path]) -> Path:
    """``--data-root`` if given, else the package data; a UsageError if it is missing."""
    from fairseq_el.usage import UsageError

    root = Path(option) if option is not None else DATA_DIR
    if not (root / "squad_qg_du2017").is_dir():
        where = f"--data-root {root}" if option is not None else f"package data at {root}"
        raise UsageError(
            f"no shipped samples in {where}; pass --data-root DIR (a checkout's fairseq_el/data)"
        )
    return root


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a FileNotFoundError that says what was expected there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path
