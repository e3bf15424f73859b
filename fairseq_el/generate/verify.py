"""``--verify N``: N examples generated again with stock fairseq, compared with the output.

After the run, rank 0 loads the same checkpoint as stock fairseq (``--stock``), generates the
first N examples that have hypotheses (or, with ``--verify-sample``, N drawn with ``--seed``)
with the run's options, and compares every hypothesis:

* fp32: the same tokens, scores within :data:`FP32_SCORE_TOL`;
* fp16/bf16: EL reorders rounded operations, so the project's rule applies (as in its tests,
  after flash-attention's): an fp32 stock run of the same examples is the reference, and an
  example passes when its hypotheses equal stock's in the same precision, or when EL's best
  score is no farther from the reference's than twice stock's distance plus half an ulp
  (:func:`within_rule`): rounding may part a near-tie, but not move EL further from exact than
  stock.
"""

import argparse
import copy
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from fairseq_el.generate.ranks import Ranks
from fairseq_el.generate.runner import Generation, Stats
from fairseq_el.generate.source import Sources
from fairseq_el.rounding import half_ulp

FP32_SCORE_TOL = 1e-4  # the project's fp32 tolerance on scores (tests: SCORE_TOL)
EXIT_DIFFERS = 3  # exit status of a run whose --verify found a difference
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # --fp16 / --bf16


def within_rule(stock: float, el: float, reference: float, dtype: str) -> bool:
    """The low-precision rule on one score: EL is at most twice as far from the fp32
    ``reference`` as stock in the same precision, plus half an ulp."""
    return abs(el - reference) <= 2 * abs(stock - reference) + half_ulp(DTYPES[dtype], reference)


class Lines:
    """A writer that keeps the records (``Generation.run`` writes through it)."""

    def __init__(self) -> None:
        self.records: Dict[int, Dict[str, Any]] = {}

    def write(self, lines) -> None:
        for line in lines:
            record = json.loads(line)
            self.records[record["id"]] = record


@dataclass
class Verdict:
    examples: int
    identical: int
    max_score_diff: float
    rule: str
    passed: bool
    ids: List[int]
    first_difference: Optional[str] = None


def pick(records: Dict[int, Dict[str, Any]], n: int, sample: bool, seed: int) -> List[int]:
    """The ids to verify: the first ``n`` with hypotheses, or ``n`` drawn with ``seed``."""
    ids = [i for i, r in records.items() if r["hypotheses"]]
    if sample:
        return sorted(random.Random(seed).sample(ids, min(n, len(ids))))
    return ids[:n]


def regenerate(
    args: argparse.Namespace, raw: Optional[Sources], ids: List[int], fp32: bool = False
) -> Dict[int, Dict[str, Any]]:
    """Records of ``ids`` from stock fairseq with the run's options (``fp32``: in fp32)."""
    a = copy.copy(args)
    a.stock, a.resume = True, False
    a.num_workers = 0  # a few examples: no loader processes (each would take seconds to stop)
    if fp32:
        a.fp16 = a.bf16 = False
    if a.batch_auto:  # stock's own batch is not the point here: a fixed one
        a.batch_auto, a.batch_size, a.max_tokens = False, min(16, len(ids)), None
    gen = Generation(a, Ranks())
    dataset, id_of, indices = gen.examples(raw).dataset(ids)
    out = Lines()
    gen.run(dataset, id_of, indices, out, None, lambda: None, Stats())
    del gen
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out.records


def describe_difference(example_id: int, el: Dict[str, Any], stock: Dict[str, Any]) -> str:
    who = f"example {example_id}" + (f" (user id {el['user_id']!r})" if "user_id" in el else "")
    for rank, (a, b) in enumerate(zip(el["hypotheses"], stock["hypotheses"])):
        if a["tokens"] != b["tokens"] or abs(a["score"] - b["score"]) > FP32_SCORE_TOL:
            return (
                f"{who}, hypothesis {rank + 1}: EL {a['text']!r} (score {a['score']:.6f}) "
                f"!= stock {b['text']!r} (score {b['score']:.6f})"
            )
    return f"{who}: EL has {len(el['hypotheses'])} hypotheses, stock {len(stock['hypotheses'])}"


def verify(args: argparse.Namespace, raw: Optional[Sources], output: Path) -> Verdict:
    """Stock fairseq on the chosen examples of ``output``, compared (see the module's rule)."""
    with open(output, encoding="utf-8") as f:
        ours = {r["id"]: r for r in map(json.loads, f)}
    ids = pick(ours, args.verify, args.verify_sample, args.seed or 0)
    stock = regenerate(args, raw, ids)
    dtype = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    reference = regenerate(args, raw, ids, fp32=True) if dtype != "fp32" else None
    identical, max_diff, first, passed = 0, 0.0, None, True
    for i in ids:
        el, st = ours[i]["hypotheses"], stock[i]["hypotheses"]
        same = len(el) == len(st) and all(a["tokens"] == b["tokens"] for a, b in zip(el, st))
        if same:
            diffs = [abs(a["score"] - b["score"]) for a, b in zip(el, st)]
            max_diff = max([max_diff, *diffs])
        ok = same and (dtype != "fp32" or max(diffs, default=0.0) <= FP32_SCORE_TOL)
        if not ok and reference is not None:  # a near-tie parted by rounding passes the rule
            ref = reference[i]["hypotheses"][0]["score"]
            ok = within_rule(st[0]["score"], el[0]["score"], ref, dtype)
        identical += same
        if not ok and first is None:
            first = describe_difference(i, ours[i], stock[i])
        passed = passed and ok
    rule = (
        f"same tokens, scores within {FP32_SCORE_TOL:g}"
        if dtype == "fp32"
        else f"{dtype}: same tokens as stock {dtype}, or EL's best score at most twice as far "
        "from an fp32 stock run's as stock's, plus half an ulp"
    )
    return Verdict(len(ids), identical, max_diff, rule, passed, ids, first)


def as_summary(verdict: Verdict) -> Dict[str, Any]:
    out = asdict(verdict)
    out["against"] = "stock fairseq, same checkpoint and options"
    return out
