"""The demo end to end in --quick mode: three tasks, stock and EL identical, a report."""

from fairseq_el.recipes.cli import demo


def test_quick_demo_writes_a_report_with_identical_outputs(tmp_path, capsys):
    demo.cli_main(["--quick", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    for task in ("xsum", "cnndm", "squad_qg"):
        assert f"## {task}" in report
    assert report.count("differing hypotheses: 0 of") == 3
    assert "peak RSS MiB" in report and "near zero" in report
    assert (tmp_path / "resources.png").is_file() or "No plot: matplotlib" in report
    assert "report: " in capsys.readouterr().out


def test_report_skips_the_plot_without_matplotlib(tmp_path, monkeypatch):
    import sys

    from fairseq_el.recipes import report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    assert report.plot(tmp_path, []) is None
