"""Recipes pass ``--cpu`` to fairseq-generate only when asked or when there is no CUDA device."""

import pytest
import torch

from fairseq_el.recipes import runner
from fairseq_el.recipes.config import load_config


@pytest.mark.parametrize(
    "cpu,cuda,expected",
    [(True, True, True), (False, False, False), (None, False, True), (None, True, False)],
)
def test_cpu_flag(monkeypatch, tmp_path, cpu, cuda, expected):
    monkeypatch.setattr(runner, "checkpoint_file_arch", lambda checkpoint: "bart_base")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    argv = runner.generate_argv(load_config("xsum"), tmp_path / "model.pt", tmp_path, tmp_path,
                                el=True, settings=runner.Settings(cpu=cpu))  # fmt: skip
    assert ("--cpu" in argv) == expected
