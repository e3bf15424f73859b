"""Console scripts of the recipes: prepare data, run a task, fine-tune, the demo, the GQA study.

fairseq-el-prepare     raw XSum / CNN/DM / SQuAD QG text to fairseq binaries
fairseq-el-run-task    generate with a task config (stock, EL or --compare) and score
fairseq-el-finetune    fine-tune BART on a task with fairseq-train (published or toy scale)
fairseq-el-demo        XSum, CNN/DM and SQuAD QG samples, small models, stock vs EL, report
fairseq-el-gqa-study   stock, multi-query and grouped-query Transformers on SQuAD QG, and EL
"""

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from fairseq_el.recipes import compare, finetune, prepare, runner, sources
from fairseq_el.recipes.config import load_config
from fairseq_el.recipes.paths import BPE_DIR, DATA_ROOT_HELP, RUNS_DIR, data_root

# ---------------------------------------------------------------- fairseq-el-prepare
FORMATS = {
    "lines": "parallel line files: --source F --target F (XSum, CNN/DM, Du et al. QG)",
    "xsum-jsonl": 'JSON lines {"document", "summary"}: --input F',
    "stories": "CNN/DM .story files or directories of them: --input P [P ...]",
    "squad-json": "SQuAD JSON, answer-aware QG 'answer [SEP] paragraph': --input F",
}


def read_pairs(args: argparse.Namespace) -> List[sources.Pair]:
    if args.format == "lines":
        if not (args.source and args.target):
            raise SystemExit("--format lines needs --source and --target")
        return sources.read_line_pairs(args.source, args.target)
    if not args.input:
        raise SystemExit(f"--format {args.format} needs --input")
    if args.format == "stories":
        return sources.read_stories(args.input)
    if len(args.input) != 1:
        raise SystemExit(f"--format {args.format} takes one --input file")
    if args.format == "xsum-jsonl":
        return sources.read_xsum_jsonl(args.input[0])
    return sources.read_squad_qg(args.input[0])


def prepare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-el-prepare",
        description="Raw XSum / CNN/DM / SQuAD QG text to fairseq binaries.",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="\n".join(f"{k}: {v}" for k, v in FORMATS.items()),
    )
    p.add_argument("--source", type=Path)
    p.add_argument("--target", type=Path)
    p.add_argument("--input", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output (fairseq data) directory")
    p.add_argument("--config", help="task config (name or path) giving the position limits")
    p.add_argument(
        "--splits",
        default="test",
        help="split names and sizes in order, e.g. 'test' or 'test:10,train:rest'",
    )
    p.add_argument("--max-source-positions", type=int)
    p.add_argument("--max-target-positions", type=int)
    p.add_argument("--bpe-dir", type=Path, default=BPE_DIR, help="encoder.json and vocab.bpe")
    p.add_argument("--dict", type=Path, default=BPE_DIR / "dict.txt", help="fairseq dict.txt")
    p.add_argument("--workers", type=int, default=1)
    return p  # fmt: skip


def prepare_main(argv: Optional[List[str]] = None) -> None:
    args = prepare_parser().parse_args(argv)
    limits = {"source": 1024, "target": 1024}
    if args.config:
        config = load_config(args.config)
        limits = {"source": config.max_source_positions, "target": config.max_target_positions}
    limits["source"] = args.max_source_positions or limits["source"]
    limits["target"] = args.max_target_positions or limits["target"]
    pairs = read_pairs(args)
    print(f"read {len(pairs)} {args.format} pairs; position limits {limits}", flush=True)
    prepare.prepare(
        prepare.split_pairs(pairs, args.splits),
        args.out,
        limits["source"],
        limits["target"],
        args.bpe_dir,
        args.dict,
        args.workers,
    )


# ---------------------------------------------------------------- fairseq-el-run-task


def run_task_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-el-run-task",
        description="Generate with a task config (stock, EL or --compare) and score.",
    )
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


def run_task_main(argv: Optional[List[str]] = None) -> None:
    args = run_task_parser().parse_args(argv)
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


# ---------------------------------------------------------------- fairseq-el-finetune


def finetune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-el-finetune",
        description="Fine-tune BART on a task with fairseq-train (published or toy scale).",
    )
    p.add_argument("--config", required=True, help="configs/<task>.yaml, or just the task name")
    p.add_argument("--data", type=Path, required=True, help="fairseq data with a train split")
    p.add_argument("--save-dir", type=Path, required=True)
    p.add_argument("--restore-file", help="the pre-trained bart.large model.pt")
    p.add_argument(
        "--toy",
        type=int,
        metavar="UPDATES",
        help="tiny bart_base from scratch on CPU for UPDATES updates",
    )
    p.add_argument("--toy-max-tokens", type=int, default=2048)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="override a fairseq-train option (YAML value), e.g. --set lr=1e-4",
    )
    p.add_argument("--threads", type=int)
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    return p  # fmt: skip


def finetune_main(argv: Optional[List[str]] = None) -> None:
    args = finetune_parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects OPTION=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    if args.restore_file:
        overrides["restore-file"] = args.restore_file
    config = load_config(args.config)
    argv_ = finetune.finetune_argv(
        config, args.data, args.save_dir, args.toy, args.toy_max_tokens, overrides
    )
    if args.dry_run:
        print("fairseq-train " + shlex.join(argv_))
        return
    print(f"checkpoint: {finetune.train(argv_, args.threads)}")


# ---------------------------------------------------------------- fairseq-el-demo


def demo_main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(
        prog="fairseq-el-demo",
        description="XSum, CNN/DM and SQuAD QG samples, small models, stock vs EL, report.",
    )
    p.add_argument("--quick", action="store_true", help="CI mode: fewer examples and updates")
    p.add_argument("--out", type=Path, default=None, help="default: runs/demo[_quick]")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per child process")
    p.add_argument("--data-root", type=Path, help=DATA_ROOT_HELP)
    args = p.parse_args(argv)
    out = args.out or RUNS_DIR / ("demo_quick" if args.quick else "demo")
    from fairseq_el.recipes.demo import run_demo

    run_demo(args.quick, out, args.threads, data_root(args.data_root, "fairseq-el-demo"))


# ---------------------------------------------------------------- fairseq-el-gqa-study
def gqa_study_main(argv: Optional[List[str]] = None) -> None:
    """Steps already done in ``--out-dir`` (binarized data, checkpoints) are reused; results are
    appended to ``<out-dir>/results.jsonl`` as they come, and the table is printed at the end."""
    from fairseq_el.recipes.gqa_study import VARIANTS, Budget, format_table, run_study

    p = argparse.ArgumentParser(
        prog="fairseq-el-gqa-study",
        description="Train stock, multi-query and grouped-query Transformers on SQuAD QG; "
        "compare them and EL (docs/gqa_study.md).",
    )
    p.add_argument("--out-dir", type=Path, default=RUNS_DIR / "gqa_study")
    p.add_argument("--quick", action="store_true", help="tiny data, model and budget")
    p.add_argument("--max-update", type=int, help="training updates of every variant")
    p.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help=f"comma-separated subset of {[v.name for v in VARIANTS]}",
    )
    p.add_argument("--data-root", type=Path, help=DATA_ROOT_HELP)
    args = p.parse_args(argv)
    budget = Budget.quick() if args.quick else Budget()
    if args.max_update is not None:
        budget = Budget(**{**budget.__dict__, "max_update": args.max_update})
    by_name = {v.name: v for v in VARIANTS}
    unknown = [name for name in args.variants.split(",") if name not in by_name]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(by_name)}")
    root = data_root(args.data_root, "fairseq-el-gqa-study")
    rows = run_study(args.out_dir, budget, [by_name[n] for n in args.variants.split(",")], root)
    print(format_table(rows))
