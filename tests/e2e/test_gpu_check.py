"""``fairseq-el-gpu-check --smoke``: the GPU check's CPU mode, as CI runs it, from a wheel."""

import json
import os
import subprocess
import time

from fairseq_el.bench.models import VARIANTS


def test_gpu_check_smoke(installed, tmp_path):
    out = tmp_path / "check"
    start = time.perf_counter()
    done = subprocess.run(
        [str(installed / "fairseq-el-gpu-check"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"gpu check smoke: {seconds:.1f} s")
    assert seconds < 60
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["mode"] == "smoke (CPU)" and record["env"]["device"] == "cpu"
    cases = {(r["case"], r["dtype"]) for r in record["precision"]}
    assert cases == {(c, d) for c in ("cross", "self", "grouped-self", "grouped-cross")
                     for d in ("fp32", "fp16", "bf16")}  # fmt: skip
    assert all(r["holds"] for r in record["precision"])
    runs = [r for r in record["benchmark"] if "stopped" not in r]
    assert {r["variant"] for r in runs} == set(VARIANTS)
    assert all(r["samples_per_s"] > 0 and r["peak_memory_mib"] > 0 for r in runs)
    stops = [r for r in record["benchmark"] if "stopped" in r]
    assert [r["variant"] for r in stops] == list(VARIANTS)
    assert "| el-sa |" in (out / "gpu_check.md").read_text()
