"""``fairseq-el-demo``: XSum, CNN/DM and SQuAD QG samples, small models, stock vs EL, report."""

import argparse
from pathlib import Path
from typing import List, Optional

from fairseq_el.recipes.demo import run_demo
from fairseq_el.recipes.paths import RUNS_DIR


def cli_main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="CI mode: fewer examples and updates")
    p.add_argument("--out", type=Path, default=None, help="default: runs/demo[_quick]")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per child process")
    args = p.parse_args(argv)
    out = args.out or RUNS_DIR / ("demo_quick" if args.quick else "demo")
    run_demo(args.quick, out, args.threads)


if __name__ == "__main__":
    cli_main()
