"""The version-guarded fixes: diverse beam search past the first batch, safe checkpoint loading."""

import argparse
import os

import fairseq.search
import pytest
import torch
from omegaconf import OmegaConf

from fairseq_el.compat import checkpoints, diverse_beam
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import (
    assert_hypos_equal,
    generate,
    make_batch,
    make_dictionary,
    stock_and_el,
    to_device,
)

UPSTREAM = diverse_beam.PositionIndexedDiverseBeamSearch.__mro__[1]


def run_search(search_cls, ids):
    """Three steps of diverse beam search on fixed scores; sentence 1 finishes after step 1."""
    dictionary = make_dictionary(10)
    search = search_cls(dictionary, num_groups=2, diversity_strength=0.5)
    gen = torch.Generator().manual_seed(0)
    bsz, beam, vocab = 3, 4, len(dictionary)
    scores = torch.zeros(bsz, beam, 0)
    out = []
    for step in range(3):
        live = ids if step < 2 else ids[[0, 2]]
        lprobs = torch.randn(len(live), beam, vocab, generator=gen).log_softmax(-1)
        step_scores = scores[: len(live)]
        out.append(search.step(step, lprobs, step_scores, None, live))
        scores = torch.cat([scores, torch.zeros(bsz, beam, 1)], dim=2)
    return out


def test_upstream_diverse_beam_search_fails_on_a_later_batch():
    assert fairseq.__version__.startswith("0.12.")
    with pytest.raises(IndexError):
        run_search(UPSTREAM, torch.tensor([16, 17, 18]))  # ids of a second batch of 16


def test_fixed_search_on_any_ids_equals_upstream_on_the_first_batch():
    first_batch = run_search(UPSTREAM, torch.tensor([0, 1, 2]))
    for ids in ([16, 17, 18], [7, 2, 40]):  # a later batch; ids sorted by length, not by value
        fixed = run_search(diverse_beam.PositionIndexedDiverseBeamSearch, torch.tensor(ids))
        for a, b in zip(first_batch, fixed):
            for x, y in zip(a, b):
                assert torch.equal(x, y)


def test_fix_is_installed_for_fairseq_generate():
    assert fairseq.search.DiverseBeamSearch is diverse_beam.PositionIndexedDiverseBeamSearch
    assert diverse_beam.apply()  # idempotent


def test_diverse_beam_search_over_several_batches_stock_and_el(device):
    dictionary = make_dictionary(20)
    stock, el, task = stock_and_el("transformer", dictionary, tiny_args(dim=16, heads=4), seed=5)
    stock, el = stock.to(device), el.to(device)
    argv = ["--beam", "4", "--diverse-beam-groups", "2", "--max-len-a", "0", "--max-len-b", "8"]
    for batch in range(3):
        sample = make_batch(dictionary, [5, 8, 3], seed=batch)
        sample["id"] = sample["id"] + 3 * batch  # dataset ids, as fairseq-generate passes them
        sample = to_device(sample, device)
        assert_hypos_equal(generate(task, stock, sample, argv), generate(task, el, sample, argv))


def test_fairseq_checkpoints_load_with_weights_only(tmp_path):
    dictionary = make_dictionary(8)
    model, _, args = build_translation_model("transformer", dictionary, extra=tiny_args())
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(model, args, str(path))
    state = torch.load(path, weights_only=True)
    assert isinstance(state["args"], argparse.Namespace)
    omegaconf_state = {"cfg": OmegaConf.create({"model": {"arch": "transformer", "x": [1, 2]}})}
    torch.save(omegaconf_state, tmp_path / "omegaconf.pt")  # fairseq 0.10-style checkpoint
    assert torch.load(tmp_path / "omegaconf.pt", weights_only=True)["cfg"].model.x[1] == 2


class Payload:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_anything_else_is_still_refused(tmp_path):
    assert checkpoints.apply()
    torch.save({"model": {}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="system"):
        torch.load(tmp_path / "evil.pt")


def repeated_ngrams(tokens, n):
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


def test_no_repeat_ngram_size_blocks_repeats_on_cpu(monkeypatch):
    import fairseq.sequence_generator as sg

    from fairseq_el.compat import ngram_repeat

    assert sg.NGramRepeatBlock is ngram_repeat.StepLimitedNGramRepeatBlock
    dictionary = make_dictionary(6)  # few words: a 20-token hypothesis must repeat bigrams
    stock, el, task = stock_and_el("transformer", dictionary, tiny_args(dim=16, heads=4), seed=2)
    sample = make_batch(dictionary, [5, 8], seed=1)
    argv = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "20", "--min-len", "20"]
    blocked = generate(task, stock, sample, [*argv, "--no-repeat-ngram-size", "2"])
    for hypos in blocked:
        assert all(repeated_ngrams(h["tokens"].tolist(), 2) == 0 for h in hypos)
    assert_hypos_equal(blocked, generate(task, el, sample, [*argv, "--no-repeat-ngram-size", "2"]))
    monkeypatch.setattr(sg, "NGramRepeatBlock", ngram_repeat.StepLimitedNGramRepeatBlock.__base__)
    upstream = generate(task, stock, sample, [*argv, "--no-repeat-ngram-size", "2"])
    assert any(repeated_ngrams(h[0]["tokens"].tolist(), 2) > 0 for h in upstream), (
        "upstream fairseq 0.12 blocks nothing on CPU; if this fails, the fix may be obsolete"
    )
