#!/usr/bin/env python
"""Convert a Hugging Face GPT-2 or BART folder to fairseq (see docs/hf_conversion.md)."""

from fairseq_el.convert.cli import cli_main

if __name__ == "__main__":
    cli_main()
