"""Where one generate call spends its CPU time: the share of cache copies, per variant.

    python experiments/copy_profile.py --shape bart-large --src-len 256 --batch 4 --beam 4 \\
        --steps 128 --threads 2 --variants stock-per-sentence,el,el-sa

One warm-up, then one ``task.inference_step`` under ``torch.profiler`` per variant (seeded weights,
forced steps, as ``fairseq-el-benchmark``). Prints the profiled seconds and the share of the
operators that copy decoding state (``aten::cat``, ``aten::index_select``, ``aten::index``,
``aten::gather``, ``aten::copy_``) in self CPU time, and whether the tokens equal the first
variant's.

A finished experiment, outside the wheel: its output at the issue's setting is recorded in
``docs/log/2026-12.md``. (Not named ``profile.py``: run as a script, that would shadow the
standard library's ``profile``, which ``cProfile`` imports.)
"""

import argparse
from typing import Dict, List, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from fairseq_el.bench.models import VARIANTS, build_variant, synthetic_sample
from fairseq_el.bench.runner import hypotheses
from fairseq_el.bench.shapes import SHAPES, Config
from fairseq_el.testing import generation_args

COPY_OPS = ("aten::cat", "aten::index_select", "aten::index", "aten::gather", "aten::copy_")


def profile_variant(config: Config, variant: str) -> Dict:
    """Self-CPU shares of :data:`COPY_OPS` in one profiled generate call, and its tokens."""
    model, task = build_variant(config, variant)
    lm = SHAPES[config.shape].is_lm
    dictionary = task.dictionary if lm else task.source_dictionary
    sample = synthetic_sample(config, len(dictionary), dictionary.eos(), lm)
    generator = task.build_generator([model], generation_args(config.generation_argv(lm=lm)))

    def run():
        torch.manual_seed(config.seed)
        with torch.no_grad():
            return task.inference_step(generator, [model], sample)

    run()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {op: 0.0 for op in COPY_OPS}
    for e in events:
        if e.key in shares:
            shares[e.key] = e.self_cpu_time_total / total
    return {"variant": variant, "seconds": total / 1e6, "shares": shares, "tokens": hypotheses(out)}


def main(argv: Sequence[str] = ()) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", required=True, choices=sorted(SHAPES))
    p.add_argument("--src-len", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--beam", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--search", default="beam")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="stock-per-sentence,el,el-sa")
    p.add_argument("--model-option", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args(list(argv) or None)
    torch.set_num_threads(args.threads)
    config = Config(
        args.shape,
        args.src_len,
        args.batch,
        args.beam,
        args.steps,
        search=args.search,
        model_options=tuple(args.model_option),
    )
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    rows = [profile_variant(config, v) for v in variants]
    print(f"{config.describe()}, {args.threads} threads")
    for row in rows:
        copies = sum(row["shares"].values())
        detail = " ".join(f"{op[6:]} {share:5.1%}" for op, share in row["shares"].items())
        same = row["tokens"] == rows[0]["tokens"]
        print(
            f"{row['variant']:>20}: {row['seconds']:7.2f} s profiled, copies {copies:5.1%} "
            f"({detail}), tokens identical: {same}"
        )
    return rows


if __name__ == "__main__":
    main()
