"""``--version`` on every console script, and one version everywhere: ``fairseq_el/version.py`` is
what ``fairseq_el.__version__``, each script's ``--version`` and the package metadata say."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fairseq_el
from fairseq_el.version import __version__

REPO = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as CI
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]


def test_one_version_everywhere():
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__), __version__
    assert fairseq_el.__version__ == __version__
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {__version__}" in changelog, "CHANGELOG.md has no section for this version"
    assert "dynamic" in (REPO / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_prints_the_version(script, monkeypatch, capsys):
    """Each entry point of pyproject.toml, called in-process as its console script would be."""
    module, _, function = SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module), function)
    monkeypatch.setattr(sys, "argv", [script, "--version"])
    try:
        main()
        code = 0  # a main that returns (fairseq-el-user-dir) exits 0
    except SystemExit as done:
        code = done.code
    assert code in (0, None)
    assert capsys.readouterr().out.strip() == f"{script} {__version__}"


def test_user_dir_version_imports_neither_torch_nor_fairseq():
    probe = (
        "import sys, fairseq_el_user_dir; fairseq_el_user_dir.cli_main(['--version']); "
        "print(sorted(m for m in ('torch', 'fairseq', 'fairseq_el') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    printed, imported = done.stdout.splitlines()
    assert printed == f"fairseq-el-user-dir {__version__}"
    assert imported == "[]", f"fairseq-el-user-dir --version imported {imported}"
