"""``fairseq-el-user-dir``: print the plugin's directory, for ``fairseq-generate --user-dir``.

A top-level module on purpose: importing ``fairseq_el`` registers the models, which imports
torch and fairseq (seconds). ``find_spec`` locates the package without running it.
"""

import importlib.util
import os


def cli_main() -> None:
    spec = importlib.util.find_spec("fairseq_el")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fairseq-el-user-dir: the fairseq_el package is not installed")
    print(os.path.abspath(list(spec.submodule_search_locations)[0]))


if __name__ == "__main__":
    cli_main()
