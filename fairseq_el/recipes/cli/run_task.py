"""``fairseq-el-run-task``: generate with a task config (stock, EL or --compare) and score."""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from fairseq_el.recipes import compare, runner
from fairseq_el.recipes.config import load_config
from fairseq_el.recipes.paths import RUNS_DIR


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="configs/<task>.yaml, or just the task name")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="fairseq data directory")
    p.add_argument("--subset", default="test")
    p.add_argument("--variant", help="a variant of the config (e.g. greedy, diverse)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--el", action="store_true", help="generate with EL-attention only")
    mode.add_argument("--compare", action="store_true", help="stock and EL side by side")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, help="intra-op threads of fairseq-generate")
    p.add_argument("--out", type=Path, default=RUNS_DIR / "run_task")
    return p


def cli_main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    config = load_config(args.config)
    common = dict(subset=args.subset, variant=args.variant, batch_size=args.batch_size,
                  threads=args.threads)  # fmt: skip
    if args.compare:
        result = compare.compare(config, args.checkpoint, args.data, args.out, **common)
        print(compare.table(result), flush=True)
        sys.exit(1 if result.differing else 0)
    run = runner.run(config, args.checkpoint, args.data, args.out, el=args.el, **common)
    for name, value in run.scores.items():
        print(f"{name}: {value:.2f}")
    print(f"generation {run.generation_seconds:.1f} s, peak RSS {run.peak_rss_mb:.0f} MiB")
    print(f"hypotheses: {args.out / run.mode / 'hypotheses.txt'}")


if __name__ == "__main__":
    cli_main()
