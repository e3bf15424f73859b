"""``fairseq-el-gpu-check --smoke``: the GPU check's CPU mode, as CI runs it, from a wheel; and
the parts a CPU cannot exercise (host-sync attribution, pytest's per-tier counts) on planted
input."""

import json
import os
import subprocess
import time
import warnings
from pathlib import Path

from fairseq_el.bench.gpu_check import (
    PACKAGES,
    SEARCHES,
    SETTINGS,
    SYNC_WARNING,
    HostSyncs,
    dtype_of,
    run_pytest,
    tier_counts,
)

VARIANTS = {"squad-qg": ("stock-per-beam", "el", "el-sa"),
            "xsum": ("stock-per-sentence", "el", "el-sa"),
            "cnndm": ("stock-per-sentence", "el", "el-sa")}  # fmt: skip


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
    assert seconds < 90
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["mode"] == "smoke (CPU)" and record["env"]["device"] == "cpu"
    assert "pytest" not in record  # smoke: no parity tiers
    cases = {(r["case"], r["dtype"]) for r in record["precision"]}
    assert cases == {(c, d) for c in ("cross", "self", "grouped-self", "grouped-cross")
                     for d in ("fp32", "fp16", "bf16")}  # fmt: skip
    assert all(r["holds"] for r in record["precision"])

    table = record["table"]
    assert {(r["setting"], r["search"], r["variant"]) for r in table} == {
        (s, search, v) for s in SETTINGS for search in SEARCHES for v in VARIANTS[s]
    }
    assert len(table) == 27
    for r in table:
        assert r["stopped"] == "--max-batch", r  # smoke: batch 4 at most, every row ran
        assert r["batch"] == 4 and r["memory_batch"] >= 4
        assert r["samples_per_s"] > 0 and r["peak_memory_mib"] > 0
        stock = r["variant"].startswith("stock")
        assert r["identical"] == ("reference" if stock else "2/2"), r  # EL: stock's tokens
        syncs = r["syncs"]
        assert syncs["measured"] is False and syncs["steps"] > 0  # CPU: nothing to count
    md = (out / "gpu_check.md").read_text()
    for section in ("## Parity tiers", "## Precision", "## The paper's GPU table",
                    "## Host syncs per decoding step"):  # fmt: skip
        assert section in md
    assert "| cnndm | diverse | el-sa | 4 |" in md
    assert "not run (smoke mode" in md


class FakeEnsemble:
    """An ensemble whose encoder and decoder step run code "from" the given files."""

    def __init__(self, encoder_file: str, step_files):
        self.encoder, self.steps = self.code(encoder_file), [self.code(f) for f in step_files]

    @staticmethod
    def code(path: str):
        return compile(f"warnings.warn({SYNC_WARNING!r})\n", path, "exec")

    def forward_encoder(self):
        exec(self.encoder, {"warnings": warnings})

    def forward_decoder(self):
        for code in self.steps:
            exec(code, {"warnings": warnings})


def test_host_syncs_are_attributed_to_their_caller_and_phase():
    el = str(Path(PACKAGES["fairseq_el"]) / "attention" / "cache.py")
    stock = str(Path(PACKAGES["fairseq"]) / "sequence_generator.py")
    ensemble = FakeEnsemble(stock, [el, el, stock])
    with HostSyncs(ensemble, "cpu") as syncs:
        for _ in range(2):  # two decoding steps
            ensemble.forward_decoder()
        ensemble.forward_encoder()
        exec(FakeEnsemble.code(stock), {"warnings": warnings})  # the generator, outside a step
        warnings.warn("an unrelated warning, not counted", stacklevel=1)
    report = syncs.report()
    assert report["steps"] == 2 and report["encoder"] == 1
    assert report["per_step"] == {"generator:fairseq": 0.5, "step:fairseq": 1.0,
                                  "step:fairseq_el": 2.0}  # fmt: skip
    assert report["el_step_sites"] == {"attention/cache.py:1": 4}


def test_parity_tiers_are_counted_per_tier_and_dtype(tmp_path):
    junit = tmp_path / "pytest.xml"
    junit.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.module.test_low_precision" '
        'name="test_cross_attention[cuda-1-8-None-1-False-fp16]"/>'
        '<testcase classname="tests.module.test_low_precision" '
        'name="test_cross_attention[cuda-1-8-None-1-False-bf16]"><failure/></testcase>'
        '<testcase classname="tests.model.test_generator" name="test_beam[cuda-el]"/>'
        '<testcase classname="tests.model.test_generator" name="test_x[cuda]"><skipped/>'
        "</testcase></testsuite></testsuites>"
    )
    rows, failed = tier_counts(junit)
    assert rows == [
        {"tier": "model", "dtype": "fp32", "passed": 1, "failed": 0, "errors": 0, "skipped": 1},
        {"tier": "module", "dtype": "bf16", "passed": 0, "failed": 1, "errors": 0, "skipped": 0},
        {"tier": "module", "dtype": "fp16", "passed": 1, "failed": 0, "errors": 0, "skipped": 0},
    ]
    assert failed == ["tests.module.test_low_precision::"
                      "test_cross_attention[cuda-1-8-None-1-False-bf16]"]  # fmt: skip
    assert dtype_of("test_fairseq_generate_fp16_stock_vs_el[cuda-beam]") == "fp16"
    assert dtype_of("test_bf16x[cuda]") == "fp32"


def test_parity_tiers_stopped_at_their_time_still_report(tmp_path):
    """pytest is stopped as by Ctrl-C at ``--pytest-seconds``: the tests it ran are counted."""
    module = tmp_path / "tests" / "module"
    module.mkdir(parents=True)
    (tmp_path / "tests" / "model").mkdir()
    (module / "test_planted.py").write_text(
        "import time\nimport pytest\n\n\n"
        "@pytest.mark.parametrize('device,dtype', [('cuda', 'fp16'), ('cuda', 'fp32')])\n"
        "def test_quick(device, dtype):\n    assert dtype != 'fp32'\n\n\n"
        "def test_slow_cuda():\n    time.sleep(120)\n"
    )
    start = time.perf_counter()
    record = run_pytest(tmp_path / "tests", tmp_path, seconds=10)
    assert time.perf_counter() - start < 60
    assert record["returncode"] is None and record["summary"].startswith("stopped after 10 s")
    assert record["tiers"] == [
        {"tier": "module", "dtype": "fp16", "passed": 1, "failed": 0, "errors": 0, "skipped": 0},
        {"tier": "module", "dtype": "fp32", "passed": 0, "failed": 1, "errors": 0, "skipped": 0},
    ]
