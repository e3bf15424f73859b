"""The demo end to end in --quick mode: three tasks, stock and EL identical, a report.

It runs the console script of a non-editable install, from another directory: the shipped
samples and configs must come from the package data.
"""

import os
import re
import subprocess


def test_quick_demo_writes_a_report_with_identical_outputs(installed, tmp_path):
    done = subprocess.run(
        [str(installed / "fairseq-el-demo"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    for task in ("xsum", "cnndm", "squad_qg"):
        assert f"## {task}" in report
    assert report.count("differing hypotheses: 0 of") == 3
    corpus = re.findall(r"(\d+) of (\d+) best hypotheses identical to fairseq-generate's", report)
    assert len(corpus) == 3 and all(same == total for same, total in corpus), corpus
    assert "peak RSS MiB" in report and "near zero" in report
    assert (tmp_path / "resources.png").is_file() or "No plot: matplotlib" in report
    assert "report: " in done.stdout


def test_report_skips_the_plot_without_matplotlib(tmp_path, monkeypatch):
    import sys

    from fairseq_el.recipes import report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    assert report.plot(tmp_path, []) is None
