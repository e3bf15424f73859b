#!/usr/bin/env python
"""Thin wrapper: see fairseq_el/recipes/cli/run_task.py (also installed as a console script)."""

from fairseq_el.recipes.cli.run_task import cli_main

if __name__ == "__main__":
    cli_main()
