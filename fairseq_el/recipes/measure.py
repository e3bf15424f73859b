"""Run fairseq-generate in this process and record time, peak memory and the model classes loaded.

Usage: ``python -m fairseq_el.recipes.measure RESULT.json -- <fairseq-generate arguments>``.
Each measured run gets its own process so that its peak RSS is its own. That peak is usually set
while loading the checkpoint (state dict and model side by side), so we also sample the RSS while
fairseq's ``inference_step`` runs and report its rise above the RSS before the first batch: the
memory that decoding itself takes, which is where EL and stock differ. The runner sets
``MALLOC_MMAP_THRESHOLD_`` so that freed large blocks go back to the system and the RSS follows
live memory. The model classes are recorded because ``--model-overrides`` is the only thing that
makes a stock checkpoint load as an EL model: the runner checks the class instead of trusting it.
fairseq-generate parses ``--bf16`` but never casts the models (only ``--fp16`` halves them): with
``--bf16`` in the arguments, the models are cast to bfloat16 here, as they are loaded. The dtypes
of the parameters the models generate with are recorded, for the runner to check in turn.
"""

import logging
import os
import re
import resource
import sys
import threading
import time
from typing import Callable, List, Optional, Set

from fairseq import checkpoint_utils
from fairseq.tasks.fairseq_task import FairseqTask
from fairseq_cli import generate

from fairseq_el.files import write_json

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20

# fairseq's own timer around SequenceGenerator, logged once at the end
TRANSLATED = re.compile(r"Translated [\d,]+ sentences \([\d,]+ tokens\) in ([\d.]+)s")


class GenerationTimeHandler(logging.Handler):
    """Keeps the seconds of fairseq-generate's "Translated N sentences ... in Xs" log line."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = float("nan")

    def emit(self, record: logging.LogRecord) -> None:
        match = TRANSLATED.search(record.getMessage())
        if match:
            self.seconds = float(match.group(1))


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size now, in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE_MB


class DecodingMemory:
    """The highest RSS while ``inference_step`` runs, above the RSS before the first call."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.start, self.peak, self.active = interval, None, 0.0, False
        self.sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            if self.active:
                self.peak = max(self.peak, current_rss_mb())
            time.sleep(self.interval)

    def wrap(self, inference_step: Callable) -> Callable:
        def measured(*args, **kwargs):
            if self.start is None:
                self.start = self.peak = current_rss_mb()
                self.sampler.start()
            self.active = True
            try:
                return inference_step(*args, **kwargs)
            finally:
                self.peak, self.active = max(self.peak, current_rss_mb()), False

        return measured

    def rise_mb(self) -> float:
        return float("nan") if self.start is None else self.peak - self.start


def recording_dtypes(inference_step: Callable, dtypes: Set[str]) -> Callable:
    """``inference_step`` that adds the dtypes of its models' parameters to ``dtypes``."""

    def recorded(self, generator, models, *args, **kwargs):
        dtypes.update(str(p.dtype).replace("torch.", "") for m in models for p in m.parameters())
        return inference_step(self, generator, models, *args, **kwargs)

    return recorded


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: python -m fairseq_el.recipes.measure RESULT.json -- ARGS...")
    result_path, generate_argv = argv[0], argv[2:]
    bf16 = "--bf16" in generate_argv
    classes: List[str] = []
    load = checkpoint_utils.load_model_ensemble

    def recording_load(*args, **kwargs):
        models, model_args = load(*args, **kwargs)
        classes.extend(f"{type(m).__module__}.{type(m).__name__}" for m in models)
        return [m.bfloat16() for m in models] if bf16 else models, model_args

    checkpoint_utils.load_model_ensemble = recording_load
    decoding, dtypes = DecodingMemory(), set()
    FairseqTask.inference_step = decoding.wrap(recording_dtypes(FairseqTask.inference_step, dtypes))
    timer = GenerationTimeHandler()
    logging.getLogger(generate.__name__).addHandler(timer)
    baseline = rss_mb()  # after importing torch and fairseq: the part no attention can save
    sys.argv = ["fairseq-generate", *generate_argv]
    start = time.perf_counter()
    generate.cli_main()
    seconds = time.perf_counter() - start
    result = {
        "model_classes": classes,
        "parameter_dtypes": sorted(dtypes),
        "seconds": seconds,
        "generation_seconds": timer.seconds,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": baseline,
        "decoding_rss_rise_mb": decoding.rise_mb(),
    }
    write_json(result_path, result)


if __name__ == "__main__":
    main()
