"""Run one variant in a fresh process, so that its peak RSS is its own.

``python -m fairseq_el.bench.worker CONFIG.json RESULT.json``: the config file holds the
:class:`~fairseq_el.bench.shapes.Config` fields plus ``variant``, ``repeats`` and ``threads``.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict

from fairseq_el.bench.shapes import Config
from fairseq_el.files import write_json


def run_in_subprocess(config: Config, variant: str, repeats: int, threads: int) -> Dict:
    """Run :func:`~fairseq_el.bench.runner.run_variant` in a new Python process."""
    with tempfile.TemporaryDirectory(prefix="fairseq-el-bench-") as tmp:
        cfg_path, out_path = os.path.join(tmp, "config.json"), os.path.join(tmp, "result.json")
        job = {
            **dataclasses.asdict(config),
            "variant": variant,
            "repeats": repeats,
            "threads": threads,
        }
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(job, f)
        cmd = [sys.executable, "-m", "fairseq_el.bench.worker", cfg_path, out_path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{variant} on {config.describe()} failed:\n{tail}")
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m fairseq_el.bench.worker CONFIG.json RESULT.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    import torch

    torch.set_num_threads(job.pop("threads"))
    variant, repeats = job.pop("variant"), job.pop("repeats")
    job["model_options"] = tuple(job["model_options"])
    from fairseq_el.bench.runner import run_variant

    result = run_variant(Config(**job), variant, repeats)
    write_json(sys.argv[2], result)  # whole or absent: the parent reads it after the child exits


if __name__ == "__main__":
    main()
