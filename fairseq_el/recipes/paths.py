"""Where the repository's shipped assets are, so commands work without arguments in a checkout."""

from pathlib import Path

import fairseq_el

REPO_ROOT = Path(fairseq_el.__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CONFIG_DIR = REPO_ROOT / "configs"
BPE_DIR = DATA_DIR / "gpt2_bpe"
RUNS_DIR = REPO_ROOT / "runs"


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a FileNotFoundError that says what was expected there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path
