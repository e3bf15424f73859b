#!/usr/bin/env python
"""Thin wrapper: see fairseq_el/recipes/cli/prepare_data.py (also installed as a console script)."""

from fairseq_el.recipes.cli.prepare_data import cli_main

if __name__ == "__main__":
    cli_main()
