"""``fairseq-el-benchmark``: stock fairseq vs EL generation, side by side on the same inputs.

Examples::

    fairseq-el-benchmark --shape bart-large --src-len 1024 --beam 4 --steps 16 --batch 8
    fairseq-el-benchmark --preset cnndm --steps 8 --batch 4 --search beam greedy diverse
    fairseq-el-benchmark --shape bart-base --sweep batch=1,2,4,8 --plot sweep.png
    fairseq-el-benchmark --shape bart-large --src-len 1024 --beam 4 --steps 64 --memory-budget 4

Each variant runs in a fresh process (its peak RSS is its own); results are appended to
``--out`` as JSON lines with the hardware, versions, threads and machine load.
"""

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_el.accounting import GIB
from fairseq_el.bench.analytic import model_size
from fairseq_el.bench.environment import environment, load
from fairseq_el.bench.models import VARIANTS
from fairseq_el.bench.precision import DTYPES
from fairseq_el.bench.report import (
    budget_table,
    dtype_gain_table,
    header,
    plot_sweep,
    ratio_lines,
    run_table,
    speedup_table,
    state_table,
    write_jsonl,
)
from fairseq_el.bench.shapes import PRESETS, SEARCHES, SHAPES, Config, preset_configs
from fairseq_el.bench.state import Dims, LinearState, expected_bytes, held_encoder_output
from fairseq_el.usage import (
    Parser,
    UsageError,
    at_least,
    entry_point,
    input_file,
    json_object,
    output_path,
    read_text,
)


def get_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="fairseq-el-benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--shape", choices=sorted(SHAPES), help="model shape, seeded random weights")
    what.add_argument("--preset", choices=sorted(PRESETS), help="one of the paper's settings")
    p.add_argument(
        "--checkpoint",
        default="",
        help="a fairseq checkpoint (with --shape: its name "
        "is only a label) instead of random weights",
    )
    p.add_argument("--src-len", type=int, help="source (or prompt) tokens per sentence")
    p.add_argument("--batch", type=int, help="sentences per batch")
    p.add_argument("--beam", type=int, help="beam size (hypotheses per sentence)")
    p.add_argument("--steps", type=int, help="decoding steps, forced (eos only after them)")
    p.add_argument("--no-repeat", type=int, help="--no-repeat-ngram-size")
    p.add_argument(
        "--search",
        nargs="+",
        default=None,
        choices=sorted(SEARCHES),
        help="search modes (default: beam)",
    )
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)}; the first is the "
        "reference for 'identical'",
    )
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a model argument before building, e.g. el_policy=auto",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median), after warm-up")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--sweep", help="batch=1,2,4,...: one run per batch size, a table and a plot")
    p.add_argument(
        "--memory-budget",
        type=float,
        metavar="GB",
        help="largest batch whose decoding state fits this many GiB, per variant",
    )
    p.add_argument(
        "--fixed-budget",
        type=float,
        metavar="GB",
        help="throughput at a fixed memory budget: each variant at the batch "
        "fairseq-el-generate --batch-size auto picks within GB (weights, encoder, state), "
        "samples/s and peak memory side by side, with the GPU roofline prediction",
    )
    p.add_argument(
        "--measure-budget",
        action="store_true",
        help="fit the budget's state from runs at batch 1 and 2 instead of the exact count "
        "(always measured for LMs, checkpoints and model options)",
    )
    p.add_argument(
        "--peers",
        default="",
        help="comma-separated: hf (transformers generate), "
        "ct2 (CTranslate2); seq2seq BART/transformer shapes only",
    )
    p.add_argument("--out", default="benchmark.jsonl", help="JSON lines file (appended)")
    p.add_argument("--plot", help="PNG path for --sweep")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run variants in this process (fast; peak memory is then not isolated)",
    )
    return p


def configs_from_args(args: argparse.Namespace) -> List[Config]:
    overrides = dict(
        src_len=args.src_len,
        batch=args.batch,
        beam=args.beam,
        steps=args.steps,
        no_repeat=args.no_repeat,
        dtype=args.dtype,
        device=args.device,
        seed=args.seed,
        checkpoint=args.checkpoint,
        model_options=tuple(args.model_option),
    )
    searches = args.search or ["beam"]
    if args.preset:
        return preset_configs(args.preset, searches, **overrides)
    missing = [k for k in ("src_len", "batch", "beam", "steps") if overrides[k] is None]
    if missing:
        raise UsageError(f"--shape needs --{', --'.join(m.replace('_', '-') for m in missing)}")
    overrides["no_repeat"] = overrides["no_repeat"] or 0
    return [Config(args.shape, search=s, **overrides) for s in searches]  # type: ignore[arg-type]


def run_one(config: Config, variant: str, repeats: int, threads: int, in_process: bool) -> Dict:
    if in_process:
        from fairseq_el.bench.runner import run_variant

        torch.set_num_threads(threads)
        return run_variant(config, variant, repeats)
    from fairseq_el.bench.worker import run_in_subprocess

    return run_in_subprocess(config, variant, repeats, threads)


def run_config(
    config: Config, variants: Sequence[str], args: argparse.Namespace, env: Dict, progress=None
) -> List[Dict]:
    """All variants on one config; tokens compared with the first variant's."""
    rows, reference = [], None
    for variant in variants:
        result = run_one(config, variant, args.repeats, args.threads, args.in_process)
        tokens, hyp_scores = result.pop("tokens"), result.pop("scores")
        reference = (tokens, hyp_scores) if reference is None else reference
        identical = tokens == reference[0]
        diff = None
        if identical:
            diff = max(abs(a - b) for s, r in zip(hyp_scores, reference[1]) for a, b in zip(s, r))
        rows.append(
            {
                "kind": "run",
                **result,
                "config": dataclasses.asdict(config),
                "env": env,
                "load": load(),
                "identical": identical,
                "max_score_diff": diff,
                "tokens_sha1": hashlib.sha1(json.dumps(tokens).encode()).hexdigest(),
            }
        )
        if progress is not None:
            progress.update(1)
    return rows


def fixed_budget(
    config: Config, variants: Sequence[str], args: argparse.Namespace, env: Dict
) -> List[Dict]:
    """``--fixed-budget``: each variant at its automatic batch within the same budget."""
    from fairseq_el.bench.budget import fixed_budget_rows, gpu_prediction
    from fairseq_el.bench.budget import fixed_budget_table as fixed_table

    def measure(at_batch: Config, variant: str) -> Dict:
        result = run_one(at_batch, variant, args.repeats, args.threads, args.in_process)
        result["tokens_sha1"] = hashlib.sha1(json.dumps(result.pop("tokens")).encode()).hexdigest()
        result.pop("scores")
        return result

    rows = fixed_budget_rows(config, variants, args.fixed_budget, measure)
    gpu = "V100"
    print(
        f"fixed budget {args.fixed_budget:g} GiB: each variant at its --batch-size auto batch; "
        f"{gpu} columns: roofline model at its {analytic_gpu_memory(gpu)} GB, not measured"
    )
    print(fixed_table(rows, gpu_prediction(config, variants, gpu), gpu))
    return [{**row, "env": env, "load": load()} for row in rows]


def analytic_gpu_memory(gpu: str) -> str:
    from fairseq_el.bench.analytic import GB, GPUS

    return f"{GPUS[gpu].memory / GB:g}"


def memory_budget(
    config: Config, variants: Sequence[str], args: argparse.Namespace, env: Dict
) -> List[Dict]:
    """Largest batch per variant whose decoding state fits the budget.

    State is linear in batch: it is fitted at batch 1 and 2, from measurement (``--measure-budget``,
    model options, checkpoints and language models) or from :func:`expected_bytes`, the count the
    tests check equal to the measurement.
    """
    budget = int(args.memory_budget * GIB)
    lm = config.checkpoint == "" and SHAPES[config.shape].is_lm
    measure = args.measure_budget or lm or bool(config.checkpoint) or bool(config.model_options)
    positions = config.steps + 1 + (config.src_len if lm else 0)
    rows = []
    for variant in variants:
        if measure:
            totals = {}
            for batch in (1, 2):
                cfg = dataclasses.replace(config, batch=batch)
                result = run_one(cfg, variant, 0, args.threads, args.in_process)
                totals[batch] = result["decoding_state_bytes"]["total"]
        else:
            size = model_size(config.shape)
            dims = Dims(size.layers, size.dim, size.dim, size.heads, DTYPES[config.dtype].itemsize)
            hyps, src = config.hypotheses, config.src_len
            totals = {
                b: expected_bytes(variant, dims, b, hyps, src, positions)["total"] for b in (1, 2)
            }
        state = LinearState.fit(1, totals[1], 2, totals[2])
        embedding = 0  # encoder_embedding per sentence: held, never read by fairseq's decoder
        if not lm:
            size = model_size(config.shape)
            dims = Dims(size.layers, size.dim, size.dim, size.heads, DTYPES[config.dtype].itemsize)
            held = held_encoder_output(variant, dims, 1, config.hypotheses, config.src_len)
            embedding = held["encoder_embedding"]
        without = LinearState(state.per_sentence - embedding, state.fixed)
        rows.append(
            {
                "kind": "budget",
                "variant": variant,
                "budget_bytes": budget,
                "per_sentence": state.per_sentence,
                "fixed": state.fixed,
                "encoder_embedding_per_sentence": embedding,
                "largest_batch_without_encoder_embedding": without.largest_batch(budget),
                "source": "measured" if measure else "analytic (expected_bytes)",
                "largest_batch": state.largest_batch(budget),
                "config": dataclasses.asdict(config),
                "env": env,
                "load": load(),
            }
        )
    return rows


def analytic_states(
    config: Config, variants: Sequence[str]
) -> Tuple[Dict[str, Dict[str, int]], Dict[str, int]]:
    """Exact decoding state by part at ``config.batch`` for every variant (the ratios need both
    stock variants), and each one's ``encoder_embedding`` bytes."""
    size = model_size(config.shape)
    dims = Dims(size.layers, size.dim, size.dim, size.heads, DTYPES[config.dtype].itemsize)
    wanted = list(dict.fromkeys(["stock-per-sentence", "stock-per-beam", *variants]))
    positions = config.steps + 1
    args = (dims, config.batch, config.hypotheses, config.src_len)
    states = {v: expected_bytes(v, *args, positions) for v in wanted}
    embedding = {v: held_encoder_output(v, *args)["encoder_embedding"] for v in wanted}
    return states, embedding


def sweep_batches(spec: str) -> List[int]:
    name, _, values = spec.partition("=")
    if name != "batch" or not values:
        raise UsageError(f"--sweep takes batch=1,2,4,...; got {spec!r}")
    try:
        batches = [int(v) for v in values.split(",")]
    except ValueError:
        raise UsageError(f"--sweep: batch sizes must be integers: {values!r}") from None
    if min(batches) < 1:
        raise UsageError(f"--sweep: batch sizes must be at least 1: {values!r}")
    return batches


def check_args(args: argparse.Namespace) -> Tuple[List[Config], List[str]]:
    """Everything that can be checked before anything runs (sizes, device, where results go,
    variants, the mode's options); the configurations and variants to run."""
    for option in ("src_len", "batch", "beam", "steps", "threads"):
        at_least("--" + option.replace("_", "-"), getattr(args, option, None), 1)
    at_least("--no-repeat", args.no_repeat, 0)
    at_least("--repeats", args.repeats, 0)  # 0: state and memory only
    at_least("--fixed-budget", args.fixed_budget, 0.001)
    if args.fixed_budget and args.memory_budget:
        raise UsageError("--fixed-budget and --memory-budget are two modes: give one")
    output_path("--out", Path(args.out))
    if args.plot:
        output_path("--plot", Path(args.plot))
    if args.checkpoint:
        input_file("--checkpoint", Path(args.checkpoint))
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device}: not a device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available here")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UsageError(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    try:
        configs = configs_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if args.sweep:
        sweep_batches(args.sweep)
    for config in configs if args.peers else ():
        check_peers(peer_names(args), config.shape)
    if args.plot and not args.sweep:
        raise UsageError("--plot draws a --sweep: give --sweep too")
    return configs, variants


# --peers: Hugging Face generate and CTranslate2 on the same weights, a finished experiment
# (experiments/peers.py) that runs from a clone of the repository; the wheel does not hold it.
PEERS = ("hf", "ct2")


def peer_names(args: argparse.Namespace) -> List[str]:
    return [n.strip() for n in args.peers.split(",") if n.strip()]


def check_peers(names: Sequence[str], shape: str) -> None:
    """A UsageError unless every peer is known and the shape is one peers can run."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise UsageError(f"--peers: unknown {unknown}; known: {', '.join(PEERS)}")
    if not SHAPES[shape].arch.startswith("bart"):
        raise UsageError("--peers needs a BART shape (bart-base, bart-large, tiny-bart)")


def peers_module():
    """``experiments/peers.py`` of the clone this package runs from (an editable install)."""
    path = Path(__file__).resolve().parents[2] / "experiments" / "peers.py"
    if not path.is_file():
        raise UsageError(
            "--peers runs experiments/peers.py, which is not installed with the package: "
            "run fairseq-el-benchmark from a clone (pip install -e '.[bench]')"
        )
    spec = importlib.util.spec_from_file_location("fairseq_el_experiments_peers", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def timed_runs(
    config: Config, variants: Sequence[str], args: argparse.Namespace, env: Dict
) -> List[Dict]:
    """The default mode: every variant at ``--batch`` (or each ``--sweep`` batch), timed; the
    table, the ratios to both stock variants per batch and the ``--plot``."""
    from tqdm import tqdm

    batches = sweep_batches(args.sweep) if args.sweep else [config.batch]
    with tqdm(total=len(batches) * len(variants), desc="runs", leave=False) as bar:
        rows = [
            row
            for b in batches
            for row in run_config(dataclasses.replace(config, batch=b), variants, args, env, bar)
        ]
    print(run_table(rows))
    for batch in batches:
        mine = [r for r in rows if r["config"]["batch"] == batch]
        per_beam = [r for r in mine if r["variant"] != "stock-per-sentence"]
        for line in ratio_lines(mine, "stock-per-sentence") + ratio_lines(
            per_beam, "stock-per-beam"
        ):
            print(f"batch {batch}: {line}")
    if args.plot:
        title = config.describe().replace(f"batch {config.batch}", f"batch {args.sweep}")
        plot_sweep(rows, args.plot, title)
        print(f"plot: {args.plot}")
    return rows


def budget_runs(
    config: Config, variants: Sequence[str], args: argparse.Namespace, env: Dict
) -> List[Dict]:
    """``--memory-budget``: the largest batch per variant, and the exact state at ``--batch``."""
    rows = memory_budget(config, variants, args, env)
    print(
        f"decoding-state budget {args.memory_budget:g} GiB "
        f"({config.steps} steps, self-attention cache included)"
    )
    print(budget_table(rows))
    if not (SHAPES[config.shape].is_lm or config.checkpoint):
        print(f"decoding state at batch {config.batch} (exact count, expected_bytes)")
        print(state_table(*analytic_states(config, variants)))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = get_parser().parse_args(argv)
    configs, variants = check_args(args)
    torch.set_num_threads(args.threads)
    mode = fixed_budget if args.fixed_budget else budget_runs if args.memory_budget else timed_runs
    peers = peers_module() if args.peers else None
    env = environment(args.device)
    records: List[Dict] = []
    for config in configs:
        print(header(env, config.describe()))
        rows = mode(config, variants, args, env)
        if peers is not None:
            rows += peers.run_peers(config, peer_names(args), args, env)
        write_jsonl(args.out, rows)
        records += rows
    print(f"results appended to {args.out}")
    return records


@entry_point("fairseq-el-benchmark")
def cli_main() -> None:
    main()


@entry_point("fairseq-el-gpu-check")
def gpu_check_main(argv: Optional[Sequence[str]] = None) -> None:
    """``fairseq-el-gpu-check``: see :mod:`fairseq_el.bench.gpu_check`."""
    from fairseq_el.bench.gpu_check import main as gpu_check

    gpu_check(argv)


@entry_point("fairseq-el-bench-report")
def report_main(argv: Optional[Sequence[str]] = None) -> None:
    """Re-table runs from a JSON lines file, e.g. runs of one shape made by separate commands;
    "identical" is then recomputed against the reference's token digest."""
    p = Parser(
        prog="fairseq-el-bench-report",
        description="Table and ratios of benchmark runs in a JSON lines file",
    )
    p.add_argument("results", help="JSON lines written by fairseq-el-benchmark --out")
    p.add_argument("--shape")
    p.add_argument("--src-len", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--reference", default="stock-per-sentence")
    p.add_argument(
        "--speedups",
        action="store_true",
        help="instead: one line per benchmark invocation (EL against the stock variant beside "
        "it, compile cost, peak memory), then what bf16 gains over fp32 per variant",
    )
    args = p.parse_args(argv)
    text = read_text(input_file("RESULTS", Path(args.results)), "results file")
    records = [
        json_object(line, f"{args.results}: line {number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if args.speedups:
        print(speedup_table(records))
        print()
        print(dtype_gain_table(records))
        return
    if None in (args.shape, args.src_len, args.batch):
        raise UsageError("give --shape, --src-len and --batch (or --speedups)")
    rows = []
    for r in records:
        c = r.get("config", {})
        if r.get("kind") == "run" and (c.get("shape"), c.get("src_len"), c.get("batch")) == (
            args.shape,
            args.src_len,
            args.batch,
        ):
            options = c.get("model_options") or []
            r["variant"] += f" ({' '.join(options)})" if options else ""
            rows.append(r)
    if not rows:
        raise UsageError(f"{args.results}: no runs of that shape, source length and batch")
    ref = next((r for r in rows if r["variant"] == args.reference), rows[0])
    for r in rows:  # runs of separate commands: compare their tokens through the digests
        r["identical"] = r["tokens_sha1"] == ref["tokens_sha1"]
    print(run_table(rows))
    for line in ratio_lines(rows, args.reference):
        print(line)


@entry_point("fairseq-el-roofline")
def roofline_main(argv: Optional[List[str]] = None) -> None:
    """The roofline model of EL speed-ups on GPUs beside the paper's V100 figures."""
    from fairseq_el.bench.analytic import GB, GPUS, table
    from fairseq_el.bench.shapes import SEARCHES

    parser = Parser(
        prog="fairseq-el-roofline", description="Roofline EL speed-ups on GPUs vs the paper"
    )
    parser.add_argument("--gpus", nargs="+", default=list(GPUS), choices=sorted(GPUS))
    parser.add_argument(
        "--search", nargs="+", default=["beam", "diverse", "greedy"], choices=sorted(SEARCHES)
    )
    args = parser.parse_args(argv)
    for name in args.gpus:
        g = GPUS[name]
        print(
            f"{g.name}: fp16 {g.fp16_flops / 1e12:g} TFLOP/s, fp32 {g.fp32_flops / 1e12:g} "
            f"TFLOP/s, {g.bandwidth / 1e9:g} GB/s, {g.memory / GB:g} GB"
        )
    print(table(args.gpus, args.search))
