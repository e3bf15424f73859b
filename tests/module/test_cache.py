"""The in-place decoding cache: written in place, reordered by ancestry in fairseq's layout,
copying (exact for any order) where the layout is not known."""

import random
from typing import Dict, List, Optional

import pytest
import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from fairseq_el.attention import cache as cache_module
from fairseq_el.attention.cache import (
    ANCESTRY,
    RUN,
    DecodingCache,
    capacity,
    check_order,
    set_hypotheses,
)
from fairseq_el.attention.grouped import GroupedQueryAttention
from fairseq_el.attention.kv_self_attention import KVSelfAttention
from fairseq_el.attention.self_attention import CACHE_KEY, ELSelfAttention
from fairseq_el.convert.kv_heads import repeat_kv_heads

EMBED, HEADS, TOL = 12, 3, 1e-5


def test_capacity_leaves_little_room_unused():
    assert [capacity(n) for n in (1, 8, 9, 16, 17, 65, 128, 129, 200, 257)] == [
        8, 8, 16, 16, 24, 72, 128, 136, 208, 272,
    ]  # fmt: skip
    for n in range(1, 5000):
        room = capacity(n)
        assert room % 8 == 0 and n <= room < n + max(8, room // 16 + 8), n
    regrowths = len({capacity(n) for n in range(1, 4097)})
    assert regrowths <= 70  # 4096 positions: the history is copied 68 times, stock copies it 8192


def test_append_writes_in_place_and_grows_by_capacity():
    cache = DecodingCache({})
    storages = []
    for t in range(40):
        slots = cache.append({"x": torch.full((3, 2, 1, 4), float(t))})  # (N, A, t, F)
        storages.append(slots["x"].untyped_storage().data_ptr())
        assert slots["x"].shape == (3, 2, t + 1, 4)
    assert len(set(storages[:8])) == 1 and len(set(storages[8:16])) == 1  # room 8, 16, ..., 40
    regrowths = sum(a != b for a, b in zip(storages, storages[1:]))
    assert regrowths == 4  # 8 -> 16 -> 24 -> 32 -> 40 (a freed address may come back: not a set)
    assert slots["x"].untyped_storage().nbytes() == 3 * 2 * 40 * 4 * 4
    expected = torch.arange(40.0).view(1, 1, 40, 1).expand(3, 2, 40, 4)
    assert torch.equal(own_histories(cache, "x"), expected)


def own_histories(cache: DecodingCache, name: str) -> Tensor:
    """Each row's own history (R, ..., T, F), gathered from the slots along the ancestry."""
    view = cache.buffer[name]
    ancestry = cache.ancestry()  # (B, k, T) or None
    if ancestry is None:
        return view
    sentences, hyps, length = ancestry.shape
    slots = ancestry + torch.arange(sentences)[:, None, None] * hyps  # (B, k, T) global slots
    by_time = view.movedim(-2, 1)  # (R, T, ..., F)
    return by_time[slots.view(-1, length), torch.arange(length)[None, :]].movedim(1, -2)


def own_padding(cache: DecodingCache) -> Tensor:
    """Each row's own padding (R, T)."""
    padding = cache.padding()  # (R, T) per slot
    ancestry = cache.ancestry()
    if ancestry is None:
        return padding
    sentences, hyps, length = ancestry.shape
    return padding.view(sentences, hyps, length).gather(1, ancestry).view(-1, length)


def test_beam_reorder_moves_nothing():
    cache = DecodingCache({}, hyps=4)
    for _ in range(5):
        cache.append({"x": torch.randn(8, 1, 3)})  # 2 sentences x beam 4: (N, t, F)
    before = cache.buffer["x"].clone()
    pointer = cache.buffer["x"].untyped_storage().data_ptr()
    cache.reorder(torch.tensor([0, 0, 0, 0, 4, 4, 4, 4]))  # step 0: every beam from beam 0
    cache.reorder(torch.tensor([1, 3, 3, 0, 6, 4, 5, 5]))
    assert cache.ancestry().shape == (2, 4, 5)
    assert cache.buffer["x"].untyped_storage().data_ptr() == pointer
    assert torch.equal(cache.buffer["x"], before)  # slots untouched
    rows = torch.tensor([0, 0, 0, 0, 4, 4, 4, 4])[torch.tensor([1, 3, 3, 0, 6, 4, 5, 5])]
    assert torch.equal(own_histories(cache, "x"), before[rows])


def test_one_hypothesis_per_sentence_keeps_rows_in_their_slots():
    cache = DecodingCache({}, hyps=1)  # greedy, or sampling with --beam 1
    cache.append({"x": torch.randn(6, 2, 3)})
    pointer = cache.buffer["x"].untyped_storage().data_ptr()
    cache.reorder(torch.arange(6))
    assert ANCESTRY not in cache.buffer
    assert cache.buffer["x"].untyped_storage().data_ptr() == pointer
    cache.reorder(torch.tensor([0, 1, 4, 5]))  # two sentences leave
    assert cache.buffer["x"].shape == (4, 2, 3) and ANCESTRY not in cache.buffer


@pytest.mark.parametrize(
    "order, hyps",
    [([0, 2, 2, 3], 2), ([2, 2, 0, 0], 2), ([0, 1, 2], 2), ([2, 0, 1, 3], 1), ([0, 0, 4, 4], 2)],
)
def test_debug_mode_refuses_orders_outside_fairseqs_layout(monkeypatch, order, hyps):
    """A block of k rows from two sentences, sentences out of order, a partial block, a row
    that does not exist."""
    rows = 4
    with pytest.raises(ValueError, match="contiguous hypotheses per sentence"):
        check_order(torch.tensor(order), rows, hyps, hyps)
    monkeypatch.setattr(cache_module, "CHECK_ORDERS", True)
    cache = DecodingCache({}, hyps=hyps)
    cache.append({"x": torch.randn(rows, 1, 3)})
    with pytest.raises(ValueError, match="contiguous hypotheses per sentence"):
        cache.reorder(torch.tensor(order))
    check_order(torch.tensor([1, 1, 2, 3]), rows, 2, 2)  # a beam step: accepted


def random_order(rng: random.Random, rows: int, beam: int, kinds: List[str]) -> List[int]:
    """A beam step, sentences leaving, or an order no generator makes."""
    kind = rng.choice(kinds)
    sentences = rows // beam
    if kind == "beam":
        return [s * beam + rng.randrange(beam) for s in range(sentences) for _ in range(beam)]
    if kind == "leave" and sentences > 1:
        kept = sorted(rng.sample(range(sentences), rng.randrange(1, sentences)))
        return [s * beam + rng.randrange(beam) for s in kept for _ in range(beam)]
    if kind == "permute":
        return rng.sample(range(rows), rows)
    if kind == "any":  # duplicates across sentences, any number of rows
        return [rng.randrange(rows) for _ in range(rng.randrange(1, 2 * rows))]
    return list(range(rows))


FAIRSEQ_ORDERS = ["beam", "leave", "identity"]
ANY_ORDERS = FAIRSEQ_ORDERS + ["permute", "any"]


@pytest.mark.parametrize("layout", ["fairseq", "unknown"])
@pytest.mark.parametrize("seed", range(12))
def test_order_sequence_is_exact(seed, layout, monkeypatch):
    """Against a reference that keeps every row's history and index-selects it, as stock does:
    fairseq's layout (k known, orders checked) by ancestry; any order when k is not known."""
    monkeypatch.setattr(cache_module, "CHECK_ORDERS", True)
    rng = random.Random(seed)
    beam = rng.choice([1, 2, 3, 4])
    rows = beam * rng.randrange(1, 5)
    kinds = FAIRSEQ_ORDERS if layout == "fairseq" else ANY_ORDERS
    cache = DecodingCache({}, hyps=beam if layout == "fairseq" else None)
    reference = {"x": None, "pad": None}
    gen = torch.Generator().manual_seed(seed)
    for step in range(30):
        steps = 3 if step == 0 else 1  # a prompt block first
        new = torch.randn(rows, 2, steps, 3, generator=gen)  # (N, A, t, F)
        pad = torch.rand(rows, steps, generator=gen) < 0.2 if step in (4, 9) else None
        cache.append({"x": new}, pad)
        pad = torch.zeros(rows, steps, dtype=torch.bool) if pad is None else pad
        reference["x"] = new if reference["x"] is None else torch.cat([reference["x"], new], 2)
        reference["pad"] = (
            pad if reference["pad"] is None else torch.cat([reference["pad"], pad], 1)
        )
        assert torch.equal(own_histories(cache, "x"), reference["x"])
        if step >= 4:  # padding from step 4 on
            assert torch.equal(own_padding(cache), reference["pad"])
        order = torch.tensor(random_order(rng, rows, beam, kinds))
        cache.reorder(order)
        reference = {k: v.index_select(0, order) for k, v in reference.items()}
        rows = order.numel()
        if rows % beam:
            beam = 1


def stock_twin(module: MultiheadAttention) -> MultiheadAttention:
    stock = MultiheadAttention(EMBED, HEADS, self_attention=True).eval()
    state = module.state_dict()
    if isinstance(module, GroupedQueryAttention):
        prefix = "decoder.layers.0.self_attn."
        state = {f"{prefix}{k}": v for k, v in state.items()}
        state = repeat_kv_heads(state, HEADS, module.kv_heads)
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    stock.load_state_dict(state)
    return stock


def build(kind: str) -> MultiheadAttention:
    torch.manual_seed(0)
    if kind == "kv":
        module = KVSelfAttention(EMBED, HEADS, self_attention=True)
    elif kind == "el-sa":
        module = ELSelfAttention(EMBED, HEADS, self_attention=True)
    else:
        module = GroupedQueryAttention(EMBED, HEADS, 1, self_attention=True)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-zero biases
    return module.eval()


ORDERS = [
    [0, 0, 0, 4, 4, 4],  # beam 3 step 0: beams from beam 0
    [2, 0, 0, 3, 5, 4],  # a beam step
    [3, 3, 4],  # the first sentence leaves
    [2, 0, 1],  # within the remaining sentence
    [0, 1, 2],  # identity
]


@pytest.mark.parametrize("kind", ["kv", "el-sa", "gqa"])
def test_module_with_reorders_equals_stock(kind):
    """Outputs and per-head weights of every step equal stock incremental attention."""
    module = build(kind)
    stock = stock_twin(module)
    gen = torch.Generator().manual_seed(1)
    mine: Dict[str, Dict[str, Optional[Tensor]]] = {}
    set_hypotheses(mine, 3)  # 2 sentences x 3 hypotheses, as the decoder records it
    ref: Dict[str, Dict[str, Optional[Tensor]]] = {}
    causal = torch.triu(torch.full((2, 2), float("-inf")), 1)
    x = torch.randn(2, 6, EMBED, generator=gen)  # a 2-position prompt block: (t, N, E)
    out, w = module(x, x, x, incremental_state=mine, attn_mask=causal, need_head_weights=True)
    out_s, w_s = stock(x, x, x, incremental_state=ref, attn_mask=causal, need_head_weights=True)
    diffs = [float((out - out_s).abs().max()), float((w - w_s).abs().max())]
    for order in ORDERS:
        order = torch.tensor(order)
        module.reorder_incremental_state(mine, order)
        stock.reorder_incremental_state(ref, order)
        for _ in range(3):
            x = torch.randn(1, order.numel(), EMBED, generator=gen)
            out, w = module(x, x, x, incremental_state=mine, need_head_weights=True)
            out_s, w_s = stock(x, x, x, incremental_state=ref, need_head_weights=True)
            diffs += [float((out - out_s).abs().max()), float((w - w_s).abs().max())]
    print(f"{kind}: max |EL - stock| over outputs and weights {max(diffs):.2e}")
    assert max(diffs) <= TOL
    (buffer,) = [v for k, v in mine.items() if k != RUN]
    assert DecodingCache(buffer).ancestry().size(1) == 3  # reordered by ancestry


def ops(fn) -> List[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.key for e in prof.key_averages()]


@pytest.mark.parametrize("kind", ["kv", "el-sa", "gqa"])
def test_beam_step_copies_no_history(kind):
    """A steady beam step (reorder + attention) runs no cat and no index_select; stock does."""
    module = build(kind)
    state: Dict[str, Dict[str, Optional[Tensor]]] = {}
    set_hypotheses(state, 4)
    x = torch.randn(1, 8, EMBED)
    for _ in range(4):
        module(x, x, x, incremental_state=state)
    module.reorder_incremental_state(state, torch.tensor([0, 0, 0, 0, 4, 4, 4, 4]))

    def step():
        module.reorder_incremental_state(state, torch.tensor([1, 0, 3, 3, 4, 7, 5, 5]))
        module(x, x, x, incremental_state=state)

    names = ops(step)
    assert "aten::cat" not in names and "aten::index_select" not in names, names
    stock, stock_state = stock_twin(module), {}
    for _ in range(4):
        stock(x, x, x, incremental_state=stock_state)

    def stock_step():
        stock.reorder_incremental_state(stock_state, torch.tensor([1, 0, 3, 3, 4, 7, 5, 5]))
        stock(x, x, x, incremental_state=stock_state)

    stock_names = ops(stock_step)
    assert "aten::cat" in stock_names and "aten::index_select" in stock_names
    (buffer,) = [v for k, v in state.items() if k != RUN]
    name = CACHE_KEY if kind == "el-sa" else "prev_key"
    assert buffer[name].size(-2) == 5 and buffer[name].untyped_storage().nbytes() > 0
