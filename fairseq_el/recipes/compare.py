"""Stock vs EL on the same checkpoint, data and settings: scores side by side, differing outputs.

EL-attention is lossless, so in fp32 the expected number of differing hypotheses is 0 and the
scores are equal; what may differ is time and memory. In fp16/bf16 EL reorders rounded operations,
so a near-tie may part a hypothesis: there every score of EL must equal stock's within
:data:`METRIC_TOL`.
"""

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from fairseq_el.files import write_json
from fairseq_el.manifest import RunDir
from fairseq_el.recipes import runner
from fairseq_el.recipes.config import TaskConfig
from fairseq_el.recipes.runner import DEFAULTS, RunResult, Settings
from fairseq_el.tables import text_table
from fairseq_el.testing.precision import METRIC_TOL


@dataclass
class Comparison:
    stock: RunResult
    el: RunResult

    @property
    def differing(self) -> int:
        """How many examples got a different hypothesis from EL than from stock."""
        return sum(a != b for a, b in zip(self.stock.hypotheses, self.el.hypotheses))

    @property
    def agrees(self) -> bool:
        """fp32: no differing hypothesis; fp16/bf16: every score within :data:`METRIC_TOL`."""
        if self.stock.dtype == "fp32":
            return self.differing == 0
        return all(abs(v - self.el.scores[k]) <= METRIC_TOL for k, v in self.stock.scores.items())


def run_dir(
    kind: str,
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    settings: Dict[str, Any],
    overwrite: bool,
) -> RunDir:
    """The run directory of a run-task or compare run: resumed when the same run is repeated;
    ``settings`` go to its manifest."""
    inputs = {"checkpoint": Path(checkpoint), "data": Path(data_dir)}
    if config.path is not None:
        inputs["config"] = Path(config.path)
    return RunDir(out_dir, kind, settings, inputs, overwrite)


def generate(
    run: RunDir,
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    el: bool,
    settings: Settings,
    threads: Optional[int],
) -> RunResult:
    """One mode (stock or EL) of ``run``: reloaded if a previous attempt completed it."""
    mode = "el" if el else "stock"
    result_file = run.path / mode / "result.json"
    if run.is_done(mode) and result_file.is_file():
        return RunResult(**json.loads(result_file.read_text(encoding="utf-8")))
    shutil.rmtree(run.path / mode, ignore_errors=True)  # what an interrupted attempt left
    result = runner.run(config, checkpoint, data_dir, run.path, el, settings, threads=threads)
    write_json(result_file, asdict(result))
    run.done(mode)
    return result


def run_one(
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    el: bool,
    settings: Settings = DEFAULTS,
    threads: Optional[int] = None,
    overwrite: bool = False,
) -> RunResult:
    """One run-task run, stock or EL, into ``out_dir/<mode>``; resumable, never mixed."""
    recorded = {**asdict(settings), "el": el}
    run = run_dir("run-task", config, checkpoint, data_dir, out_dir, recorded, overwrite)
    result = generate(run, config, checkpoint, data_dir, el, settings, threads)
    run.finish([f"{result.mode}/hypotheses.txt", f"{result.mode}/result.json"])
    return result


def compare(
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    settings: Settings = DEFAULTS,
    threads: Optional[int] = None,
    overwrite: bool = False,
) -> Comparison:
    """Run stock, then EL; ``out_dir/comparison.json`` is written once both are done."""
    run = run_dir("compare", config, checkpoint, data_dir, out_dir, asdict(settings), overwrite)
    stock = generate(run, config, checkpoint, data_dir, False, settings, threads)
    el = generate(run, config, checkpoint, data_dir, True, settings, threads)
    result = Comparison(stock, el)
    record = {
        "stock": asdict(stock),
        "el": asdict(el),
        "differing": result.differing,
        "agrees": result.agrees,
    }
    write_json(run.path / "comparison.json", record)
    run.finish(["comparison.json", "stock/hypotheses.txt", "el/hypotheses.txt"])
    return result


def table(comparison: Comparison) -> str:
    """A plain-text table: every score, time and memory, stock | EL."""
    stock, el = comparison.stock, comparison.el

    def row(name: str, fmt: str, value: Callable[[RunResult], float]) -> Tuple[str, str, str]:
        return name, format(value(stock), fmt), format(value(el), fmt)

    rows = [row(name, ".2f", lambda r, name=name: r.scores[name]) for name in stock.scores]
    rows += [
        row("generation s (fairseq timer)", ".1f", lambda r: r.generation_seconds),
        row("load + generate s", ".1f", lambda r: r.seconds),
        row("peak RSS MiB", ".0f", lambda r: r.peak_rss_mb),
        row("peak RSS above import MiB", ".0f", lambda r: r.peak_rss_mb - r.baseline_rss_mb),
        row("RSS rise while decoding MiB", ".0f", lambda r: r.decoding_rss_rise_mb),
    ]
    lines = [text_table(["", "stock", "EL"], rows)]
    differing = f"differing hypotheses: {comparison.differing} of {len(stock.hypotheses)}"
    if stock.dtype == "fp32":
        lines.append(f"{differing} (expected 0)")
    else:
        verdict = "yes" if comparison.agrees else "NO"
        lines.append(
            f"{differing} ({stock.dtype}: rounding may part near-ties); "
            f"every score within {METRIC_TOL}: {verdict}"
        )
    return "\n".join(lines)
