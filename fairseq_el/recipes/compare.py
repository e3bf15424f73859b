"""Stock vs EL on the same checkpoint, data and settings: scores side by side, differing outputs.

EL-attention is lossless, so the expected number of differing hypotheses is 0 and the scores are
equal; what may differ is time and memory.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from fairseq_el.recipes import runner
from fairseq_el.recipes.config import TaskConfig
from fairseq_el.recipes.runner import RunResult


@dataclass
class Comparison:
    stock: RunResult
    el: RunResult

    @property
    def differing(self) -> int:
        """How many examples got a different hypothesis from EL than from stock."""
        return sum(a != b for a, b in zip(self.stock.hypotheses, self.el.hypotheses))


def compare(
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    subset: str = "test",
    variant: Optional[str] = None,
    batch_size: int = 16,
    threads: Optional[int] = None,
) -> Comparison:
    """Run stock, then EL; write ``out_dir/comparison.json`` with both runs."""
    same = dict(subset=subset, variant=variant, batch_size=batch_size, threads=threads)
    stock = runner.run(config, checkpoint, data_dir, out_dir, el=False, **same)
    el = runner.run(config, checkpoint, data_dir, out_dir, el=True, **same)
    result = Comparison(stock, el)
    record = {"stock": asdict(stock), "el": asdict(el), "differing": result.differing}
    (Path(out_dir) / "comparison.json").write_text(json.dumps(record, indent=1), "utf-8")
    return result


def table(comparison: Comparison) -> str:
    """A plain-text table: every score, time and memory, stock | EL."""
    stock, el = comparison.stock, comparison.el
    rows: List[tuple] = [(name, f"{stock.scores[name]:.2f}", f"{el.scores[name]:.2f}")
                         for name in stock.scores]  # fmt: skip
    rows += [
        ("generation s (fairseq timer)", f"{stock.generation_seconds:.1f}",
         f"{el.generation_seconds:.1f}"),
        ("load + generate s", f"{stock.seconds:.1f}", f"{el.seconds:.1f}"),
        ("peak RSS MiB", f"{stock.peak_rss_mb:.0f}", f"{el.peak_rss_mb:.0f}"),
        ("peak RSS above import MiB", f"{stock.peak_rss_mb - stock.baseline_rss_mb:.0f}",
         f"{el.peak_rss_mb - el.baseline_rss_mb:.0f}"),
        ("RSS rise while decoding MiB", f"{stock.decoding_rss_rise_mb:.0f}",
         f"{el.decoding_rss_rise_mb:.0f}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'stock':>8}  {'EL':>8}"]
    lines += [f"{name:{width}}  {a:>8}  {b:>8}" for name, a, b in rows]
    lines.append(
        f"differing hypotheses: {comparison.differing} of {len(stock.hypotheses)} (expected 0)"
    )
    return "\n".join(lines)
