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

from fairseq_el.manifest import check_complete
from fairseq_el.paths import BPE_DIR
from fairseq_el.recipes import compare, finetune, prepare, runner, sources
from fairseq_el.recipes.config import TaskConfig, load_config
from fairseq_el.recipes.paths import DATA_ROOT_HELP, RUNS_DIR, data_root
from fairseq_el.usage import (
    Parser,
    UsageError,
    at_least,
    entry_point,
    input_dir,
    input_file,
    output_dir,
)

OVERWRITE_HELP = "replace a previous run of other inputs or settings in the output directory"
DTYPE_HELP = (
    "precision of generation: fp16 is fairseq-generate --fp16; fairseq-generate has no bf16, so "
    "for bf16 the models (stock and EL alike) are cast to bfloat16 as they load. In fp16/bf16 EL "
    "is not bit-identical to stock (rounding may part near-ties): stock vs EL then expects every "
    f"score within {compare.METRIC_TOL} instead of 0 differing hypotheses"
)


def task_config(value: str) -> TaskConfig:
    """``--config``: a task name or YAML path, loaded and checked; a UsageError naming it."""
    try:
        return load_config(value)
    except (ValueError, KeyError, TypeError, FileNotFoundError, yaml.YAMLError) as err:
        raise UsageError(f"--config {value}: {err}") from None


# ---------------------------------------------------------------- fairseq-el-prepare
FORMATS = {
    "lines": "parallel line files: --source F --target F (XSum, CNN/DM, Du et al. QG)",
    "xsum-jsonl": 'JSON lines {"document", "summary"}: --input F',
    "stories": "CNN/DM .story files or directories of them: --input P [P ...]",
    "squad-json": "SQuAD JSON, answer-aware QG 'answer [SEP] paragraph': --input F",
}


def read_pairs(args: argparse.Namespace) -> List[sources.Pair]:
    if args.format == "lines":
        if not (args.source and args.target) or args.input:
            raise UsageError("--format lines takes --source and --target (not --input)")
        return sources.read_line_pairs(
            input_file("--source", args.source), input_file("--target", args.target)
        )
    if not args.input or args.source or args.target:
        raise UsageError(f"--format {args.format} takes --input (not --source/--target)")
    if args.format == "stories":
        for path in args.input:
            if not path.exists():
                raise UsageError(f"--input {path}: no such file or directory")
        return sources.read_stories(args.input)
    if len(args.input) != 1:
        raise UsageError(f"--format {args.format} takes one --input file")
    input_file("--input", args.input[0])
    if args.format == "xsum-jsonl":
        return sources.read_xsum_jsonl(args.input[0])
    return sources.read_squad_qg(args.input[0])


def prepare_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    return p


@entry_point("fairseq-el-prepare")
def prepare_main(argv: Optional[List[str]] = None) -> None:
    args = prepare_parser().parse_args(argv)
    limits = {"source": 1024, "target": 1024}
    if args.config:
        config = task_config(args.config)
        limits = {"source": config.max_source_positions, "target": config.max_target_positions}
    for side in limits:
        given = getattr(args, f"max_{side}_positions")
        limits[side] = limits[side] if given is None else given
        at_least(f"--max-{side}-positions", limits[side], prepare.MIN_POSITIONS)
    at_least("--workers", args.workers, 1)
    for name in ("encoder.json", "vocab.bpe"):
        input_file("--bpe-dir", input_dir("--bpe-dir", args.bpe_dir) / name)
    input_file("--dict", args.dict)
    output_dir("--out", args.out)
    pairs = read_pairs(args)
    if not pairs:
        files = [args.source, args.target] if args.format == "lines" else args.input
        raise UsageError(f"{', '.join(map(str, files))}: the input files are empty: no examples")
    splits = prepare.split_by_spec(pairs, args.splits)
    print(f"read {len(pairs)} {args.format} pairs; position limits {limits}", flush=True)
    prepare.prepare(
        splits,
        args.out,
        limits["source"],
        limits["target"],
        args.bpe_dir,
        args.dict,
        args.workers,
        args.overwrite,
    )


# ---------------------------------------------------------------- fairseq-el-run-task


def run_task_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    p.add_argument(
        "--cpu", action="store_true", help="generate on CPU (default: CUDA where torch sees it)"
    )
    p.add_argument("--dtype", choices=runner.DTYPES, default="fp32", help=DTYPE_HELP)
    p.add_argument("--out", type=Path, default=RUNS_DIR / "run_task")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    return p


@entry_point("fairseq-el-run-task")
def run_task_main(argv: Optional[List[str]] = None) -> None:
    args = run_task_parser().parse_args(argv)
    config = task_config(args.config)
    check_run_task_args(args, config)
    settings = runner.Settings(
        args.subset, args.variant, args.batch_size, True if args.cpu else None, args.dtype
    )
    common = dict(settings=settings, threads=args.threads, overwrite=args.overwrite)
    if args.compare:
        result = compare.compare(config, args.checkpoint, args.data, args.out, **common)
        print(compare.table(result), flush=True)
        sys.exit(0 if result.agrees else 1)
    run = compare.run_one(config, args.checkpoint, args.data, args.out, el=args.el, **common)
    for name, value in run.scores.items():
        print(f"{name}: {value:.2f}")
    print(f"generation {run.generation_seconds:.1f} s, peak RSS {run.peak_rss_mb:.0f} MiB")
    print(f"hypotheses: {args.out / run.mode / 'hypotheses.txt'}")


def check_run_task_args(args: argparse.Namespace, config: TaskConfig) -> None:
    """Everything run-task can check before it generates anything."""
    from fairseq_el.convert.checkpoint import checkpoint_arch, load_checkpoint, model_config
    from fairseq_el.models.architectures import is_el_arch

    at_least("--batch-size", args.batch_size, 1)
    at_least("--threads", args.threads, 1)
    if args.variant is not None and args.variant not in config.variants:
        known = ", ".join(sorted(config.variants)) or "none"
        raise UsageError(f"--variant {args.variant}: not in {config.path} (known: {known})")
    data = input_dir("--data", args.data)
    check_complete("--data", data)
    for side in ("source", "target"):
        input_file("--data", data / f"dict.{side}.txt")
        input_file("--data", data / f"{args.subset}.source-target.{side}.idx")
    output_dir("--out", args.out)
    state = load_checkpoint(input_file("--checkpoint", args.checkpoint), mmap=True)
    arch = checkpoint_arch(state)
    if is_el_arch(arch) and not (args.el or args.compare):
        kv_heads = getattr(model_config(state), "decoder_kv_heads", None)
        if kv_heads is not None:
            raise UsageError(
                f"--checkpoint {args.checkpoint}: a grouped-query {arch} checkpoint has no stock "
                "equivalent: pass --el"
            )


# ---------------------------------------------------------------- fairseq-el-finetune


def finetune_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    return p


@entry_point("fairseq-el-finetune")
def finetune_main(argv: Optional[List[str]] = None) -> None:
    args = finetune_parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set expects OPTION=VALUE, got {item!r}")
        try:
            overrides[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UsageError(f"--set {item}: the value is not YAML ({err})") from None
    if args.restore_file:
        overrides["restore-file"] = str(input_file("--restore-file", args.restore_file))
    at_least("--toy", args.toy, 1)
    at_least("--toy-max-tokens", args.toy_max_tokens, 1)
    at_least("--threads", args.threads, 1)
    config = task_config(args.config)
    if not args.dry_run:
        input_file("--data", input_dir("--data", args.data) / "dict.source.txt")
        output_dir("--save-dir", args.save_dir)
    argv_ = finetune.finetune_argv(
        config, args.data, args.save_dir, args.toy, args.toy_max_tokens, overrides
    )
    if args.dry_run:
        print("fairseq-train " + shlex.join(argv_))
        return
    print(f"checkpoint: {finetune.train(argv_, args.threads)}")


# ---------------------------------------------------------------- fairseq-el-demo


@entry_point("fairseq-el-demo")
def demo_main(argv: Optional[List[str]] = None) -> None:
    p = Parser(
        prog="fairseq-el-demo",
        description="XSum, CNN/DM and SQuAD QG samples, small models, stock vs EL, report.",
    )
    p.add_argument("--quick", action="store_true", help="CI mode: fewer examples and updates")
    p.add_argument("--out", type=Path, default=None, help="default: runs/demo[_quick]")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per child process")
    p.add_argument("--data-root", type=Path, help=DATA_ROOT_HELP)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--dtype", choices=runner.DTYPES, default="fp32", help=DTYPE_HELP)
    args = p.parse_args(argv)
    at_least("--threads", args.threads, 1)
    out = output_dir("--out", args.out or RUNS_DIR / ("demo_quick" if args.quick else "demo"))
    root = data_root(args.data_root)
    from fairseq_el.recipes.demo import run_demo

    run_demo(args.quick, out, args.threads, root, args.overwrite, args.dtype)


# ---------------------------------------------------------------- fairseq-el-gqa-study
@entry_point("fairseq-el-gqa-study")
def gqa_study_main(argv: Optional[List[str]] = None) -> None:
    """The same study (budget) again in ``--out-dir`` reuses the data, trainings and rows it has
    (an interrupted step is redone); another budget is refused unless ``--overwrite``.
    ``results.jsonl`` is rewritten after each row; the table is printed at the end."""
    from fairseq_el.recipes.gqa_study import KV_LAYOUTS, Budget, format_table, run_study

    p = Parser(
        prog="fairseq-el-gqa-study",
        description="Train stock, multi-query and grouped-query Transformers on SQuAD QG; "
        "compare them and EL (docs/gqa_study.md).",
    )
    p.add_argument("--out-dir", type=Path, default=RUNS_DIR / "gqa_study")
    p.add_argument("--quick", action="store_true", help="tiny data, model and budget")
    p.add_argument("--max-update", type=int, help="training updates of every variant")
    p.add_argument(
        "--variants",
        default=",".join(v.name for v in KV_LAYOUTS),
        help=f"comma-separated subset of {[v.name for v in KV_LAYOUTS]}",
    )
    p.add_argument("--data-root", type=Path, help=DATA_ROOT_HELP)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    args = p.parse_args(argv)
    at_least("--max-update", args.max_update, 1)
    output_dir("--out-dir", args.out_dir)
    budget = Budget.quick() if args.quick else Budget()
    if args.max_update is not None:
        budget = Budget(**{**budget.__dict__, "max_update": args.max_update})
    by_name = {v.name: v for v in KV_LAYOUTS}
    unknown = [name for name in args.variants.split(",") if name not in by_name]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(by_name)}")
    root = data_root(args.data_root)
    chosen = [by_name[n] for n in args.variants.split(",")]
    rows = run_study(args.out_dir, budget, chosen, root, args.overwrite)
    print(format_table(rows))
