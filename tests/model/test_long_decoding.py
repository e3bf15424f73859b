"""EL models' in-place self-attention caches vs stock fairseq: long outputs, shrinking batches.

Every EL self-attention (stock layout, ``--el-self-attention``, ``--decoder-kv-heads``) keeps its
cache in a :class:`~fairseq_el.attention.cache.DecodingCache`. Identical tokens, scores within
1e-4, fp32, on every device of the ``device`` fixture.
"""

from typing import List

import pytest
import torch

from fairseq_el.attention.cache import DecodingCache
from fairseq_el.convert.kv_heads import average_kv_heads, repeat_kv_heads
from fairseq_el.testing import build_translation_model

from helpers import (
    assert_hypos_equal,
    generate,
    make_batch,
    make_dictionary,
    tiny_args,
    to_device,
)

VARIANTS = {"el": [], "el-sa": ["--el-self-attention"], "gqa": ["--decoder-kv-heads", "2"]}
HEADS = 4
LONG = ["--max-len-a", "0", "--max-len-b", "210", "--min-len", "205"]  # >= 205 steps each
SEARCHES = {
    "beam": ["--beam", "4"],
    "greedy": ["--beam", "1"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2"],
    "sampling": ["--sampling", "--sampling-topk", "5", "--beam", "3", "--seed", "7"],
    "nbest": ["--beam", "4", "--nbest", "2"],
    "no_repeat_ngram": ["--beam", "4", "--no-repeat-ngram-size", "3"],
}


def el_and_stock(variant: str, dim: int, device: str, state=None, seed: int = 1):
    """An EL ``transformer`` of ``variant`` and the stock model computing the same, on
    ``device``."""
    dictionary = make_dictionary(16 if state is not None else 24)
    extra = tiny_args(dim=dim, heads=HEADS, ffn=2 * dim)
    el, task, _ = build_translation_model(
        "el_transformer", dictionary, extra=[*extra, *VARIANTS[variant]], seed=seed
    )
    if state is not None:
        el.load_state_dict(average_kv_heads(state, HEADS, 2) if variant == "gqa" else state)
    stock, _, _ = build_translation_model("transformer", dictionary, extra=extra, seed=seed + 1)
    twin = el.state_dict()
    stock.load_state_dict(repeat_kv_heads(twin, HEADS, 2) if variant == "gqa" else twin)
    return el.to(device), stock.to(device), task, dictionary


@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_long_outputs_equal_stock(variant, search, device):
    el, stock, task, dictionary = el_and_stock(variant, dim=16, device=device)
    sample = to_device(make_batch(dictionary, [5, 9, 3], seed=3), device)
    argv = LONG + SEARCHES[search]
    stock_hypos = generate(task, stock, sample, argv)
    assert min(len(h["tokens"]) for hypos in stock_hypos for h in hypos) > 200
    diff = assert_hypos_equal(stock_hypos, generate(task, el, sample, argv))
    print(f"{variant} {search}: > 200 steps, identical tokens, max score diff {diff:.2e}")


@pytest.mark.filterwarnings("ignore:.*uptraining")
@pytest.mark.parametrize("search", ["beam", "diverse_beam", "sampling", "nbest", "no_repeat_ngram"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_finished_sentences_leave_the_batch(
    trained_transformer, monkeypatch, variant, search, device
):
    """Sentences of different lengths finish at different steps; the rest decode on, exact."""
    trained, _, _ = trained_transformer  # its weights are copied into new models
    el, stock, task, dictionary = el_and_stock(variant, 32, device, state=trained.state_dict())
    rows: List[int] = []
    reorder = DecodingCache.reorder

    def recording(cache, new_order):
        rows.append(new_order.numel())
        reorder(cache, new_order)

    monkeypatch.setattr(DecodingCache, "reorder", recording)
    sample = to_device(make_batch(dictionary, [3, 9, 5, 12, 4, 7], seed=11), device)
    argv = ["--max-len-a", "1.2", "--max-len-b", "3", *SEARCHES[search]]
    stock_hypos = generate(task, stock, sample, argv)
    el_hypos = generate(task, el, sample, argv)
    diff = assert_hypos_equal(stock_hypos, el_hypos)
    layers = len(el.decoder.layers)
    per_step = rows[::layers]  # the rows of each step's reorder
    shrunk = [i for i in range(1, len(per_step)) if per_step[i] < per_step[i - 1]]
    assert shrunk and shrunk[0] < len(per_step) - 2, f"no sentence left mid-way: {per_step}"
    print(f"{variant} {search}: rows per step {per_step}, max score diff {diff:.2e}")


def test_recorded_steps_are_every_reorder(device):
    """Guards the recorder above: one reorder per self-attention layer and step."""
    el, _, task, dictionary = el_and_stock("el", dim=16, device=device)
    calls = []
    reorder = DecodingCache.reorder
    DecodingCache.reorder = lambda cache, order: (
        calls.append(order.numel()) or reorder(cache, order)
    )
    try:
        sample = to_device(make_batch(dictionary, [4, 6], seed=1), device)
        generate(task, el, sample, ["--beam", "2", "--max-len-b", "5"])
    finally:
        DecodingCache.reorder = reorder
    assert len(calls) % len(el.decoder.layers) == 0 and calls
    assert torch.tensor(calls).view(-1, len(el.decoder.layers)).unique(dim=1).size(1) == 1
