"""The demo: on the shipped real samples, train a small model per task, generate stock and EL.

For XSum (100 pairs), CNN/DM (20 stories) and SQuAD QG (Du et al. split) it prepares the data,
trains a tiny BART with the task's fine-tuning recipe at toy scale, generates with the task's
settings stock and EL, and writes ``<out>/report.md`` after every task. Scores of such small models
are low; the point is that EL's hypotheses and scores equal stock's, and what each costs.
"""

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from fairseq.data import Dictionary

from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.manifest import RunDir
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.recipes import compare, finetune, prepare, report, runner, sources
from fairseq_el.recipes.config import TaskConfig, load_config
from fairseq_el.recipes.paths import RUNS_DIR
from fairseq_el.recipes.sources import Pair
from fairseq_el.testing import build_translation_model

TOY_MAX_TOKENS = 1024  # per update: the 50k-word softmax dominates a tiny model's cost


@dataclass(frozen=True)
class DemoTask:
    name: str  # configs/<name>.yaml
    read: Callable[[], List[Pair]]
    splits: str  # prepare.split_by_spec spec
    updates: int


def demo_tasks(quick: bool, root: Path = DATA_DIR) -> List[DemoTask]:
    """The three tasks on the samples under ``root``, smaller and shorter-trained with ``quick``."""
    return [
        DemoTask(
            "xsum",
            lambda: sources.read_line_pairs(
                root / "xsum_pyrxsum/documents.txt", root / "xsum_pyrxsum/references.txt"
            ),
            "test:4,train:rest" if quick else "test:10,train:rest",
            10 if quick else 40,
        ),
        DemoTask(
            "cnndm",
            lambda: sources.read_stories([root / "cnndm_allennlp_stories/cnn_stories"]),
            "test:2,train:rest" if quick else "test:4,train:rest",
            10 if quick else 40,
        ),
        DemoTask(
            "squad_qg",
            lambda: sources.read_line_pairs(
                root / "squad_qg_du2017/src-test.txt", root / "squad_qg_du2017/tgt-test.txt"
            ),
            "test:8,train:400" if quick else "test:20,train:2000",
            10 if quick else 40,
        ),
    ]


def run_task(
    task: DemoTask, out_dir: Path, threads: int, run: RunDir, dtype: str = "fp32"
) -> report.TaskOutcome:
    """Prepare, train, compare one task (generation in ``dtype``); everything under
    ``out_dir/<task>``, resumable."""
    config = load_config(task.name)
    work = out_dir / task.name
    start = time.perf_counter()
    splits = prepare.split_by_spec(task.read(), task.splits)
    reports = prepare.prepare(
        splits, work / "data", config.max_source_positions, config.max_target_positions
    )
    step = f"{task.name}/train"
    if run.is_done(step):
        checkpoint = Path(run.record(step))
    else:
        shutil.rmtree(work / "model", ignore_errors=True)  # never continue a half-trained model
        argv = finetune.finetune_argv(
            config,
            work / "data",
            work / "model",
            toy_updates=task.updates,
            toy_max_tokens=TOY_MAX_TOKENS,
        )
        checkpoint = finetune.train(argv, threads=threads)
        run.done(step, str(checkpoint))
    settings = runner.Settings(batch_size=32, dtype=dtype)
    comparison = compare.compare(
        config, checkpoint, work / "data", work / "generate", settings, threads
    )
    step = f"{task.name}/corpus"
    if not run.is_done(step):
        jsonl = corpus_generate(config, checkpoint, work / "data", work / "corpus", threads, dtype)
        run.done(step, identical_best(jsonl, comparison.el.hypotheses))
    model = f"tiny bart_base trained for {task.updates} updates"
    return finish(task.name, model, reports, comparison, start, tuple(run.record(step)))


def corpus_generate(
    config: TaskConfig,
    checkpoint: Path,
    data: Path,
    out_dir: Path,
    threads: int,
    dtype: str = "fp32",
) -> Path:
    """The test split through ``fairseq-el-generate`` (EL, JSONL): what a user runs on a corpus."""
    argv = runner.generate_argv(
        config, checkpoint, data, out_dir, True, runner.Settings(dtype=dtype)
    )
    at = argv.index("--results-path")
    del argv[at : at + 2]  # fairseq-generate's log file: the JSONL replaces it
    jsonl = out_dir / "test.jsonl"
    shutil.rmtree(out_dir, ignore_errors=True)  # the parts of an interrupted attempt
    out_dir.mkdir(parents=True)
    command = [sys.executable, "-m", "fairseq_el.generate.cli", *argv, "--output", str(jsonl)]
    print("fairseq-el-generate " + shlex.join(command[3:]), flush=True)
    subprocess.run(command, check=True, env=runner.thread_env(threads), stdout=subprocess.DEVNULL)
    return jsonl


def identical_best(jsonl: Path, hypotheses: List[str]) -> Tuple[int, int]:
    """How many JSONL best hypotheses equal ``hypotheses`` (fairseq-generate's D- lines), of all."""
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    best = {r["id"]: r["hypotheses"][0]["text"] for r in map(json.loads, lines)}
    return sum(best.get(i) == h for i, h in enumerate(hypotheses)), len(hypotheses)


def run_scale(
    out_dir: Path, threads: int, root: Path = DATA_DIR, examples: int = 4, dtype: str = "fp32"
) -> report.TaskOutcome:
    """Resources at a real model size: a full-size bart_base, untrained, on CNN/DM sources.

    Stock fairseq caches every decoder layer's projected encoder keys and values (stock BART once
    per sentence, the stock Transformer once per beam); EL keeps only the encoder output, once
    per sentence. Random weights never end a summary early, so every
    hypothesis runs to max-len-b: the work is the same as a trained model's longest case.
    """
    config, work, start = load_config("cnndm"), out_dir / "cnndm_bart_base", time.perf_counter()
    decoded = root / "cnndm_fastseq_bin/derived_decoded"
    pairs = sources.read_line_pairs(decoded / "valid.source", decoded / "valid.target")
    reports = prepare.prepare({"test": pairs[:examples]}, work / "data")
    checkpoint = work / "bart_base_random.pt"
    if not checkpoint.is_file():
        dictionary = Dictionary.load(str(BPE_DIR / "dict.txt"))
        model, _, args = build_translation_model("bart_base", dictionary, seed=0)
        save_checkpoint(model, args, str(checkpoint))
    settings = runner.Settings(batch_size=examples, dtype=dtype)
    comparison = compare.compare(
        config, checkpoint, work / "data", work / "generate", settings, threads
    )
    return finish(
        "cnndm at bart_base size", "bart_base (140M), random weights", reports, comparison, start
    )


def finish(
    name: str,
    model: str,
    reports: List[prepare.SplitReport],
    comparison: compare.Comparison,
    start: float,
    corpus: Optional[Tuple[int, int]] = None,
) -> report.TaskOutcome:
    """Print the task's table and examples; package its outcome for the report."""
    seconds = time.perf_counter() - start
    outcome = report.TaskOutcome(name, model, reports, comparison, seconds, corpus)
    print(f"\n== {name} ==\n{compare.table(comparison)}", flush=True)
    print("\n".join(report.examples(outcome)) + "\n", flush=True)
    return outcome


def run_demo(
    quick: bool,
    out_dir: Path = RUNS_DIR / "demo",
    threads: int = 1,
    root: Path = DATA_DIR,
    overwrite: bool = False,
    dtype: str = "fp32",
) -> Path:
    """Run every task (and, unless ``quick``, the bart_base-size run), generating in ``dtype``;
    the report comes last.

    ``out_dir`` holds one demo run (its manifest says which and what is done): the same demo
    again resumes what is missing; another one is refused unless ``overwrite``.
    """
    settings = {"quick": quick, "dtype": dtype}
    run = RunDir(Path(out_dir), "demo", settings, {"data": Path(root)}, overwrite)
    outcomes = [run_task(task, run.path, threads, run, dtype) for task in demo_tasks(quick, root)]
    if not quick:
        outcomes.append(run_scale(run.path, threads, root, dtype=dtype))
    path = report.write_report(run.path, outcomes, quick, dtype)
    outputs = [path.name] + [p.name for p in run.path.glob("*.png")]
    run.finish(outputs)
    print(f"report: {path}", flush=True)
    return path
