"""The demo: on the shipped real samples, train a small model per task, generate stock and EL.

For XSum (100 pairs), CNN/DM (20 stories) and SQuAD QG (Du et al. split) it prepares the data,
trains a tiny BART with the task's fine-tuning recipe at toy scale, generates with the task's
settings stock and EL, and writes ``<out>/report.md`` after every task. Scores of such small models
are low; the point is that EL's hypotheses and scores equal stock's, and what each costs.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

from fairseq_el.recipes import compare, finetune, prepare, report, sources
from fairseq_el.recipes.config import load_config
from fairseq_el.recipes.paths import DATA_DIR, RUNS_DIR
from fairseq_el.recipes.sources import Pair


@dataclass(frozen=True)
class DemoTask:
    name: str  # configs/<name>.yaml
    read: Callable[[], List[Pair]]
    splits: str  # prepare.split_pairs spec
    updates: int
    max_tokens: int  # per update; the 50k-word softmax dominates a tiny model's cost


def demo_tasks(quick: bool) -> List[DemoTask]:
    """The three tasks, smaller and shorter-trained with ``quick``."""
    return [
        DemoTask(
            "xsum",
            lambda: sources.read_line_pairs(
                DATA_DIR / "xsum_pyrxsum/documents.txt", DATA_DIR / "xsum_pyrxsum/references.txt"
            ),
            "test:4,train:rest" if quick else "test:10,train:rest",
            10 if quick else 100,
            1024 if quick else 2048,
        ),
        DemoTask(
            "cnndm",
            lambda: sources.read_stories([DATA_DIR / "cnndm_allennlp_stories/cnn_stories"]),
            "test:2,train:rest" if quick else "test:4,train:rest",
            10 if quick else 100,
            1024 if quick else 2048,
        ),
        DemoTask(
            "squad_qg",
            lambda: sources.read_line_pairs(
                DATA_DIR / "squad_qg_du2017/src-test.txt", DATA_DIR / "squad_qg_du2017/tgt-test.txt"
            ),
            "test:8,train:1000" if quick else "test:20,train:6000",
            10 if quick else 100,
            1024 if quick else 2048,
        ),
    ]


def run_task(task: DemoTask, out_dir: Path, threads: int) -> report.TaskOutcome:
    """Prepare, train, compare one task; everything under ``out_dir/<task>``."""
    config = load_config(task.name)
    work = out_dir / task.name
    start = time.perf_counter()
    splits = prepare.split_pairs(task.read(), task.splits)
    reports = prepare.prepare(
        splits, work / "data", config.max_source_positions, config.max_target_positions
    )
    argv = finetune.finetune_argv(
        config,
        work / "data",
        work / "model",
        toy_updates=task.updates,
        toy_max_tokens=task.max_tokens,
    )
    checkpoint = finetune.train(argv, threads=threads)
    comparison = compare.compare(
        config, checkpoint, work / "data", work / "generate", batch_size=32, threads=threads
    )
    print(f"\n== {task.name} ==\n{compare.table(comparison)}\n", flush=True)
    return report.TaskOutcome(
        task.name, task.updates, reports, comparison, time.perf_counter() - start
    )


def run_demo(quick: bool, out_dir: Path = RUNS_DIR / "demo", threads: int = 1) -> Path:
    """Run every task, rewriting the report after each; return the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: List[report.TaskOutcome] = []
    for task in demo_tasks(quick):
        outcomes.append(run_task(task, out_dir, threads))
        path = report.write_report(out_dir, outcomes, quick)
    print(f"report: {path}", flush=True)
    return path
