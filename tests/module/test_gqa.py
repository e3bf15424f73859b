"""Grouped/multi-query attention: stock parity, incremental decoding, cache, reorder, converter.

The reference for a grouped module is a stock ``MultiheadAttention`` whose key/value heads are the
grouped ones repeated for the query heads of their group (:func:`repeat_kv_heads`): the same
function, computed by fairseq's own code.
"""

from typing import Dict, Optional

import pytest
import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from fairseq_el.attention.grouped import GroupedQueryAttention
from fairseq_el.convert.kv_heads import average_kv_heads, repeat_kv_heads

from helpers import OUTPUT_TOL

EMBED, HEADS, HEAD_DIM, ENC_DIM = 16, 4, 4, 12
GROUPED = [1, 2]  # multi-query and grouped-query with 4 query heads


def causal_mask(tgt_len: int) -> Tensor:
    return torch.triu(torch.full((tgt_len, tgt_len), float("-inf")), 1)  # (T, T)


def padding_mask(bsz: int, src_len: int) -> Tensor:
    mask = torch.zeros(bsz, src_len, dtype=torch.bool)  # (B, S), True at padding
    mask[0, -2:] = True
    return mask


def build(kv_heads: Optional[int], encdec: bool, seed: int = 0) -> MultiheadAttention:
    """A seeded GQA module (``kv_heads``) or stock module (None), self- or enc-dec attention."""
    torch.manual_seed(seed)
    kw = dict(kdim=ENC_DIM, vdim=ENC_DIM, encoder_decoder_attention=True) if encdec else {}
    kw.setdefault("self_attention", not encdec)
    if kv_heads is None:
        return MultiheadAttention(EMBED, HEADS, **kw).eval()
    return GroupedQueryAttention(EMBED, HEADS, kv_heads, **kw).eval()


def stock_twin(gqa: GroupedQueryAttention) -> MultiheadAttention:
    """The stock module computing the same function as ``gqa``."""
    name = "encoder_attn" if gqa.encoder_decoder_attention else "self_attn"
    prefix = f"decoder.layers.0.{name}."
    state = {prefix + k: v for k, v in gqa.state_dict().items()}
    state = repeat_kv_heads(state, HEADS, gqa.kv_heads)
    stock = build(None, gqa.encoder_decoder_attention)
    stock.load_state_dict({k[len(prefix) :]: v for k, v in state.items()})
    return stock


def run_incremental(module: MultiheadAttention, x: Tensor, enc: Optional[Tensor] = None,
                    enc_mask: Optional[Tensor] = None, state: Optional[Dict] = None,
                    ) -> Tensor:  # fmt: skip
    """Feed ``x`` (T, B, E) one position at a time, as a decoder does; returns (T, B, E)."""
    state = {} if state is None else state
    outs = []
    for t in range(x.size(0)):
        step = x[t : t + 1]  # (1, B, E)
        if enc is None:
            out, _ = module(step, step, step, incremental_state=state)
        else:
            out, _ = module(step, enc, enc, key_padding_mask=enc_mask, incremental_state=state,
                            static_kv=True)  # fmt: skip
        outs.append(out)
    return torch.cat(outs)


def cache(module: MultiheadAttention, state: Dict) -> Dict[str, Optional[Tensor]]:
    return module._get_input_buffer(state)


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("encdec", [False, True])
def test_all_heads_is_stock(encdec):
    gqa, stock = build(HEADS, encdec), build(None, encdec)
    gqa_state, stock_state = gqa.state_dict(), stock.state_dict()
    assert list(gqa_state) == list(stock_state)
    for key, value in stock_state.items():
        assert torch.equal(gqa_state[key], value), key  # same init from the same seed
    x, enc = torch.randn(5, 3, EMBED), torch.randn(6, 3, ENC_DIM)
    kv = (enc, enc) if encdec else (x, x)
    mask = dict(key_padding_mask=padding_mask(3, 6)) if encdec else dict(attn_mask=causal_mask(5))
    for kwargs in (dict(mask), dict(mask, need_head_weights=True)):
        out_g, w_g = gqa(x, *kv, **kwargs)
        out_s, w_s = stock(x, *kv, **kwargs)
        assert torch.equal(out_g, out_s) and torch.equal(w_g, w_s)
    enc_arg = (enc, padding_mask(3, 6)) if encdec else ()
    assert torch.equal(run_incremental(gqa, x, *enc_arg), run_incremental(stock, x, *enc_arg))


@pytest.mark.parametrize("kv_heads", [0, 3, 5])
def test_bad_kv_heads_rejected(kv_heads):
    with pytest.raises(ValueError, match="divisible by kv_heads"):
        GroupedQueryAttention(EMBED, HEADS, kv_heads, self_attention=True)


@pytest.mark.parametrize("kv_heads", GROUPED)
def test_parameter_shapes(kv_heads):
    gqa = build(kv_heads, encdec=True)
    assert gqa.q_proj.weight.shape == (EMBED, EMBED)
    assert gqa.k_proj.weight.shape == (kv_heads * HEAD_DIM, ENC_DIM)
    assert gqa.v_proj.weight.shape == (kv_heads * HEAD_DIM, ENC_DIM)
    assert gqa.out_proj.weight.shape == (EMBED, EMBED)
    assert list(gqa.state_dict()) == list(build(None, encdec=True).state_dict())


@pytest.mark.parametrize("kv_heads", GROUPED)
def test_self_attention_matches_stock_and_incremental(kv_heads, device):
    gqa = build(kv_heads, encdec=False)
    stock = stock_twin(gqa).to(device)
    gqa = gqa.to(device)
    x = torch.randn(7, 3, EMBED).to(device)  # (T, B, E)
    causal, padding = causal_mask(7).to(device), padding_mask(3, 7).to(device)
    full, weights = gqa(x, x, x, attn_mask=causal, key_padding_mask=padding,
                        need_head_weights=True)  # fmt: skip
    ref, _ = stock(x, x, x, attn_mask=causal, key_padding_mask=padding)
    ref_state: Dict = {}
    run_incremental(stock, x, state=ref_state)  # stock caches all H heads per position
    assert weights.shape == (HEADS, 3, 7, 7)

    state: Dict = {}
    inc = run_incremental(gqa, x, state=state)
    full_causal, _ = gqa(x, x, x, attn_mask=causal)
    d_stock, d_inc = max_diff(full, ref), max_diff(inc, full_causal)
    print(f"kv_heads={kv_heads} self-attn: |gqa-stock|={d_stock:.3g} |incr-full|={d_inc:.3g}")
    assert d_stock <= OUTPUT_TOL and d_inc <= OUTPUT_TOL
    saved = cache(gqa, state)
    assert saved["prev_key"].shape == (3, kv_heads, 7, HEAD_DIM)
    assert saved["prev_value"].shape == (3, kv_heads, 7, HEAD_DIM)
    assert cache(stock, ref_state)["prev_key"].shape == (3, HEADS, 7, HEAD_DIM)


@pytest.mark.parametrize("kv_heads", GROUPED)
def test_encoder_attention_matches_stock_and_incremental(kv_heads, device):
    gqa = build(kv_heads, encdec=True)
    stock = stock_twin(gqa).to(device)
    gqa = gqa.to(device)
    x, enc, enc_mask = torch.randn(5, 3, EMBED), torch.randn(6, 3, ENC_DIM), padding_mask(3, 6)
    x, enc, enc_mask = x.to(device), enc.to(device), enc_mask.to(device)
    full, w_g = gqa(x, enc, enc, key_padding_mask=enc_mask, static_kv=True,
                    need_head_weights=True)  # fmt: skip
    ref, w_s = stock(x, enc, enc, key_padding_mask=enc_mask, static_kv=True,
                     need_head_weights=True)  # fmt: skip
    state: Dict = {}
    inc = run_incremental(gqa, x, enc, enc_mask, state)
    d_stock, d_w, d_inc = max_diff(full, ref), max_diff(w_g, w_s), max_diff(inc, full)
    print(f"kv_heads={kv_heads} enc-dec: |gqa-stock|={d_stock:.3g} |weights|={d_w:.3g} "
          f"|incr-full|={d_inc:.3g}")  # fmt: skip
    assert max(d_stock, d_w, d_inc) <= OUTPUT_TOL
    assert cache(gqa, state)["prev_key"].shape == (3, kv_heads, 6, HEAD_DIM)
    assert cache(gqa, state)["prev_value"].shape == (3, kv_heads, 6, HEAD_DIM)


@pytest.mark.parametrize("kv_heads", GROUPED)
def test_encoder_attention_shared_keys_per_sentence(kv_heads):
    """Queries of beam x hypotheses per sentence against keys kept once per sentence."""
    gqa = build(kv_heads, encdec=True)
    beam, x, enc = 3, torch.randn(4, 2 * 3, EMBED), torch.randn(6, 2, ENC_DIM)
    enc_mask = padding_mask(2, 6)
    shared, _ = gqa(x, enc, enc, key_padding_mask=enc_mask, static_kv=True)
    rows = torch.arange(2).repeat_interleave(beam)  # sentence of every hypothesis row
    expanded, _ = gqa(x, enc[:, rows], enc[:, rows], key_padding_mask=enc_mask[rows],
                      static_kv=True)  # fmt: skip
    assert max_diff(shared, expanded) <= OUTPUT_TOL


@pytest.mark.parametrize("kv_heads", GROUPED)
def test_reorder_incremental_state_follows_beam(kv_heads):
    """Reordering the cache mid-decoding == decoding the reordered histories from scratch."""
    gqa = build(kv_heads, encdec=False)
    x = torch.randn(6, 4, EMBED)  # (T, B*beam, E)
    new_order = torch.tensor([1, 1, 3, 0])  # a beam step: hypotheses copied and dropped
    state: Dict = {}
    run_incremental(gqa, x[:3], state=state)
    gqa.reorder_incremental_state(state, new_order)
    assert cache(gqa, state)["prev_key"].shape == (4, kv_heads, 3, HEAD_DIM)
    after = run_incremental(gqa, x[3:], state=state)
    history = torch.cat([x[:3, new_order], x[3:]])  # (T, B*beam, E)
    ref, _ = gqa(history, history, history, attn_mask=causal_mask(6))
    assert max_diff(after, ref[3:]) <= OUTPUT_TOL

    enc_attn = build(kv_heads, encdec=True)
    enc, enc_mask = torch.randn(5, 4, ENC_DIM), padding_mask(4, 5)
    state = {}
    run_incremental(enc_attn, x[:3], enc, enc_mask, state)
    kept = torch.tensor([2, 3])  # finished sentences leave the batch
    enc_attn.reorder_incremental_state(state, kept)
    assert cache(enc_attn, state)["prev_key"].shape == (2, kv_heads, 5, HEAD_DIM)
    after = run_incremental(enc_attn, x[3:, kept], enc[:, kept], enc_mask[kept], state)
    ref, _ = enc_attn(x[3:, kept], enc[:, kept], enc[:, kept], key_padding_mask=enc_mask[kept],
                      static_kv=True)  # fmt: skip
    assert max_diff(after, ref) <= OUTPUT_TOL


def test_before_softmax_rejected():
    gqa, x = build(2, encdec=False), torch.randn(3, 2, EMBED)
    with pytest.raises(NotImplementedError, match="before_softmax"):
        gqa(x, x, x, before_softmax=True)


def decoder_state(layers: int = 2) -> Dict[str, Tensor]:
    """A stock decoder attention state dict, plus entries the converter must leave alone."""
    state: Dict[str, Tensor] = {"encoder.layers.0.self_attn.k_proj.weight": torch.randn(16, 16)}
    for i in range(layers):
        for name in ("self_attn", "encoder_attn"):
            module = build(None, encdec=name == "encoder_attn", seed=i)
            for key, value in module.state_dict().items():
                state[f"decoder.layers.{i}.{name}.{key}"] = value
    return state


@pytest.mark.parametrize("kv_heads", GROUPED)
def test_average_kv_heads(kv_heads):
    state = decoder_state()
    with pytest.warns(UserWarning, match="needs uptraining"):
        new = average_kv_heads(state, HEADS, kv_heads)
    assert list(new) == list(state)
    group = HEADS // kv_heads
    for key, value in state.items():
        if key.startswith("decoder.") and (".k_proj." in key or ".v_proj." in key):
            heads = value.view(HEADS, HEAD_DIM, -1)  # (H, D, C) (C = 1 for a bias)
            for g in range(kv_heads):
                want = heads[g * group : (g + 1) * group].mean(dim=0)  # (D, C)
                got = new[key].view(kv_heads, HEAD_DIM, -1)[g]
                assert torch.allclose(got, want, atol=1e-7), key
        else:
            assert new[key] is value, key
    # the averaged dict loads into grouped modules, and repeating + averaging is the identity
    gqa = build(kv_heads, encdec=True)
    prefix = "decoder.layers.1.encoder_attn."
    gqa.load_state_dict({k[len(prefix) :]: v for k, v in new.items() if k.startswith(prefix)})
    with pytest.warns(UserWarning):
        again = average_kv_heads(repeat_kv_heads(new, HEADS, kv_heads), HEADS, kv_heads)
    assert all(torch.allclose(again[k], new[k], atol=1e-7) for k in new)


def test_average_kv_heads_rejects_bad_input():
    state = decoder_state(layers=1)
    with pytest.raises(ValueError, match="kv_heads must divide num_heads"):
        average_kv_heads(state, HEADS, 3)
    with pytest.warns(UserWarning):
        grouped = average_kv_heads(state, HEADS, 2)
    with pytest.raises(ValueError, match="expected 16 for a multi-head"):
        average_kv_heads(grouped, HEADS, 1)  # already grouped: averaging again would be wrong
    with pytest.raises(ValueError, match="no decoder"):
        average_kv_heads({"encoder.layers.0.self_attn.k_proj.weight": torch.zeros(4, 4)}, 4, 1)


def test_grouped_cross_attention_method_order():
    """EL first, then N key/value heads, then the stock forward; the former names still import."""
    from fairseq.modules import MultiheadAttention

    from fairseq_el.attention.base import AttentionBase
    from fairseq_el.attention.cross import (
        ELCrossAttention,
        ELGroupedCrossAttention,
        ELGroupedQueryAttention,
        ELMultiheadAttention,
    )
    from fairseq_el.models.decoder import ELGroupedQueryAttention as former_home

    order = ELGroupedCrossAttention.__mro__
    chain = [ELCrossAttention, GroupedQueryAttention, AttentionBase, MultiheadAttention]
    assert [order.index(c) for c in chain] == sorted(order.index(c) for c in chain)
    assert ELMultiheadAttention is ELCrossAttention
    assert ELGroupedQueryAttention is ELGroupedCrossAttention is former_home
    module = ELGroupedCrossAttention(8, 4, 2, encoder_decoder_attention=True)
    assert module.k_proj.out_features == 4 and not module.in_place_cache
