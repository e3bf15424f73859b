"""The package version, in one place: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``),
``fairseq_el.__version__`` and every console script's ``--version`` print it.

Plain text on purpose: nothing here imports torch or fairseq, so ``fairseq-el-user-dir --version``
stays fast (it loads this file by path, without importing the package).
"""

__version__ = "0.3.0"
