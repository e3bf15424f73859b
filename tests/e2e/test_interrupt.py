"""Interrupted and repeated runs: resumed when they are the same run, refused when they are not,
and never a result that looks complete when it is not (SIGKILL, SIGINT, reruns, other inputs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fairseq.data import Dictionary

from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.manifest import RunDir
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.recipes import cli, prepare, sources
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import exit_code

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny bart_base checkpoint and 3 prepared XSum pairs."""
    root = tmp_path_factory.mktemp("job")
    dictionary = Dictionary.load(str(BPE_DIR / "dict.txt"))
    extra = [*tiny_args(), "--max-target-positions", "64"]
    model, _, args = build_translation_model("bart_base", dictionary, extra=extra, seed=3)
    save_checkpoint(model, args, str(root / "model.pt"))
    pairs = sources.read_xsum_jsonl(DATA_DIR / "xsum_hf_fixture/sample.json")[:3]
    prepare.prepare({"test": pairs}, root / "data", 256, 64)
    return root


def run_task_argv(job: Path, out: Path, *extra: str):
    data = str(job / "data")
    return ["--config", "xsum", "--checkpoint", str(job / "model.pt"), "--data", data,
            "--compare", "--threads", "1", "--out", str(out), *extra]  # fmt: skip


def start(argv):
    cmd = [str(BIN / "fairseq-el-run-task"), *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_killed_compare_is_incomplete_and_resumes_only_what_is_missing(job, tmp_path):
    out = tmp_path / "run"
    process = start(run_task_argv(job, out))
    wait_for(out / "stock" / "result.json", process)  # stock done, EL about to start
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (out / "comparison.json").exists()
    assert manifest(out)["status"] == "incomplete" and list(manifest(out)["completed"]) == ["stock"]
    stock_written = (out / "stock" / "result.json").stat().st_mtime_ns

    done = subprocess.run([str(BIN / "fairseq-el-run-task"), *run_task_argv(job, out)],
                          capture_output=True, text=True, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming (incomplete; done: stock)" in done.stdout
    assert "[stock] fairseq-generate" not in done.stdout and "[el] fairseq-generate" in done.stdout
    assert (out / "stock" / "result.json").stat().st_mtime_ns == stock_written
    record = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert record["differing"] == 0 and manifest(out)["status"] == "complete"
    assert set(manifest(out)["outputs"]) == {"comparison.json", "stock/hypotheses.txt",
                                             "el/hypotheses.txt"}  # fmt: skip

    again = subprocess.run([str(BIN / "fairseq-el-run-task"), *run_task_argv(job, out)],
                           capture_output=True, text=True, env=ENV)  # fmt: skip
    assert again.returncode == 0 and "fairseq-generate" not in again.stdout  # nothing to redo


def test_interrupted_run_says_so_and_leaves_nothing_that_looks_complete(job, tmp_path):
    out = tmp_path / "run"
    process = start(run_task_argv(job, out))
    wait_for(out / "stock", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted; the run is marked incomplete" in err and "Traceback" not in err
    assert manifest(out)["status"] == "incomplete"
    assert not (out / "comparison.json").exists() and not (out / "el").exists()


def test_a_run_of_other_settings_or_inputs_is_refused_then_overwritten(job, tmp_path, capsys):
    out = tmp_path / "run"
    assert exit_code(cli.run_task_main, run_task_argv(job, out, "--batch-size", "2")) == 0
    before = (out / "comparison.json").read_bytes()
    capsys.readouterr()
    assert exit_code(cli.run_task_main, run_task_argv(job, out, "--batch-size", "3")) == 2
    err = capsys.readouterr().err
    assert "holds a compare run (complete) of another config" in err and "--overwrite" in err
    assert (out / "comparison.json").read_bytes() == before
    argv = run_task_argv(job, out, "--batch-size", "3", "--overwrite")
    assert exit_code(cli.run_task_main, argv) == 0
    assert manifest(out)["identity"]["config"]["batch_size"] == 3
    single = run_task_argv(job, out)[:-1] + [str(out)]
    single.remove("--compare")
    assert exit_code(cli.run_task_main, [*single, "--el"]) == 2  # a compare run is no --el run
    assert "holds a compare run (complete) of another kind" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert exit_code(cli.run_task_main, run_task_argv(job, foreign, "--overwrite")) == 2
    assert "not a fairseq-el run directory" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_prepare_into_a_used_directory(job, tmp_path, capsys):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("a first source\na second source\n")
    tgt.write_text("first\nsecond\n")
    out = tmp_path / "data"
    argv = ["--format", "lines", "--source", str(src), "--target", str(tgt), "--out", str(out)]
    assert exit_code(cli.prepare_main, argv) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert exit_code(cli.prepare_main, argv) == 0
    assert "already prepared" in capsys.readouterr().out
    src.write_text("another source\nand one more\n")
    assert exit_code(cli.prepare_main, argv) == 2
    assert "holds a prepare run (complete) of another config" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # nothing rewritten
    assert exit_code(cli.prepare_main, [*argv, "--overwrite"]) == 0
    assert (out / "test.raw.source").read_text() == "another source\nand one more\n"
    assert not list(tmp_path.glob(".*partial"))


def test_a_killed_preparation_leaves_no_data_directory(tmp_path):
    pairs = [sources.Pair(f"source number {i} " * 40, f"target {i}") for i in range(3000)]
    (tmp_path / "src.txt").write_text("".join(p.source + "\n" for p in pairs))
    (tmp_path / "tgt.txt").write_text("".join(p.target + "\n" for p in pairs))
    out = tmp_path / "data"
    cmd = [
        str(BIN / "fairseq-el-prepare"),
        "--format",
        "lines",
        "--source",
        str(tmp_path / "src.txt"),
        "--target",
        str(tmp_path / "tgt.txt"),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    wait_for(tmp_path / ".data.partial" / "test.raw.source", process)  # fmt: skip
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not out.exists()  # the data appears complete or not at all
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").is_file() and not (tmp_path / ".data.partial").exists()


def test_demo_into_a_directory_of_another_demo_is_refused(tmp_path, capsys):
    out = tmp_path / "demo"
    RunDir(out, "demo", {"quick": False}, {"data": DATA_DIR})
    assert exit_code(cli.demo_main, ["--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a demo run (incomplete) of another config" in err


def test_gqa_study_into_a_directory_of_another_budget_is_refused(tmp_path, capsys):
    from dataclasses import asdict

    from fairseq_el.recipes.gqa_study import QG_DATA, Budget

    out = tmp_path / "study"
    RunDir(out, "gqa-study", asdict(Budget()), {"data": DATA_DIR / QG_DATA})
    assert exit_code(cli.gqa_study_main, ["--quick", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out-dir" in err and "holds a gqa-study run (incomplete) of another config" in err


def test_gqa_study_quick_run_then_rerun_resumes_everything(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["--quick", "--out-dir", str(out), "--variants", "mha"]
    assert exit_code(cli.gqa_study_main, argv) == 0
    first = (out / "results.jsonl").read_text(encoding="utf-8")
    assert len(first.splitlines()) == 3 and manifest(out)["status"] == "complete"
    capsys.readouterr()
    assert exit_code(cli.gqa_study_main, argv) == 0
    printed = capsys.readouterr().out
    assert "same run, resuming (complete" in printed and "fairseq-train" not in printed
    assert (out / "results.jsonl").read_text(encoding="utf-8") == first
