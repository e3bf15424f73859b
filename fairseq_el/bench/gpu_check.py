"""``fairseq-el-gpu-check``: the parity tiers and a short benchmark on one GPU, in one command.

Full mode (a CUDA device, the repository's ``tests/`` at hand; docs/gpu_check.md says how to
install offline): runs the module and model tiers' CUDA cases with pytest (``-k cuda``: fp32
parity and the fp16/bf16 rule), tabulates the low-precision rule per attention variant in
fp32/fp16/bf16 (:mod:`fairseq_el.bench.precision`), and benchmarks stock per-beam, stock
per-sentence, EL and EL self-attention at the bart-large shape (source 1024, beam 4) in fp16, with
a batch sweep (1, 2, 4, ...) per variant up to its first out-of-memory or its share of the time
budget. ``--smoke`` does the same on CPU at a tiny shape without pytest, in seconds (CI). Writes
``gpu_check.json`` and ``gpu_check.md`` to ``--out``.
"""

import argparse
import dataclasses
import gc
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from fairseq_el.bench.environment import environment
from fairseq_el.bench.models import VARIANTS, build_variant
from fairseq_el.bench.precision import DTYPES
from fairseq_el.bench.runner import run_variant
from fairseq_el.bench.shapes import Config
from fairseq_el.files import write_json, write_text
from fairseq_el.testing.precision import CASES, Diffs

PRECISION_ARGS = {  # one representative case per variant: odd head count where it can be
    "cross": (5, 16, 4, True),  # heads, head dim, beam, padding
    "self": (5, 16, 4, True),
    "grouped-self": (6, 3, 16, 4, True),  # heads, kv heads, head dim, beam, padding
    "grouped-cross": (6, 3, 16, 4, True),
}
OOM = (torch.cuda.OutOfMemoryError, MemoryError)
FP32_TOL = 1e-5  # the fp32 parity tests' tolerance (tests/module)


def precision_rows(device: str) -> List[Dict]:
    """The rule's figures for every attention variant and dtype on ``device``."""
    rows = []
    for case, args in PRECISION_ARGS.items():
        for dtype_name, dtype in DTYPES.items():
            outputs = CASES[case](*args, dtype=dtype, device=device)
            for output, (ref, stock, el) in outputs.items():
                diffs = Diffs.of(ref, stock, el, dtype)
                # fp32: stock is the reference computation itself; EL within the fp32 tolerance
                holds = diffs.el_max <= FP32_TOL if dtype == torch.float32 else diffs.holds()
                rows.append({"case": case, "output": output, "dtype": dtype_name,
                             **dataclasses.asdict(diffs), "holds": holds})  # fmt: skip
    return rows


def run_pytest(tests: Path, out: Path) -> Dict:
    """The module and model tiers' CUDA cases (the ``device`` fixture's ``cuda`` half)."""
    junit = out / "pytest.xml"
    cmd = [sys.executable, "-m", "pytest", str(tests / "module"), str(tests / "model"),
           "-m", "not slow", "-k", "cuda", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    return {"command": " ".join(cmd), "returncode": done.returncode, "summary": summary,
            "seconds": round(time.perf_counter() - start, 1), "junit": str(junit)}  # fmt: skip


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sweep(base: Config, variants: Sequence[str], seconds: float, max_batch: int) -> List[Dict]:
    """Per variant: batch 1, 2, 4, ... until out of memory, ``max_batch`` or its time share."""
    rows: List[Dict] = []
    reference: Dict[int, Dict] = {}  # batch -> the first variant's tokens and scores
    share = seconds / len(variants)
    for variant in variants:
        start, batch, stop = time.perf_counter(), 1, "max batch"
        built = build_variant(base, variant)  # once: the batch does not change the model
        while batch <= max_batch:
            config = dataclasses.replace(base, batch=batch)
            run_start = time.perf_counter()
            try:
                result = run_variant(config, variant, repeats=1, built=built)
            except OOM:
                stop = "out of memory"
                break
            finally:
                _release()
            last = time.perf_counter() - run_start
            tokens, scores = result.pop("tokens"), result.pop("scores")
            ref = reference.setdefault(batch, {"tokens": tokens, "scores": scores})
            result["identical"] = tokens == ref["tokens"]
            result["max_score_diff"] = max(abs(a - b) for s, r in zip(scores, ref["scores"])
                                           for a, b in zip(s, r))  # fmt: skip
            rows.append({"batch": batch, **result})
            batch *= 2
            if time.perf_counter() - start + 2.5 * last > share:  # the next one takes ~2x
                stop = "time budget"
                break
        rows.append({"variant": variant, "stopped": stop, "largest_batch_run": batch // 2})
        del built
        _release()
    return rows


def markdown(record: Dict) -> str:
    env = record["env"]
    lines = [f"# fairseq-el GPU check ({record['mode']})", "",
             f"{env.get('gpu', env['cpu'])}; torch {env['torch']}, fairseq {env['fairseq']}, "
             f"Python {env['python']}; {record['seconds']:.0f} s", ""]  # fmt: skip
    if record.get("pytest"):
        p = record["pytest"]
        lines += [f"pytest (CUDA cases of tests/module, tests/model): {p['summary']}", ""]
    lines += ["## |x - fp32 reference|: fp16/bf16 by the rule, fp32 within 1e-5", "",
              "| case | output | dtype | stock max | EL max | stock mean | EL mean | passes |",
              "|---|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in record["precision"]:
        lines.append(f"| {r['case']} | {r['output']} | {r['dtype']} | {r['stock_max']:.2e} | "
                     f"{r['el_max']:.2e} | {r['stock_mean']:.2e} | {r['el_mean']:.2e} | "
                     f"{'yes' if r['holds'] else 'NO'} |")  # fmt: skip
    lines += ["", f"## Benchmark: {record['benchmark_config']}", "",
              "| variant | batch | samples/s | peak memory MiB | decoding state MiB | identical |",
              "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in record["benchmark"]:
        if "stopped" in r:
            lines.append(f"| {r['variant']} | stopped after {r['largest_batch_run']}: "
                         f"{r['stopped']} | | | | |")  # fmt: skip
            continue
        lines.append(f"| {r['variant']} | {r['batch']} | {r['samples_per_s']:.3g} | "
                     f"{r['peak_memory_mib']:.0f} | "
                     f"{r['decoding_state_bytes']['total'] / (1 << 20):.4g} | "
                     f"{r['identical']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = argparse.ArgumentParser(
        prog="fairseq-el-gpu-check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shape, no pytest (CI)")
    p.add_argument("--out", type=Path, default=Path("gpu-check"))
    p.add_argument("--tests", type=Path, default=Path("tests"), help="the repository's tests/")
    p.add_argument("--bench-seconds", type=float, default=240, help="benchmark time budget")
    p.add_argument("--steps", type=int, default=16, help="decoding steps per benchmark run")
    p.add_argument("--max-batch", type=int, default=1024)
    args = p.parse_args(argv)
    start = time.perf_counter()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or use --smoke")
    device = "cpu" if args.smoke else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        torch.set_num_threads(1)
    record: Dict = {"mode": "smoke (CPU)" if args.smoke else "full (CUDA)",
                    "env": environment(device)}  # fmt: skip
    if not args.smoke:
        record["pytest"] = run_pytest(args.tests, args.out)
    record["precision"] = precision_rows(device)
    if args.smoke:
        base = Config("tiny-bart", src_len=16, batch=1, beam=4, steps=4, dtype="fp16")
        seconds, max_batch = 10.0, 4
    else:
        base = Config("bart-large", src_len=1024, batch=1, beam=4, steps=args.steps,
                      dtype="fp16", device="cuda")  # fmt: skip
        seconds, max_batch = args.bench_seconds, args.max_batch
    record["benchmark_config"] = base.describe().replace("batch 1, ", "")
    record["benchmark"] = sweep(base, VARIANTS, seconds, max_batch)
    record["seconds"] = time.perf_counter() - start
    write_json(args.out / "gpu_check.json", record)
    write_text(args.out / "gpu_check.md", markdown(record))
    print(markdown(record))
    # the benchmark's "identical" is reported only: in fp16 a near-tie may part the hypotheses
    # of random weights, which the rule (pytest tiers, precision table) judges instead
    failed = [r for r in record["precision"] if not r["holds"]]
    if failed or record.get("pytest", {}).get("returncode", 0):
        raise SystemExit(f"GPU check failed: see {args.out / 'gpu_check.md'}")
    return record
