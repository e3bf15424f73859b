"""``--verify N``: the output's first N examples generated again with stock fairseq: passes on
EL (identical N/N), fails with exit status 3 naming the first differing example when the stock
model is planted a difference. In-process runs of ``main`` on ``test_generate``'s tiny BART."""

import json

import pytest
import torch
from test_generate import (
    COMMON,
    records,
    work,  # noqa: F401  (the module's fixture)
)

from fairseq_el.generate import verify as verify_mod
from fairseq_el.generate.cli import main
from fairseq_el.generate.verify import FP32_SCORE_TOL, within_rule
from fairseq_el.rounding import half_ulp

BEAM = ["--beam", "3", "--nbest", "2", "--batch-size", "4", "--num-workers", "0"]


def argv(work, out):  # noqa: F811
    return [
        str(work),
        "--path",
        str(work / "model.pt"),
        *COMMON,
        *BEAM,
        "--verify",
        "2",
        "--input",
        str(work / "raw.txt"),
        "--output",
        str(out),
    ]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_verify_passes_on_el(work, tmp_path, capsys, dtype):  # noqa: F811
    out = tmp_path / "v.jsonl"
    main(argv(work, out) + (["--bf16"] if dtype == "bf16" else []))
    summary = json.loads(out.with_name("v.jsonl.summary.json").read_text())["verify"]
    assert summary["passed"] and summary["examples"] == 2 and summary["ids"] == [0, 1]
    assert len(records(out)) == 3
    if dtype == "fp32":
        assert summary["identical"] == 2 and summary["max_score_diff"] <= FP32_SCORE_TOL
        assert "verify: 2/2 identical hypotheses vs stock fairseq" in capsys.readouterr().err
    else:  # the rule against an fp32 stock run
        assert summary["rule"].startswith("bf16: same tokens as stock bf16, or EL's best score")


def test_verify_fails_on_a_planted_difference(work, tmp_path, capsys, monkeypatch):  # noqa: F811
    class Planted(verify_mod.Generation):
        def __init__(self, args, ranks):
            super().__init__(args, ranks)
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():  # the stock model is not the one EL ran: a planted bug
                fc2 = self.models[0].decoder.layers[-1].fc2.weight
                fc2.add_(torch.randn(fc2.shape, generator=gen))

    monkeypatch.setattr(verify_mod, "Generation", Planted)
    out = tmp_path / "p.jsonl"
    with pytest.raises(SystemExit) as exit_:
        main(argv(work, out))
    assert exit_.value.code == verify_mod.EXIT_DIFFERS
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fairseq-el-generate: --verify: example 0, hypothesis 1: EL "), err
    summary = json.loads(out.with_name("p.jsonl.summary.json").read_text())["verify"]
    assert not summary["passed"] and summary["identical"] < 2


def test_low_precision_rule():
    assert half_ulp(torch.float16, 1.0) == 2**-11 and half_ulp(torch.bfloat16, -3.0) == 2**-7
    assert within_rule(stock=-1.10, el=-1.15, reference=-1.0, dtype="fp16")
    assert not within_rule(stock=-1.01, el=-1.5, reference=-1.0, dtype="bf16")
