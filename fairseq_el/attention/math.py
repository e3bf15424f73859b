"""The EL-attention identity (Yan et al., ICML 2021), in one place.

For one head h with query projection q_h = x W_q^h (scaled), key projection
k_j^h = W_k^h s_j + b_k^h and value projection v_j^h = W_v^h s_j + b_v^h of hidden states s_j:

    scores_hj = q_h . k_j^h = (q_h W_k^h) . s_j + q_h . b_k^h
    out_h     = sum_j p_hj v_j^h = W_v^h (sum_j p_hj s_j) + (sum_j p_hj) b_v^h

* ``q_h W_k^h`` is the *expanded query*: model width, attends to the un-projected states s, which
  every head and every hypothesis of a sentence share, so no projected key/value is ever stored.
* ``q_h . b_k^h`` is the same for every position j, and softmax is shift invariant: dropped exactly.
* ``sum_j p_hj`` is 1 without attention dropout, so b_v passes through; with dropout we scale it by
  the kept weight mass, which keeps the identity exact in training mode too.

Costs: the score and weighted-sum products run at model width instead of head width (H times the
FLOPs of stock attention against a cached projection) in exchange for reading one (S, C) tensor per
sentence instead of H (S, C/H) keys and values per hypothesis.
"""

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


def expand_query(q: Tensor, k_weight: Tensor) -> Tensor:
    """Fold each head's key projection into its query.

    q: (..., H, D) scaled per-head queries; k_weight: (N*D, Ck) as in ``nn.Linear``, N key heads
    (N = H for multi-head attention; N < H for grouped-query: head h uses key head h // (H/N)).
    Returns (..., H, Ck).
    """
    num_heads, head_dim = q.shape[-2:]
    w = k_weight.view(-1, head_dim, k_weight.size(-1))  # (N, D, Ck)
    grouped = q.unflatten(-2, (w.size(0), num_heads // w.size(0)))  # (..., N, H/N, D)
    return torch.einsum("...ngd,ndc->...ngc", grouped, w).flatten(-3, -2)  # (..., H, Ck)


def project_context(ctx: Tensor, v_weight: Tensor, head_dim: int) -> Tensor:
    """Apply each head's value projection after the weighted sum.

    ctx: (..., H, Cv) attention-weighted hidden states per head; v_weight: (N*D, Cv).
    Returns (..., H, D).
    """
    num_heads = ctx.size(-2)
    w = v_weight.view(-1, head_dim, v_weight.size(-1))  # (N, D, Cv)
    grouped = ctx.unflatten(-2, (w.size(0), num_heads // w.size(0)))  # (..., N, H/N, Cv)
    return torch.einsum("...ngc,ndc->...ngd", grouped, w).flatten(-3, -2)  # (..., H, D)


def attention_weights(
    scores: Tensor,
    padding: Optional[Tensor] = None,
    dropout: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """Softmax over the last axis of ``scores``, as fairseq's attention computes it.

    padding: True at padded keys, broadcastable to ``scores``; those scores become -inf. The
    softmax runs in float32 whatever the dtype of ``scores``. Returns the float32 weights and the
    weights in the dtype of ``scores`` after ``dropout``.
    """
    if padding is not None:
        scores = scores.masked_fill(padding.to(torch.bool), float("-inf"))
    probs_float = torch.softmax(scores, dim=-1, dtype=torch.float32)
    probs = probs_float.type_as(scores)
    if dropout is not None:
        probs = dropout(probs)
    return probs_float, probs


def el_attention(
    q: Tensor,
    keys: Tensor,
    values: Tensor,
    k_weight: Tensor,
    v_weight: Tensor,
    v_bias: Optional[Tensor],
    key_padding_mask: Optional[Tensor] = None,
    dropout: Optional[Callable[[Tensor], Tensor]] = None,
    attn_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Multi-head attention of M query rows per group against one shared, un-projected memory.

    q: (G, M, H, D) scaled queries (bias included); keys: (G, S, Ck); values: (G, S, Cv);
    key_padding_mask: (G, S), True at padding; attn_mask: (M, S), added to the scores of every
    group and head (fairseq's float mask). Returns the per-head context (G, M, H, D), equal to
    stock ``softmax(q k^T) v`` of the projected keys and values, and the float attention
    probabilities (G, M, H, S).
    """
    groups, rows, num_heads, head_dim = q.shape
    q_exp = expand_query(q, k_weight)  # (G, M, H, Ck)
    scores = torch.bmm(
        q_exp.reshape(groups, rows * num_heads, -1),  # (G, M*H, Ck)
        keys.transpose(1, 2),  # (G, Ck, S)
    )  # (G, M*H, S)
    if attn_mask is not None:
        scores = scores + attn_mask.repeat_interleave(num_heads, dim=0)  # (M*H, S) broadcast
    padding = None if key_padding_mask is None else key_padding_mask.unsqueeze(1)  # (G, 1, S)
    probs_float, probs = attention_weights(scores, padding, dropout)  # (G, M*H, S) each
    ctx = torch.bmm(probs, values)  # (G, M*H, Cv)
    out = project_context(ctx.view(groups, rows, num_heads, -1), v_weight, head_dim)
    # out: (G, M, H, D)
    if v_bias is not None:
        mass = probs.sum(dim=-1).view(groups, rows, num_heads, 1)  # (G, M, H, 1)
        bias = v_bias.view(-1, 1, head_dim)  # (N, 1, D): one value head per group of query heads
        bias = bias.expand(-1, num_heads // bias.size(0), -1).reshape(num_heads, head_dim)
        out = out + mass * bias  # (H, D) broadcast
    return out, probs_float.view(groups, rows, num_heads, -1)


def ancestral_attention(
    q: Tensor,
    keys: Tensor,
    values: Tensor,
    ancestry: Optional[Tensor],
    padding: Optional[Tensor] = None,
    attn_mask: Optional[Tensor] = None,
    dropout: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """Attention of every hypothesis row over its own history, read from slots in place.

    q: (N, K, M, D) scaled queries, M rows per key/value head (query heads of the head x steps);
    keys, values: (N, K, T, D) per slot; ancestry: (G, g, T), N = G*g, the slot (within its
    group) that holds each row's position t, or None when every row's history is its own slot
    (:class:`~fairseq_el.attention.cache.DecodingCache`); padding: (N, T) per row, True at padding;
    attn_mask: (M, T), added to the scores. Each group's queries score against every slot of the
    group (g times the score FLOPs, no copy of the history); the ancestor's score is kept, its
    weight alone is spread back for the weighted sum. Returns the context (N, K, M, D) and the
    float weights (N, K, M, T), equal to stock attention over the reordered histories.
    """
    rows, kv, m, d = q.shape
    length = keys.size(-2)
    if ancestry is None:
        scores = torch.matmul(q, keys.transpose(-1, -2))  # (N, K, M, T)
    else:
        groups, group, _ = ancestry.shape
        per_slot = q.view(groups, 1, group, kv, m, d).transpose(2, 3)  # (G, 1, K, g, M, D)
        per_slot = per_slot.expand(-1, group, -1, -1, -1, -1).reshape(rows, kv, group * m, d)
        # per_slot: (N, K, g*M, D): a group's queries for each of its slots
        every = torch.matmul(per_slot, keys.transpose(-1, -2))  # (N, K, g*M, T)
        every = every.view(groups, group, kv, group, m, length)  # (G, g_slot, K, g_row, M, T)
        index = ancestry.view(groups, 1, 1, group, 1, length).expand(-1, -1, kv, -1, m, -1)
        # index: (G, 1, K, g_row, M, T)
        scores = every.gather(1, index).squeeze(1).transpose(1, 2).reshape(rows, kv, m, length)
        # scores: (N, K, M, T)
    if attn_mask is not None:
        scores = scores + attn_mask  # (M, T) broadcast
    pad = None if padding is None else padding.view(rows, 1, 1, length)  # (N, 1, 1, T)
    probs_float, probs = attention_weights(scores, pad, dropout)  # (N, K, M, T) each
    if ancestry is None:
        return torch.matmul(probs, values), probs_float  # (N, K, M, D), (N, K, M, T)
    spread = probs.new_zeros(groups, group, kv, group, m, length)  # (G, g_slot, K, g_row, M, T)
    by_row = probs.view(groups, group, kv, m, length).transpose(1, 2).unsqueeze(1)
    # by_row: (G, 1, K, g_row, M, T)
    spread.scatter_(1, index, by_row)
    ctx = torch.matmul(spread.view(rows, kv, group * m, length), values)  # (N, K, g*M, D)
    ctx = ctx.view(groups, group, kv, group, m, d).sum(1)  # (G, K, g_row, M, D)
    return ctx.transpose(1, 2).reshape(rows, kv, m, d), probs_float  # (N, K, M, D), (N, K, M, T)
