"""Tier 3, generator parity: stock vs EL on the same weights, for every fairseq-generate option.

Identical hypothesis tokens (and alignments), scores within 1e-4, fp32, on batches whose sources
differ in length; on every device of the ``device`` fixture.
"""

import pytest

from helpers import (
    assert_hypos_equal,
    copy_to,
    el_twin,
    generate,
    make_batch,
    make_dictionary,
    stock_and_el,
    tiny_args,
    to_device,
)

DEFAULTS = ["--max-len-a", "0", "--max-len-b", "12"]  # keeps random models short; options override
OPTIONS = {
    "beam": ["--beam", "4"],
    "greedy": ["--beam", "1"],
    "sampling_topk": ["--sampling", "--sampling-topk", "5", "--beam", "3", "--seed", "7"],
    "sampling_topp": ["--sampling", "--sampling-topp", "0.8", "--beam", "2", "--seed", "3"],
    "sampling_one": ["--sampling", "--beam", "1", "--nbest", "1", "--seed", "11"],
    "temperature": ["--beam", "4", "--temperature", "0.7"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2", "--diverse-beam-strength", "0.5"],
    "diverse_beam_4_groups": ["--beam", "4", "--diverse-beam-groups", "4"],
    "diverse_siblings": ["--beam", "4", "--diversity-rate", "0.5"],
    "nbest": ["--beam", "5", "--nbest", "3"],
    "prefix": ["--beam", "3", "--prefix-size", "2"],
    "no_repeat_ngram": ["--beam", "4", "--no-repeat-ngram-size", "2"],
    "lenpen": ["--beam", "4", "--lenpen", "2.0"],
    "unkpen": ["--beam", "4", "--unkpen", "-3"],
    "min_len": ["--beam", "4", "--min-len", "8"],
    "max_len_a_b": ["--beam", "4", "--max-len-a", "1.5", "--max-len-b", "2"],
    "match_source_len": ["--beam", "4", "--match-source-len"],
    "print_alignment": ["--beam", "4", "--print-alignment"],
    "score_reference": ["--score-reference"],
}
LENGTHS = [5, 9, 3, 12, 7]


@pytest.fixture
def models():
    """Fresh per test: stock BART keeps the beam size of the last generator built on it."""
    dictionary = make_dictionary(24)
    transformer = stock_and_el("transformer", dictionary, tiny_args(dim=16, heads=4), seed=1)
    bart = stock_and_el("bart_base", dictionary, tiny_args(dim=18, heads=3), seed=2)
    return dictionary, {"transformer": transformer, "bart": bart}


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("model_name", ["transformer", "bart"])
def test_random_model_parity(models, model_name, name, device):
    dictionary, pairs = models
    stock, el, task = pairs[model_name]
    stock, el = stock.to(device), el.to(device)
    sample = to_device(make_batch(dictionary, LENGTHS, seed=3), device)
    argv = DEFAULTS + OPTIONS[name]
    diff = assert_hypos_equal(generate(task, stock, sample, argv), generate(task, el, sample, argv))
    print(f"{model_name} {name}: identical tokens, max score diff {diff:.2e}")


@pytest.mark.parametrize("name", list(OPTIONS))
def test_trained_model_parity(trained_transformer, name, device):
    trained, task, dictionary = trained_transformer
    el, _, _ = el_twin(trained, "transformer", dictionary, tiny_args(dim=32, heads=4, ffn=64), 9)
    stock, el = copy_to(trained, device), el.to(device)
    sample = to_device(make_batch(dictionary, [4, 8, 6, 3, 7, 5], seed=1234), device)
    argv = ["--max-len-a", "1.2", "--max-len-b", "3"] + OPTIONS[name]
    stock_hypos = generate(task, stock, sample, argv)
    diff = assert_hypos_equal(stock_hypos, generate(task, el, sample, argv))
    distinct = {tuple(hypos[0]["tokens"].tolist()) for hypos in stock_hypos}
    assert len(distinct) == len(stock_hypos), "a trained model's best hypotheses should differ"
    print(f"trained {name}: identical tokens, max score diff {diff:.2e}")


def test_trained_model_reverses(trained_transformer):
    """Guards the fixture: the model learned its task, so its hypotheses are not degenerate."""
    model, task, dictionary = trained_transformer
    sample = make_batch(dictionary, [4, 6, 8], seed=99)
    hypos = generate(task, model, sample, ["--beam", "4"])
    correct = sum(
        h[0]["tokens"].tolist() == t[t.ne(dictionary.pad())].tolist()
        for h, t in zip(hypos, sample["target"])
    )
    assert correct >= 2, f"only {correct}/3 reversed correctly"


def test_el_model_serves_generators_of_any_beam_in_turn(device):
    """Stock BART breaks here (fairseq 0.12 keeps the previous beam size); EL does not."""
    dictionary = make_dictionary(24)
    _, el, task = stock_and_el("bart_base", dictionary, tiny_args(dim=18, heads=3), seed=2)
    el = el.to(device)
    sample = to_device(make_batch(dictionary, LENGTHS, seed=3), device)
    for argv in (OPTIONS["beam"], OPTIONS["greedy"], OPTIONS["nbest"]):
        fresh, _, _ = stock_and_el("bart_base", dictionary, tiny_args(dim=18, heads=3), seed=2)
        assert_hypos_equal(
            generate(task, fresh.to(device), sample, DEFAULTS + argv),
            generate(task, el, sample, DEFAULTS + argv),
        )
