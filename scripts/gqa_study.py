#!/usr/bin/env python
"""Train stock, multi-query and grouped-query Transformers on SQuAD QG; compare them and EL.

    python scripts/gqa_study.py --out-dir runs/gqa_study          # the study in docs/gqa_study.md
    python scripts/gqa_study.py --quick --out-dir runs/gqa_quick  # a smoke run, a few minutes

Steps already done in ``--out-dir`` (binarized data, checkpoints) are reused; results are
appended to ``<out-dir>/results.jsonl`` as they come, and the table is printed at the end.
"""

import argparse
from pathlib import Path

from fairseq_el.gqa_study import VARIANTS, Budget, format_table, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/gqa_study"))
    parser.add_argument("--quick", action="store_true", help="tiny data, model and budget")
    parser.add_argument("--max-update", type=int, help="training updates of every variant")
    parser.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help=f"comma-separated subset of {[v.name for v in VARIANTS]}",
    )
    args = parser.parse_args()
    budget = Budget.quick() if args.quick else Budget()
    if args.max_update is not None:
        budget = Budget(**{**budget.__dict__, "max_update": args.max_update})
    by_name = {v.name: v for v in VARIANTS}
    unknown = [name for name in args.variants.split(",") if name not in by_name]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(by_name)}")
    rows = run_study(args.out_dir, budget, [by_name[n] for n in args.variants.split(",")])
    print(format_table(rows))


if __name__ == "__main__":
    main()
