"""Command-line entry points of the recipes (console scripts and ``scripts/*.py``)."""
