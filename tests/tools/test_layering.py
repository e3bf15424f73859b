"""The product below the lab: no product module imports ``bench``, ``recipes`` or ``testing``.

The product is the plugin (``attention/``, ``models/``, ``tasks/``, ``compat/``), the user tools
(``convert/``, ``generate/``) and the shared modules at the package root (errors, files,
manifests, paths, metrics, accounting, ...). The lab (``bench/``, ``recipes/``) and the test
fixtures (``testing/``) sit on top and may import anything below. Imports are read from the
syntax tree, function-level and relative ones included, so nothing is imported to check.
"""

import ast
import sys
from pathlib import Path
from typing import List

import pytest

import fairseq_el

PACKAGE = Path(fairseq_el.__file__).resolve().parent
LAB = ("bench", "recipes", "testing")  # subpackages of fairseq_el the product must not import


def module_name(path: Path) -> str:
    """``fairseq_el/convert/verify.py`` -> ``fairseq_el.convert.verify`` (packages: their name)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> List[str]:
    """Every module ``source`` imports, anywhere in it, as absolute dotted names; for
    ``from X import name`` both ``X`` and ``X.name`` (which may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up level - 1 packages from this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def lab_imports(path: Path) -> List[str]:
    """The lab modules the product module at ``path`` imports."""
    name = module_name(path)
    lab = tuple(f"fairseq_el.{sub}" for sub in LAB)
    imports = imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    return sorted({m for m in imports if m in lab or m.startswith(tuple(x + "." for x in lab))})


def product_modules() -> List[Path]:
    lab_dirs = [PACKAGE / sub for sub in LAB]
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if not any(d == p.parent or d in p.parents for d in lab_dirs)
        and PACKAGE / "data" not in p.parents
    )


def test_the_product_imports_nothing_from_the_lab():
    modules = product_modules()
    assert PACKAGE / "generate" / "batching.py" in modules and len(modules) > 30
    offenders = {str(p.relative_to(PACKAGE)): lab_imports(p) for p in modules if lab_imports(p)}
    assert not offenders, f"product modules importing bench/recipes/testing: {offenders}"


@pytest.mark.parametrize(
    "where, planted",
    [
        ("generate/batching.py", "from fairseq_el.bench.state import Dims"),
        ("convert/verify.py", "def f():\n    from fairseq_el.testing import make_dictionary\n"),
        ("generate/report.py", "from fairseq_el import recipes"),
        ("generate/options.py", "import fairseq_el.recipes.paths as paths"),
        ("convert/__init__.py", "from ..testing.precision import Diffs"),
        ("models/options.py", "from .. import bench"),
    ],
)
def test_the_checker_finds_a_planted_import(tmp_path, monkeypatch, where, planted):
    root = tmp_path / "fairseq_el"
    path = root / where
    path.parent.mkdir(parents=True)
    path.write_text(f'"""A product module."""\n\nimport os\n\n{planted}\n', encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert path in product_modules()
    assert lab_imports(path), planted


def test_the_checker_lets_the_product_import_itself_and_names_like_the_lab(tmp_path, monkeypatch):
    root = tmp_path / "fairseq_el"
    path = root / "generate" / "batching.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "from fairseq_el.accounting import Dims\nfrom fairseq_el.benchmarks import x\n"
        "from . import testing_helpers\nimport bench\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert lab_imports(path) == []
