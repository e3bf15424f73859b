"""``fairseq_el.from_pretrained``: fairseq's BART hub interface over the EL model, against stock
``BARTModel.from_pretrained`` on the same model folder (dict.txt, GPT-2 BPE from shipped files),
on every device of the ``device`` fixture."""

import shutil

import pytest
from fairseq.data import Dictionary
from fairseq.hub_utils import GeneratorHubInterface
from fairseq.models.bart import BARTHubInterface, BARTModel

import fairseq_el
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import SCORE_TOL

BPE = {"gpt2_encoder_json": str(BPE_DIR / "encoder.json"),
       "gpt2_vocab_bpe": str(BPE_DIR / "vocab.bpe")}  # fmt: skip
TEXTS = [
    "The cat sat on the mat. It was a sunny day in London, and the park was full.",
    "Stocks fell sharply on Monday as investors weighed the central bank's decision.",
    "A short one.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny bart_base saved as fairseq-train would, beside its dictionaries."""
    out = tmp_path_factory.mktemp("bart")
    src = DATA_DIR / "cnndm_fastseq_bin" / "dict.source.txt"
    for name in ("dict.txt", "dict.source.txt", "dict.target.txt"):
        shutil.copy(src, out / name)
    model, _, args = build_translation_model(
        "bart_base", Dictionary.load(str(src)), extra=tiny_args(dim=16, heads=4), seed=5
    )
    save_checkpoint(model, args, str(out / "model.pt"))
    return out


@pytest.mark.parametrize(
    "search",
    [
        {"beam": 4, "max_len_b": 12},
        {"beam": 4, "nbest": 2, "lenpen": 2.0, "no_repeat_ngram_size": 2, "max_len_b": 12},
        {"beam": 4, "diverse_beam_groups": 2, "max_len_b": 10},
        {"sampling": True, "sampling_topk": 5, "beam": 2, "nbest": 2, "seed": 7, "max_len_b": 10},
    ],
    ids=["beam", "nbest-lenpen-norepeat", "diverse", "sampling"],
)
def test_from_pretrained_matches_stock_bart_hub(model_dir, search, device):
    stock = BARTModel.from_pretrained(str(model_dir), checkpoint_file="model.pt", **BPE)
    el = fairseq_el.from_pretrained(str(model_dir), checkpoint_file="model.pt", **BPE)
    stock, el = stock.eval().to(device), el.eval().to(device)
    assert type(el) is BARTHubInterface and type(el.model).__name__ == "ELBARTModel"
    assert type(stock.model) is BARTModel
    tokens = [stock.encode(text) for text in TEXTS]
    outs = []
    for hub in (stock, el):
        if "seed" in search:
            import torch

            torch.manual_seed(search["seed"])
        kwargs = {k: v for k, v in search.items() if k != "seed"}
        outs.append(hub.generate(tokens, **kwargs))
    for sentence, (s_hypos, e_hypos) in enumerate(zip(*outs, strict=True)):
        assert len(s_hypos) == len(e_hypos)
        for s, e in zip(s_hypos, e_hypos):
            assert s["tokens"].tolist() == e["tokens"].tolist(), f"sentence {sentence}"
            assert abs(float(s["score"]) - float(e["score"])) <= SCORE_TOL


def test_sample_strings_and_stock_switch(model_dir, device):
    stock = BARTModel.from_pretrained(str(model_dir), checkpoint_file="model.pt", **BPE)
    el = fairseq_el.from_pretrained(str(model_dir), checkpoint_file="model.pt", **BPE)
    stock, el = stock.eval().to(device), el.eval().to(device)
    assert el.sample(TEXTS, beam=4, max_len_b=12) == stock.sample(TEXTS, beam=4, max_len_b=12)
    again = fairseq_el.from_pretrained(str(model_dir), "model.pt", stock=True, **BPE)
    assert type(again.model) is BARTModel and isinstance(again, GeneratorHubInterface)
