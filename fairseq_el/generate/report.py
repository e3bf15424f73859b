"""Rank 0's progress bar (totals over ranks, read from the part files) and the final summary."""

import json
import resource
import sys
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tqdm import tqdm

from fairseq_el.accounting import GIB
from fairseq_el.generate.runner import Stats
from fairseq_el.generate.source import read_lines
from fairseq_el.metrics import bleu, rouge


class Progress:
    """Examples/s and ETA over every rank: counts the lines the ranks' parts have gained."""

    def __init__(self, parts: Sequence[Path], total: int, enabled: bool) -> None:
        self.offsets = {path: 0 for path in parts}
        self.bar = tqdm(
            total=total,
            unit="ex",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            desc="generate",
        )
        self.enabled = enabled

    def refresh(self) -> None:
        if not self.enabled:
            return
        for path, offset in self.offsets.items():
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            self.offsets[path] = offset + len(data)
            self.bar.update(data.count(b"\n"))

    def close(self) -> None:
        self.refresh()
        self.bar.close()


def peak_memory(stats: Stats) -> Dict[str, Any]:
    if stats.peak_bytes:
        return {"peak_memory_gib": stats.peak_bytes / GIB, "peak_memory_of": "CUDA allocator"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_memory_gib": rss / GIB, "peak_memory_of": "process RSS"}


def summary(
    ranks_stats: List[Dict[str, Any]], examples: int, resumed: int, settings: Dict[str, Any]
) -> Dict[str, Any]:
    """Totals over ranks: what was generated, how fast, with what batch, skipped what."""
    stats = [
        Stats(**{k: v for k, v in s.items() if k in Stats.__annotations__}) for s in ranks_stats
    ]
    seconds = max((s.seconds for s in stats), default=0.0)
    generated = sum(s.generated for s in stats)
    tokens = sum(s.tokens for s in stats)
    skipped: Dict[str, List[int]] = {}
    for s in stats:
        for reason, ids in s.skipped.items():
            skipped.setdefault(reason, []).extend(ids)
    batches: Dict[str, Any] = {}
    for s in stats:
        batches.update(s.batches)
    return {
        "examples": examples,
        "generated": generated,
        "resumed": resumed,
        "skipped": {reason: sorted(ids) for reason, ids in skipped.items()},
        "truncated_sources": sum(s.truncated for s in stats),
        "seconds": seconds,
        "examples_per_s": generated / seconds if seconds else 0.0,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "batch": batches,
        "out_of_memory_retries": sum(s.out_of_memory for s in stats),
        "compile_graphs": sum(s.compile_graphs for s in stats),
        "compile_seconds": max((s.compile_seconds for s in stats), default=0.0),
        "peak_memory_gib": max(s["peak_memory_gib"] for s in ranks_stats),
        "peak_memory_of": ranks_stats[0]["peak_memory_of"],
        **settings,
    }


def score(output: Path, references: str, metric: str) -> Dict[str, Any]:
    """The best hypothesis of every record against its reference line (empty if skipped)."""
    refs = read_lines(references, "--references")
    with open(output, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    best = [r["hypotheses"][0]["text"] if r["hypotheses"] else "" for r in records]
    if metric == "bleu":
        return {"bleu": bleu(best, refs), "references": references, "scorer": scorer(metric)}
    return {**rouge(best, refs), "references": references, "scorer": scorer(metric)}


def scorer(metric: str) -> Dict[str, str]:
    """What produced the scores: implementation, version and settings (docs/generate.md says
    how they relate to files2rouge, the paper's scorer)."""
    if metric == "bleu":
        import sacrebleu
        from sacrebleu.metrics import BLEU

        # fairseq_el.metrics.bleu is sacrebleu.corpus_bleu with these settings, one reference
        signature = BLEU(tokenize="13a")
        signature.corpus_score(["a"], [["a"]])
        return {
            "implementation": "sacrebleu",
            "version": sacrebleu.__version__,
            "signature": str(signature.get_signature()),
            "settings": "corpus BLEU, detokenized text, one reference each",
        }
    return {
        "implementation": "rouge-score",
        "version": version("rouge-score"),
        "settings": "F1 x 100, plain mean over examples (no bootstrap); Porter stemming; "
        "no stopword removal; rougeLsum on sentences split by "
        "fairseq_el.metrics.split_sentences (not nltk), one per line",
    }


def describe(summary_: Dict[str, Any], output: Path, summary_path: Optional[Path]) -> str:
    s = summary_
    lines = [
        f"wrote {output}: {s['examples']} examples ({s['generated']} generated, {s['resumed']} "
        f"resumed) in {s['seconds']:.1f}s, {s['examples_per_s']:.2f} examples/s, "
        f"{s['tokens_per_s']:.1f} tokens/s",
        f"batch {s['batch']}, peak memory {s['peak_memory_gib']:.2f} GiB "
        f"({s['peak_memory_of']}), {s['attention']}, world size {s['world_size']}, "
        f"{s['device']} {s['dtype']}",
    ]
    if s.get("compile") not in (None, "none"):
        lines.append(
            f"--compile {s['compile']}: {s['compile_graphs']} graphs compiled in "
            f"{s['compile_seconds']:.1f}s of the {s['seconds']:.1f}s (decoding "
            f"{s['seconds'] - s['compile_seconds']:.1f}s)"
        )
    for reason, ids in s["skipped"].items():
        lines.append(f"skipped {len(ids)} examples ({reason}): ids {ids[:20]}")
    if s["truncated_sources"]:
        lines.append(f"{s['truncated_sources']} sources truncated (--truncate-source)")
    if "scores" in s:
        shown = ", ".join(
            f"{k} {v:.2f}" for k, v in s["scores"].items() if k not in ("references", "scorer")
        )
        by = s["scores"]["scorer"]
        how = by.get("signature") or by["settings"]
        lines.append(
            f"scores against {s['scores']['references']}: {shown} "
            f"({by['implementation']} {by['version']}: {how})"
        )
    if "verify" in s:
        v = s["verify"]
        verdict = "passed" if v["passed"] else "FAILED"
        lines.append(
            f"verify: {v['identical']}/{v['examples']} identical hypotheses vs stock "
            f"fairseq, largest score difference {v['max_score_diff']:.2e}: {verdict} "
            f"({v['rule']})"
        )
    if summary_path is not None:
        lines.append(f"summary: {summary_path}")
    return "\n".join(lines)


def as_dict(stats: Stats) -> Dict[str, Any]:
    return {**asdict(stats), **peak_memory(stats)}
