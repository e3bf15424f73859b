"""The demo's markdown report and resource plot (matplotlib is an optional extra)."""

import platform
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import fairseq
import torch

from fairseq_el.files import atomic_write, write_text
from fairseq_el.recipes.compare import Comparison, table
from fairseq_el.recipes.prepare import SplitReport

CAVEAT = (
    "The task models are tiny (bart_base layout, 2 layers, width 64) and trained from scratch for "
    "at most a hundred updates on at most a few thousand examples, so their outputs are mostly "
    "repeated frequent words and their ROUGE/BLEU are near zero. That is expected and beside the "
    "point: EL-attention must give the same tokens, hence the same scores, as stock fairseq. With "
    "models this small the peak memory is mostly torch itself and the checkpoint load; the memory "
    "decoding takes ('RSS rise while decoding') grows with width, layers, beam, batch and source "
    "length, which the bart_base-size run (default mode only) shows."
)
MAX_SHOWN = 300  # characters of an example shown in the report


@dataclass
class TaskOutcome:
    name: str
    model: str
    splits: List[SplitReport]
    comparison: Comparison
    seconds: float
    corpus: Optional[Tuple[int, int]] = None  # fairseq-el-generate: (identical, examples)


def plot(out_dir: Path, outcomes: List[TaskOutcome]) -> Optional[Path]:
    """Bar chart of generation time and peak memory, stock vs EL; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [o.name for o in outcomes]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    panels = (
        ("generation seconds", lambda r: r.generation_seconds),
        ("RSS rise while decoding (MiB)", lambda r: r.decoding_rss_rise_mb),
    )
    for ax, (title, value) in zip(axes, panels):
        xs = range(len(names))
        ax.bar(
            [x - 0.2 for x in xs], [value(o.comparison.stock) for o in outcomes], 0.4, label="stock"
        )
        ax.bar([x + 0.2 for x in xs], [value(o.comparison.el) for o in outcomes], 0.4, label="EL")
        ax.set_xticks(list(xs), [textwrap.fill(n, 12) for n in names], fontsize=8)
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    path = out_dir / "resources.png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return path


def shorten(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + " ..."


def examples(outcome: TaskOutcome, count: int = 2) -> List[str]:
    stock, el = outcome.comparison.stock, outcome.comparison.el
    lines = []
    for i in range(min(count, len(stock.hypotheses))):
        lines += [
            f"- reference: {shorten(stock.references[i])}",
            f"  - stock: {shorten(stock.hypotheses[i])}",
            f"  - EL:    {shorten(el.hypotheses[i])}",
        ]
    return lines


def write_report(
    out_dir: Path, outcomes: List[TaskOutcome], quick: bool, dtype: str = "fp32"
) -> Path:
    """Write ``out_dir/report.md`` (atomically) for the tasks done."""
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    lines = [
        f"# fairseq-el demo ({'quick' if quick else 'default'} mode)",
        "",
        f"torch {torch.__version__}, fairseq {fairseq.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, {device}, {dtype}.",
        "",
        CAVEAT,
        "",
    ]
    for outcome in outcomes:
        lines += [f"## {outcome.name}", ""]
        lines += [f"- data: {s.summary()}" for s in outcome.splits]
        lines += [f"- model: {outcome.model}; task total {outcome.seconds:.0f} s"]
        if outcome.corpus is not None:
            same, total = outcome.corpus
            lines += [
                f"- `fairseq-el-generate` (JSONL, EL): {same} of {total} best hypotheses "
                "identical to fairseq-generate's"
            ]
        lines += ["", "```", table(outcome.comparison), "```", "", "Examples:", ""]
        lines += examples(outcome) + [""]
    figure = plot(out_dir, outcomes)
    if figure is None:
        lines.append("(No plot: matplotlib is not installed; `pip install fairseq-el[plot]`.)")
    else:
        lines.append(f"![stock vs EL: time and memory]({figure.name})")
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
