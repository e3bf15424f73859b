"""One user-error type: every error class of the package derives from ``errors.UserError``, and
``usage.entry_point`` reports any of them as ``prog: message``, exit 2 (nothing else)."""

import ast
import importlib
from pathlib import Path
from typing import List, Tuple

import pytest

import fairseq_el
from fairseq_el.convert.checkpoint import ConversionError
from fairseq_el.errors import UserError
from fairseq_el.files import OutputError
from fairseq_el.usage import EXIT_USAGE, entry_point

PACKAGE = Path(fairseq_el.__file__).resolve().parent


def error_classes() -> List[Tuple[str, str]]:
    """(module, class) of every class named ``*Error`` defined in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "data" in path.parents:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [
            (module, n.name)
            for n in tree.body
            if isinstance(n, ast.ClassDef) and n.name.endswith("Error")
        ]
    return found


def test_every_error_of_the_package_is_a_user_error():
    classes = error_classes()
    names = {name for _, name in classes}
    assert {
        "UsageError",
        "InputError",
        "OutputError",
        "ConversionError",
        "ArchitectureError",
        "ELOptionError",
        "PartsError",
    } <= names, names
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, UserError), f"{module}.{name} is not a UserError"


@pytest.mark.parametrize(
    "error",
    [ConversionError("model.pt: not a checkpoint"), OutputError(28, "out.txt: no space left")],
)
def test_entry_point_reports_any_user_error_in_one_line(error, capsys):
    @entry_point("fairseq-el-x")
    def main() -> None:
        raise error

    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == EXIT_USAGE
    assert capsys.readouterr().err == f"fairseq-el-x: {error}\n"


def test_entry_point_keeps_the_traceback_of_anything_else():
    @entry_point("fairseq-el-x")
    def main() -> None:
        raise ValueError("a bug of ours")

    with pytest.raises(ValueError, match="a bug of ours"):
        main()
