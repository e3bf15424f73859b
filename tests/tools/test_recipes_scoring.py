"""Metric wrappers against small cases checked by hand, and the task configs."""

import math

import pytest

from fairseq_el import metrics as scoring
from fairseq_el.recipes import qg_metrics
from fairseq_el.recipes.config import load_config, option_args
from fairseq_el.recipes.finetune import finetune_argv


def test_rouge_and_bleu_hand_cases():
    # unigrams 4/5, bigrams 3/4, LCS 4 of 5 on both sides
    rouge = scoring.rouge(["a b c d e"], ["a b c d f"])
    assert rouge["rouge1"] == pytest.approx(80) and rouge["rouge2"] == pytest.approx(75)
    assert rouge["rougeL"] == pytest.approx(80) and rouge["rougeLsum"] == pytest.approx(80)
    # precisions 4/5, 3/4, 2/3, 1/2 and no brevity penalty: (1/5) ** (1/4)
    assert scoring.bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(100 * 0.2**0.25)
    # all precisions 1, brevity penalty exp(1 - 6/4)
    assert scoring.bleu(["a b c d"], ["a b c d e f"]) == pytest.approx(100 * math.exp(-0.5))


def test_rouge_stems_and_sums_over_sentences():
    assert scoring.rouge(["running dogs"], ["run dog"])["rouge1"] == pytest.approx(100)
    # sentences swapped: LCS over the whole text is 2 of 4, over sentences (Lsum) 4 of 4
    swapped = scoring.rouge(["A b. C d."], ["C d. A b."])
    assert swapped["rougeL"] == pytest.approx(50) and swapped["rougeLsum"] == pytest.approx(100)
    assert scoring.split_sentences('He left. "Why?" she asked. 3 died.') == [
        "He left.",
        '"Why?" she asked.',
        "3 died.",
    ]


def test_qg_metrics_hand_cases():
    scores = qg_metrics.qg_scores(["a b c d e"], ["a b c d f"])
    assert scores["qg_bleu4"] == pytest.approx(100 * 0.2**0.25)
    assert scores["qg_rougeL"] == pytest.approx(80)
    # ROUGE-L beta 1.2: P = 1, R = 4/6 -> (1 + 1.44) P R / (R + 1.44 P)
    short = qg_metrics.qg_scores(["a b c d"], ["a b c d e f"])
    assert short["qg_rougeL"] == pytest.approx(100 * 2.44 * (4 / 6) / (4 / 6 + 1.44))
    assert short["qg_bleu4"] == pytest.approx(100 * math.exp(-0.5))
    # case and punctuation are tokens after lowercasing; PTB "n't" stays one token
    assert qg_metrics.qg_tokens("Why isn't it?") == ["why", "isn't", "it", "?"]
    # the closest of several reference lengths sets the brevity penalty
    assert qg_metrics.coco_bleu4(["a b c d"], [["a b c d", "x y z w v u"]]) == pytest.approx(100)
    assert qg_metrics.qg_scores([""], ["a b"]) == {"qg_bleu4": pytest.approx(0), "qg_rougeL": 0}


def test_configs_hold_the_paper_settings():
    xsum, cnndm, qg = (load_config(n) for n in ("xsum", "cnndm", "squad_qg"))
    assert option_args(xsum.generate) == [
        "--beam", "6", "--lenpen", "1.0", "--max-len-b", "60", "--min-len", "10"
    ]  # fmt: skip
    assert cnndm.generate == {"beam": 4, "lenpen": 2.0, "max-len-b": 140, "min-len": 55,
                              "no-repeat-ngram-size": 3}  # fmt: skip
    assert (qg.generate["beam"], qg.generation_options("beam5")["beam"]) == (4, 5)
    assert (xsum.max_source_positions, qg.max_source_positions) == (1024, 512)
    for config in (xsum, cnndm, qg):
        assert config.generation_options("greedy")["beam"] == 1
        assert "diverse-beam-groups" in config.generation_options("diverse")
    with pytest.raises(KeyError, match="no variant 'nucleus'"):
        xsum.generation_options("nucleus")


def test_finetune_commands(tmp_path):
    config = load_config("cnndm")
    published = finetune_argv(config, tmp_path, tmp_path / "ck")
    assert published[published.index("--arch") + 1] == "bart_large"
    assert published[published.index("--total-num-update") + 1] == "20000"
    assert "--fp16" in published and "--restore-file" in published
    toy = finetune_argv(config, tmp_path, tmp_path / "ck", toy_updates=5)
    assert toy[toy.index("--encoder-embed-dim") + 1] == "64"
    assert "--fp16" not in toy and "--restore-file" not in toy and "--cpu" in toy
    assert load_config("xsum").finetune["total-num-update"] == 15000


def test_bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmetric: rouge\nbeam: 4\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="task config not found"):
        load_config("no_such_task")
