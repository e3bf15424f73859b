#!/usr/bin/env python
"""Convert a stock fairseq checkpoint into an EL one, or back (same as ``fairseq-el-convert``)."""

import sys

from fairseq_el.cli.convert_checkpoint import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
