"""Run fairseq-generate in this process and record time, peak memory and the model classes loaded.

Usage: ``python -m fairseq_el.recipes.measure RESULT.json -- <fairseq-generate arguments>``.
Each measured run gets its own process so that its peak RSS is its own. The model classes are
recorded because ``--model-overrides`` is the only thing that makes a stock checkpoint load as an
EL model: the runner checks the class instead of trusting the flag.
"""

import json
import logging
import re
import resource
import sys
import time
from typing import List, Optional

from fairseq import checkpoint_utils
from fairseq_cli import generate

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


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: python -m fairseq_el.recipes.measure RESULT.json -- ARGS...")
    result_path, generate_argv = argv[0], argv[2:]
    classes: List[str] = []
    load = checkpoint_utils.load_model_ensemble

    def recording_load(*args, **kwargs):
        models, model_args = load(*args, **kwargs)
        classes.extend(f"{type(m).__module__}.{type(m).__name__}" for m in models)
        return models, model_args

    checkpoint_utils.load_model_ensemble = recording_load
    timer = GenerationTimeHandler()
    logging.getLogger(generate.__name__).addHandler(timer)
    baseline = rss_mb()  # after importing torch and fairseq: the part no attention can save
    sys.argv = ["fairseq-generate", *generate_argv]
    start = time.perf_counter()
    generate.cli_main()
    seconds = time.perf_counter() - start
    result = {
        "model_classes": classes,
        "seconds": seconds,
        "generation_seconds": timer.seconds,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": baseline,
    }
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
