"""One fairseq-generate run of a task config, stock or EL, detokenized and scored.

"With EL" keeps the checkpoint as it is and passes ``--user-dir`` plus
``--model-overrides "{'arch': 'el_<arch>', '_name': 'el_<arch>'}"``. fairseq 0.12 honours that for
both checkpoint layouts (``args`` from older fairseq, ``cfg`` from fairseq-train 0.12): it sets the
arch before building the model. The run records the class it loaded (:mod:`.measure`) and fails if
it is not the one asked for. Stock runs get ``--user-dir`` too, so both use the same fairseq fixes.

Precision (``dtype``): fp16 passes fairseq-generate's ``--fp16``. fairseq-generate has no bf16
inference (it parses ``--bf16``, a training option, and ignores it), so for bf16 the runner passes
``--bf16`` and its child (:mod:`.measure`) casts the models to bfloat16 as they load, stock and EL
alike, where ``--fp16`` would halve them.
"""

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

import fairseq_el
from fairseq_el.bench.precision import DTYPES
from fairseq_el.convert.checkpoint import checkpoint_arch, load_checkpoint
from fairseq_el.files import write_text
from fairseq_el.metrics import bleu, rouge
from fairseq_el.models.architectures import el_arch, stock_arch
from fairseq_el.paths import BPE_DIR
from fairseq_el.recipes.bpe import GPT2BPE
from fairseq_el.recipes.config import TaskConfig, option_args
from fairseq_el.recipes.paths import require_file
from fairseq_el.recipes.qg_metrics import qg_scores


@dataclass(frozen=True)
class Settings:
    """How a task's split is generated, beyond the task config: what a run's manifest records.

    ``cpu``: pass ``--cpu``; ``None`` passes it only where torch sees no CUDA device. ``dtype``: a
    name of :data:`~fairseq_el.bench.precision.DTYPES`; fp16 and bf16 add ``--fp16`` / ``--bf16``.
    """

    subset: str = "test"
    variant: Optional[str] = None  # a variant of the config (e.g. greedy, diverse)
    batch_size: int = 16
    cpu: Optional[bool] = None
    dtype: str = "fp32"


DEFAULTS = Settings()


@dataclass
class RunResult:
    mode: str  # "stock" or "el"
    hypotheses: List[str]
    references: List[str]
    scores: Dict[str, float]
    seconds: float  # fairseq-generate's main: loading, encoding, decoding
    generation_seconds: float  # fairseq's own generation timer ("Translated ... in Xs")
    peak_rss_mb: float
    baseline_rss_mb: float  # RSS once torch and fairseq are imported, before loading anything
    decoding_rss_rise_mb: float  # RSS rise while generating, above the RSS before the first batch
    model_classes: List[str]
    command: List[str] = field(default_factory=list)
    dtype: str = "fp32"


def thread_env(threads: Optional[int]) -> Dict[str, str]:
    """The environment for a child: glibc returns big freed blocks; ``threads`` if given.

    On a small shared machine torch's default (one thread per core) can be several times slower
    than one thread, as the threads wait for each other; the demo and tests ask for 1.
    """
    # freed blocks of 128 KiB or more go back to the system, so RSS follows live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def checkpoint_file_arch(checkpoint: Path) -> str:
    """The architecture a fairseq checkpoint file records (its tensors are mapped, not read)."""
    return checkpoint_arch(load_checkpoint(str(require_file(checkpoint, "checkpoint")), mmap=True))


def generate_argv(
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    results_dir: Path,
    el: bool,
    settings: Settings = DEFAULTS,
    bpe_dir: Path = BPE_DIR,
) -> List[str]:
    """fairseq-generate arguments: the config's search settings, local GPT-2 BPE, no size skips."""
    if settings.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {settings.dtype!r}")
    argv = [str(data_dir), "--path", str(checkpoint), "--task", "translation"]
    argv += ["--source-lang", "source", "--target-lang", "target", "--gen-subset", settings.subset]
    argv += ["--batch-size", str(settings.batch_size), "--results-path", str(results_dir)]
    if settings.cpu or (settings.cpu is None and not torch.cuda.is_available()):
        argv.append("--cpu")
    if settings.dtype != "fp32":
        argv.append(f"--{settings.dtype}")
    # fairseq-generate's default multiple of 8 silently drops the last examples of a short set
    argv += ["--required-batch-size-multiple", "1"]
    argv += ["--user-dir", fairseq_el.USER_DIR, *GPT2BPE(bpe_dir).fairseq_args()]
    argv += option_args(config.generation_options(settings.variant))
    arch = checkpoint_file_arch(checkpoint)
    name = el_arch(arch) if el else stock_arch(arch)
    if name != arch:
        argv += ["--model-overrides", repr({"arch": name, "_name": name})]
    return argv


def parse_generation(path: Path) -> Tuple[Dict[int, str], Dict[int, str]]:
    """Detokenized hypotheses (``D-``) and targets (``T-``) by example id."""
    hypotheses: Dict[int, str] = {}
    targets: Dict[int, str] = {}
    for line in require_file(path, "fairseq-generate output").read_text("utf-8").splitlines():
        kind, _, rest = line.partition("-")
        if kind == "D" and rest[:1].isdigit():
            number, _, scored = rest.partition("\t")
            hypotheses[int(number)] = scored.partition("\t")[2]
        elif kind == "T" and rest[:1].isdigit():
            number, _, text = rest.partition("\t")
            targets[int(number)] = text
    return hypotheses, targets


def score(metric: str, hypotheses: List[str], references: List[str]) -> Dict[str, float]:
    """The config's metric family, plus sacreBLEU for every task."""
    scores = qg_scores(hypotheses, references) if metric == "qg" else rouge(hypotheses, references)
    return {**scores, "sacrebleu": bleu(hypotheses, references)}


def references_for(data_dir: Path, subset: str, targets: Dict[int, str]) -> List[str]:
    """The untruncated ``<subset>.raw.target`` written by prepare, else fairseq's ``T-`` lines."""
    raw = Path(data_dir) / f"{subset}.raw.target"
    if raw.is_file():
        return raw.read_text(encoding="utf-8").splitlines()
    return [targets[i] for i in sorted(targets)]


def run(
    config: TaskConfig,
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    el: bool,
    settings: Settings = DEFAULTS,
    bpe_dir: Path = BPE_DIR,
    threads: Optional[int] = None,
) -> RunResult:
    """Generate in a child process (own peak memory), check the model class and dtype, score."""
    mode = "el" if el else "stock"
    out_dir = Path(out_dir) / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = generate_argv(config, checkpoint, data_dir, out_dir, el, settings, bpe_dir)
    dtype, subset = settings.dtype, settings.subset
    measured = out_dir / "measure.json"
    command = [sys.executable, "-m", "fairseq_el.recipes.measure", str(measured), "--", *argv]
    # fairseq-generate alone would ignore --bf16: then the command that casts is the one to show
    shown = command if dtype == "bf16" else ["fairseq-generate", *argv]
    print(f"[{mode}] " + shlex.join(shown), flush=True)
    subprocess.run(command, check=True, env=thread_env(threads))
    measure = json.loads(measured.read_text(encoding="utf-8"))
    is_el = [cls.startswith("fairseq_el.") for cls in measure["model_classes"]]
    if not is_el or any(is_el) != el or not all(x == is_el[0] for x in is_el):
        raise RuntimeError(f"[{mode}] fairseq loaded {measure['model_classes']}")
    if measure["parameter_dtypes"] != [str(DTYPES[dtype]).replace("torch.", "")]:
        raise RuntimeError(f"[{mode}] {dtype} asked, generated in {measure['parameter_dtypes']}")
    hyp_by_id, targets = parse_generation(out_dir / f"generate-{subset}.txt")
    references = references_for(data_dir, subset, targets)
    if sorted(hyp_by_id) != list(range(len(references))):
        raise RuntimeError(f"[{mode}] {len(hyp_by_id)} hypotheses for {len(references)} examples")
    hypotheses = [hyp_by_id[i] for i in range(len(references))]
    write_text(out_dir / "hypotheses.txt", "".join(h + "\n" for h in hypotheses))
    return RunResult(
        mode=mode,
        hypotheses=hypotheses,
        references=references,
        scores=score(config.metric, hypotheses, references),
        seconds=measure["seconds"],
        generation_seconds=measure["generation_seconds"],
        peak_rss_mb=measure["peak_rss_mb"],
        baseline_rss_mb=measure["baseline_rss_mb"],
        decoding_rss_rise_mb=measure["decoding_rss_rise_mb"],
        model_classes=measure["model_classes"],
        command=shown,
        dtype=dtype,
    )
