"""``fairseq-el-user-dir``: print the plugin's directory, for ``fairseq-generate --user-dir``.

A top-level module on purpose: importing ``fairseq_el`` registers the models, which imports
torch and fairseq (seconds). ``find_spec`` locates the package without running it, and
``--version`` reads ``fairseq_el/version.py`` by path for the same reason.
"""

import argparse
import importlib.util
import os
from typing import List, Optional


def _package_dir() -> str:
    spec = importlib.util.find_spec("fairseq_el")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fairseq-el-user-dir: the fairseq_el package is not installed")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def _version(package_dir: str) -> str:
    """``fairseq_el.version.__version__``, without importing ``fairseq_el`` (torch, fairseq)."""
    path = os.path.join(package_dir, "version.py")
    spec = importlib.util.spec_from_file_location("_fairseq_el_version", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.__version__


def cli_main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fairseq-el-user-dir",
        description="Print the fairseq-el plugin's directory, for fairseq-generate --user-dir.",
    )
    parser.add_argument("--version", action="store_true", help="show the version and exit")
    args = parser.parse_args(argv)
    package_dir = _package_dir()
    if args.version:
        print(f"{parser.prog} {_version(package_dir)}")
        return
    print(package_dir)


if __name__ == "__main__":
    cli_main()
