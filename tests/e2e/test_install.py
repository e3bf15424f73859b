"""The package as a user installs it: a non-editable wheel in a fresh virtual environment."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_user_dir_is_fast_and_imports_neither_torch_nor_fairseq():
    probe = (
        "import sys, time; start = time.perf_counter(); import fairseq_el_user_dir, io, "
        "contextlib; out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out): fairseq_el_user_dir.cli_main()\n"
        "print(out.getvalue().strip()); print(time.perf_counter() - start); "
        "print(sorted(m for m in ('torch', 'fairseq', 'fairseq_el') if m in sys.modules))"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    path, seconds, imported = done.stdout.splitlines()
    assert Path(path) == REPO / "fairseq_el" and (Path(path) / "__init__.py").is_file()
    assert imported == "[]", f"fairseq-el-user-dir imported {imported}"
    assert float(seconds) < 0.5 and wall < 5, (seconds, wall)


@pytest.mark.parametrize(
    "script", ["fairseq-el-convert", "fairseq-el-convert-hf", "fairseq-el-benchmark",
               "fairseq-el-run-task", "fairseq-el-prepare", "fairseq-el-gqa-study"]
)  # fmt: skip
def test_console_scripts_of_a_wheel(installed, script, tmp_path):
    done = subprocess.run(
        [str(installed / script), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_wheel_user_dir_points_into_the_install(installed, tmp_path):
    done = subprocess.run(
        [str(installed / "fairseq-el-user-dir")], capture_output=True, text=True, check=True
    )
    path = Path(done.stdout.strip())
    assert installed.parent in path.parents and REPO not in path.parents


def test_missing_data_root_is_one_line(installed, tmp_path):
    done = subprocess.run(
        [str(installed / "fairseq-el-demo"), "--quick", "--data-root", str(tmp_path / "none")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    # fairseq's text_to_speech task configures root logging at import and logs an INFO line
    lines = [x for x in done.stderr.splitlines() if not x.startswith("INFO:")]
    assert (
        len(lines) == 1 and lines[0].startswith("fairseq-el-demo: ") and "--data-root" in lines[0]
    )
