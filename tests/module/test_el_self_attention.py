"""EL self-attention: incremental EL == stock incremental == full forward; C, not 2C, cached."""

import pytest
import torch
from fairseq.modules import MultiheadAttention

from fairseq_el.attention.self_attention import CACHE_KEY, ELSelfAttention

from helpers import (
    OUTPUT_TOL,
    assert_hypos_equal,
    generate,
    make_batch,
    make_dictionary,
    stock_and_el,
    tiny_args,
)


def pair(embed_dim, heads, bias=True):
    torch.manual_seed(0)
    stock = MultiheadAttention(embed_dim, heads, self_attention=True, bias=bias).eval()
    with torch.no_grad():
        for p in stock.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-zero biases
    el = ELSelfAttention(embed_dim, heads, self_attention=True, bias=bias).eval()
    el.load_state_dict(stock.state_dict())
    return stock, el


def full_forward(module, x):
    # static_kv only skips the F.multi_head_attention_forward fast path, which fails without biases
    return module(x, x, x, attn_mask=causal_mask(x.size(0)).to(x.device), static_kv=True)[0]


def causal_mask(length):
    return torch.triu(torch.full((length, length), float("-inf")), 1)


@pytest.mark.parametrize("heads,head_dim", [(1, 8), (3, 4), (4, 4), (5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_incremental_el_equals_stock_incremental_and_full(heads, head_dim, bias, device):
    embed_dim = heads * head_dim
    stock, el = (m.to(device) for m in pair(embed_dim, heads, bias))
    steps, bsz = 6, 4
    x = torch.randn(steps, bsz, embed_dim, generator=torch.Generator().manual_seed(1)).to(device)
    full = full_forward(stock, x)
    stock_state, el_state, out_s, out_e = {}, {}, [], []
    for t in range(steps):
        xt = x[t : t + 1]
        out_s.append(stock(xt, xt, xt, incremental_state=stock_state)[0])
        out_e.append(el(xt, xt, xt, incremental_state=el_state)[0])
        if t == 2:  # a beam reorder in the middle, as beam search does
            order = torch.tensor([1, 1, 3, 0], device=device)
            stock.reorder_incremental_state(stock_state, order)
            el.reorder_incremental_state(el_state, order)
            x = x.index_select(1, order)
            full = full_forward(stock, x)
    out_s, out_e = torch.cat(out_s), torch.cat(out_e)
    d_stock = (out_e - out_s).abs().max().item()
    d_full = (out_e[3:] - full[3:]).abs().max().item()  # after the reorder, x is the reordered one
    print(f"heads={heads} bias={bias}: EL vs stock incremental {d_stock:.2e}, vs full {d_full:.2e}")
    assert d_stock <= OUTPUT_TOL and d_full <= OUTPUT_TOL


def test_cache_holds_c_numbers_per_position_not_2c():
    stock, el = pair(12, 3)
    stock_state, el_state = {}, {}
    for _ in range(5):
        xt = torch.randn(1, 2, 12)
        stock(xt, xt, xt, incremental_state=stock_state)
        el(xt, xt, xt, incremental_state=el_state)

    def numbers(state):
        return sum(v.numel() for buf in state.values() for v in buf.values() if v is not None)

    (el_buffer,) = el_state.values()
    assert el_buffer[CACHE_KEY].shape == (2, 5, 12)  # (hypotheses, positions, C)
    assert numbers(el_state) == 2 * 5 * 12 and numbers(stock_state) == 2 * 2 * 5 * 12


def test_several_new_positions_in_one_incremental_call():
    """A prompt fed in one incremental call with a causal mask: same as one token at a time."""
    stock, el = pair(12, 3)
    x = torch.randn(5, 2, 12)
    one_call, _ = el(x, x, x, incremental_state={}, attn_mask=causal_mask(5))
    full = full_forward(stock, x)
    assert (one_call - full).abs().max().item() <= OUTPUT_TOL


OPTIONS = {
    "beam": ["--beam", "4"],
    "greedy": ["--beam", "1"],
    "sampling": ["--sampling", "--sampling-topk", "5", "--beam", "2", "--seed", "5"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2"],
    "prefix_nbest": ["--beam", "4", "--nbest", "2", "--prefix-size", "2"],
}


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("arch", ["transformer", "bart_base"])
def test_generator_parity_with_el_self_attention(arch, name):
    dictionary = make_dictionary(24)
    extra, el_extra = tiny_args(dim=15, heads=5), ["--el-self-attention"]
    stock, el, task = stock_and_el(arch, dictionary, extra, seed=3, el_extra=el_extra)
    assert isinstance(el.decoder.layers[0].self_attn, ELSelfAttention)
    sample = make_batch(dictionary, [5, 9, 3, 7], seed=2)
    argv = ["--max-len-a", "0", "--max-len-b", "10", *OPTIONS[name]]
    diff = assert_hypos_equal(generate(task, stock, sample, argv), generate(task, el, sample, argv))
    print(f"{arch} {name} with EL self-attention: identical tokens, max score diff {diff:.2e}")
