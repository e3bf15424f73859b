"""``fairseq-el-run-task --compare --dtype fp16|bf16`` on a tiny BART trained on shipped SQuAD QG
pairs: every score of EL obeys the low-precision rule at the metric level
(:func:`~fairseq_el.testing.precision.metric_holds`: within 0.1 of stock's, or no farther from the
fp32 run's than twice stock's distance plus 0.1; the share of identical hypotheses is printed),
the command's verdict says whether they are within 0.1, the runs are recorded as that dtype, and a
run of another dtype is not mixed into them."""

import json
from collections import Counter
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
from fairseq.tasks.translation import TranslationTask

from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.recipes import cli, prepare, sources
from fairseq_el.recipes.bpe import GPT2BPE
from fairseq_el.testing import tiny_args, translation_args
from fairseq_el.testing.precision import METRIC_TOL, metric_holds

from helpers import exit_code, train_step

QG = DATA_DIR / "squad_qg_du2017"
TRAIN, TEST = 64, 24  # 64 pairs are learnt; the first 24 of them are the test split


@pytest.fixture(scope="module")
def qg_model(tmp_path_factory) -> Tuple[Path, Path]:
    """A tiny BART trained (a few seconds) to give the questions of the first shipped SQuAD QG
    pairs of distinct sources, over a dictionary of just their BPE symbols; returns (checkpoint,
    data). (A source with two questions would be an exact tie once both are learnt: rounding, not
    EL, would pick one.)"""
    out = tmp_path_factory.mktemp("qg")
    first = {}
    for pair in sources.read_line_pairs(QG / "src-test.txt", QG / "tgt-test.txt"):
        first.setdefault(pair.source, pair)
    pairs = list(first.values())[:TRAIN]
    bpe = GPT2BPE(BPE_DIR)
    counts = Counter(s for p in pairs for text in (p.source, p.target) for s in bpe.encode(text))
    (out / "dict.txt").write_text("".join(f"{s} {n}\n" for s, n in counts.most_common()))
    data = out / "data"
    prepare.prepare({"train": pairs, "test": pairs[:TEST]}, data, 128, 32, BPE_DIR,
                    out / "dict.txt")  # fmt: skip
    extra = [*tiny_args(dim=32, ffn=64), "--max-source-positions", "128",
             "--max-target-positions", "32"]  # fmt: skip
    args = translation_args("bart_base", str(data), extra)
    task = TranslationTask.setup_task(args)
    task.load_dataset("train")
    torch.manual_seed(0)
    model = task.build_model(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    pad = task.target_dictionary.pad()
    for epoch in range(80):
        for sample in task.get_batch_iterator(
            task.dataset("train"), max_tokens=1024, seed=epoch, required_batch_size_multiple=1
        ).next_epoch_itr(shuffle=True):
            loss = train_step(model, optimizer, sample, pad)
    print(f"QG model: final loss {loss.item():.3f}")
    save_checkpoint(model.eval(), args, str(out / "model.pt"))
    return out / "model.pt", data


def run_task_argv(checkpoint: Path, data: Path, out: Path, dtype: str):
    return ["--config", "squad_qg", "--checkpoint", str(checkpoint), "--data", str(data),
            "--compare", "--dtype", dtype, "--threads", "1", "--out", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def fp32_scores(qg_model, tmp_path_factory) -> Dict[str, float]:
    """The scores of the fp32 comparison (stock and EL identical there): the reference."""
    out = tmp_path_factory.mktemp("fp32") / "run"
    assert exit_code(cli.run_task_main, run_task_argv(*qg_model, out, "fp32")) == 0
    record = json.loads((out / "comparison.json").read_text("utf-8"))
    assert record["differing"] == 0
    return record["stock"]["scores"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_compare_in_low_precision(qg_model, fp32_scores, tmp_path, capsys, dtype):
    checkpoint, data = qg_model
    out = tmp_path / dtype
    code = exit_code(cli.run_task_main, run_task_argv(checkpoint, data, out, dtype))
    record = json.loads((out / "comparison.json").read_text("utf-8"))
    stock, el = record["stock"], record["el"]
    with capsys.disabled():
        same = TEST - record["differing"]
        print(f"\n{dtype}: {same}/{TEST} hypotheses identical; "
              + ", ".join(f"{k} stock {v:.2f} EL {el['scores'][k]:.2f} fp32 {fp32_scores[k]:.2f}"
                          for k, v in stock["scores"].items()))  # fmt: skip
        for i, (s, e) in enumerate(zip(stock["hypotheses"], el["hypotheses"])):
            if s != e:
                print(f"  {i} differs: stock {s!r}, EL {e!r}, reference {stock['references'][i]!r}")
    assert stock["dtype"] == el["dtype"] == dtype
    for name, value in stock["scores"].items():
        assert metric_holds(value, el["scores"][name], fp32_scores[name]), name
    within = all(abs(v - el["scores"][k]) <= METRIC_TOL for k, v in stock["scores"].items())
    assert record["agrees"] == within and code == (0 if within else 1)  # the command's verdict
    assert stock["scores"]["qg_bleu4"] > 20, "a trained model: its questions are not noise"
    assert len(set(stock["hypotheses"])) > TEST // 2, "a trained model: questions differ"
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["identity"]["config"]["dtype"] == dtype
    other = "bf16" if dtype == "fp16" else "fp16"
    assert exit_code(cli.run_task_main, run_task_argv(checkpoint, data, out, other)) == 2
    assert "of another config" in capsys.readouterr().err
