"""Tier 1, module parity: EL vs stock ``MultiheadAttention`` with the same weights."""

import itertools

import pytest
import torch
from fairseq.modules import MultiheadAttention

from fairseq_el.attention.cross import ELMultiheadAttention

from helpers import OUTPUT_TOL


def pair(embed_dim, heads, kdim, bias=True, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(kdim=kdim, vdim=kdim, bias=bias, encoder_decoder_attention=True)
    stock = MultiheadAttention(embed_dim, heads, **kwargs).eval()
    el = ELMultiheadAttention(embed_dim, heads, **kwargs).eval()
    el.load_state_dict(stock.state_dict())
    with torch.no_grad():  # non-zero biases, so that dropping the key bias is really tested
        for p in stock.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    el.load_state_dict(stock.state_dict())
    return stock, el


def inputs(bsz, beam, tgt_len, src_len, embed_dim, kdim, padding, seed=1):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(tgt_len, bsz * beam, embed_dim, generator=gen)
    enc = torch.randn(src_len, bsz, kdim, generator=gen)
    mask = None
    if padding:  # left padding of different lengths, one sentence unpadded
        lengths = torch.randint(1, src_len + 1, (bsz,), generator=gen)
        lengths[0] = src_len
        mask = torch.arange(src_len).flip(0).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, S)
    return query, enc, mask


def expand(x, beam, dim):
    """Repeat each sentence ``beam`` times along ``dim``, as fairseq's generator does."""
    return x.repeat_interleave(beam, dim=dim)


GRID = list(
    itertools.product(
        [(1, 8), (3, 4), (4, 4), (5, 3), (7, 2)],  # (heads, head_dim): odd head counts included
        [1, 4],  # beam
        [False, True],  # padding
        [None, 10],  # kdim: same as embed_dim, or an encoder of another width
    )
)


@pytest.mark.parametrize("heads_dim,beam,padding,kdim", GRID)
def test_incremental_matches_stock(heads_dim, beam, padding, kdim, device):
    heads, head_dim = heads_dim
    embed_dim = heads * head_dim
    kdim = kdim or embed_dim
    stock, el = (m.to(device) for m in pair(embed_dim, heads, kdim))
    bsz, src_len = 3, 7
    stock_state, el_state = {}, {}
    max_diff = 0.0
    for step in range(3):
        query, enc, mask = inputs(bsz, beam, 1, src_len, embed_dim, kdim, padding, seed=step)
        if step > 0:
            query, _, _ = inputs(bsz, beam, 1, src_len, embed_dim, kdim, padding, seed=10 + step)
            _, enc, mask = inputs(bsz, beam, 1, src_len, embed_dim, kdim, padding, seed=0)
        query, enc = query.to(device), enc.to(device)
        mask = None if mask is None else mask.to(device)
        # stock Transformer: encoder output expanded per beam, projections cached
        exp_mask = None if mask is None else expand(mask, beam, 0)
        out_s, w_s = stock(
            query,
            expand(enc, beam, 1),
            expand(enc, beam, 1),
            exp_mask,
            incremental_state=stock_state,
            static_kv=True,
            need_weights=True,
        )
        # EL: encoder output once per sentence, nothing cached
        out_e, w_e = el(
            query, enc, enc, mask, incremental_state=el_state, static_kv=True, need_weights=True
        )
        max_diff = max(max_diff, (out_s - out_e).abs().max().item(), (w_s - w_e).abs().max().item())
    print(f"heads={heads} beam={beam} padding={padding} kdim={kdim}: max abs diff {max_diff:.2e}")
    assert max_diff <= OUTPUT_TOL
    assert el_state == {}, "EL attention must not cache anything"
    assert any("prev_key" in v for v in stock_state.values())


@pytest.mark.parametrize("need_head_weights", [False, True])
@pytest.mark.parametrize("tgt_len", [1, 3])
def test_several_target_positions_and_head_weights(need_head_weights, tgt_len, device):
    stock, el = (m.to(device) for m in pair(15, 5, 15, bias=True))
    beam = 2
    query, enc, mask = (x.to(device) for x in inputs(2, beam, tgt_len, 6, 15, 15, padding=True))
    out_s, w_s = stock(
        query,
        expand(enc, beam, 1),
        expand(enc, beam, 1),
        expand(mask, beam, 0),
        static_kv=True,
        need_head_weights=need_head_weights,
    )
    out_e, w_e = el(
        query,
        enc,
        enc,
        mask,
        incremental_state={},
        static_kv=True,
        need_head_weights=need_head_weights,
    )
    assert w_s.shape == w_e.shape
    diff = max((out_s - out_e).abs().max().item(), (w_s - w_e).abs().max().item())
    print(f"tgt_len={tgt_len} head weights={need_head_weights}: max abs diff {diff:.2e}")
    assert diff <= OUTPUT_TOL


def test_without_bias():
    stock, el = pair(12, 3, 12, bias=False)
    query, enc, mask = inputs(2, 3, 1, 5, 12, 12, padding=True)
    # static_kv: the stock fast path (F.multi_head_attention_forward) fails without biases
    out_s, _ = stock(
        query, expand(enc, 3, 1), expand(enc, 3, 1), expand(mask, 3, 0), static_kv=True
    )
    out_e, _ = el(query, enc, enc, mask, incremental_state={})
    assert (out_s - out_e).abs().max().item() <= OUTPUT_TOL


def test_full_sequence_call_is_the_stock_forward():
    """Training, --score-reference and alignment forwards: bit-for-bit the stock module."""
    stock, el = pair(16, 4, 16)
    query, enc, mask = inputs(3, 1, 5, 6, 16, 16, padding=True)
    out_s, w_s = stock(query, enc, enc, mask, static_kv=True)
    out_e, w_e = el(query, enc, enc, mask, static_kv=True)
    assert torch.equal(out_s, out_e) and torch.equal(w_s, w_e)


def test_training_mode_gradients_match():
    """With attention dropout the value bias is scaled by the kept weight mass: still exact."""
    torch.manual_seed(0)
    kwargs = dict(dropout=0.3, encoder_decoder_attention=True)
    stock = MultiheadAttention(8, 2, **kwargs).train()
    el = ELMultiheadAttention(8, 2, **kwargs).train()
    el.load_state_dict(stock.state_dict())
    query, enc, _ = inputs(2, 2, 1, 4, 8, 8, padding=False)
    torch.manual_seed(5)
    out_s, _ = stock(query, expand(enc, 2, 1), expand(enc, 2, 1), None)
    torch.manual_seed(5)
    out_e, _ = el(query, enc, enc, None)  # query batch 4, key batch 2: the EL path
    diff = (out_s - out_e).abs().max().item()
    print(f"dropout 0.3, training mode: max abs diff {diff:.2e}")
    assert diff <= OUTPUT_TOL


def test_query_batch_not_a_multiple_of_encoder_batch_is_refused():
    _, el = pair(8, 2, 8)
    query, enc, _ = inputs(3, 1, 1, 4, 8, 8, padding=False)
    with pytest.raises(ValueError, match="not a multiple"):
        el(query, enc[:, :2], enc[:, :2], None, incremental_state={})
