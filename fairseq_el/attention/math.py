"""The EL-attention identity (Yan et al., ICML 2021) and the other attention math, in one place.

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

Letters (as in ``docs/design.md``; one meaning each across ``fairseq_el/attention``):
``B`` sentences, ``k`` hypotheses per sentence, ``R = B*k`` hypothesis rows, ``S`` source
positions, ``T`` cached target positions, ``t`` positions of this call, ``H`` query heads, ``N``
key/value heads, ``g = H/N`` query heads per key/value head, ``D`` head width, ``C`` model width
(``Ck``, ``Cv``: key and value inputs), ``M`` query rows per key/value head, ``F`` a cached
tensor's feature width.
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
) -> Tuple[Tensor, Tensor]:
    """Multi-head attention of M query rows per sentence against one shared, un-projected memory.

    q: (B, M, H, D) scaled queries (bias included); keys: (B, S, Ck); values: (B, S, Cv);
    key_padding_mask: (B, S), True at padding. Returns the per-head context (B, M, H, D), equal
    to stock ``softmax(q k^T) v`` of the projected keys and values, and the float attention
    probabilities (B, M, H, S).
    """
    sentences, rows, num_heads, head_dim = q.shape
    q_exp = expand_query(q, k_weight)  # (B, M, H, Ck)
    scores = torch.bmm(
        q_exp.reshape(sentences, rows * num_heads, -1),  # (B, M*H, Ck)
        keys.transpose(1, 2),  # (B, Ck, S)
    )  # (B, M*H, S)
    padding = None if key_padding_mask is None else key_padding_mask.unsqueeze(1)  # (B, 1, S)
    probs_float, probs = attention_weights(scores, padding, dropout)  # (B, M*H, S) each
    ctx = torch.bmm(probs, values)  # (B, M*H, Cv)
    ctx = ctx.view(sentences, rows, num_heads, -1)  # (B, M, H, Cv)
    mass = probs.sum(dim=-1).view(sentences, rows, num_heads)  # (B, M, H)
    out = project_values(ctx, mass, v_weight, v_bias, head_dim)  # (B, M, H, D)
    return out, probs_float.view(sentences, rows, num_heads, -1)


def project_values(
    ctx: Tensor, mass: Tensor, v_weight: Tensor, v_bias: Optional[Tensor], head_dim: int
) -> Tensor:
    """The value projection after the weighted sum: ``W_v ctx + mass * b_v`` per head.

    ctx: (..., H, Cv) weighted hidden states; mass: (..., H) the weights' sum after dropout;
    v_weight: (N*D, Cv), v_bias: (N*D,) or None. Returns (..., H, D).
    """
    out = project_context(ctx, v_weight, head_dim)  # (..., H, D)
    if v_bias is None:
        return out
    num_heads = ctx.size(-2)
    bias = v_bias.view(-1, 1, head_dim)  # (N, 1, D): one value head per g query heads
    bias = bias.expand(-1, num_heads // bias.size(0), -1).reshape(num_heads, head_dim)  # (H, D)
    return out + mass.unsqueeze(-1) * bias  # (..., H, D)


def kv_attention(
    q: Tensor,
    keys: Tensor,
    values: Tensor,
    ancestry: Optional[Tensor] = None,
    padding: Optional[Tensor] = None,
    attn_mask: Optional[Tensor] = None,
    dropout: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Attention of query rows against key/value heads: multi-head (N = H), grouped-query or
    multi-query (N < H, the g query heads of a key/value head as rows), or EL self-attention
    (N = 1 head of model width, the expanded queries as rows).

    q: (R, N, M, D) scaled queries, M rows per key/value head; keys, values: (R', N, T, D); the
    query batch R is R' (one key row per query row) or, without ancestry, a multiple of it
    (R/R' query rows per key row, contiguous; their M rows folded as (R/R', M')).
    ancestry: None, or (B, k, T) when keys and values are cache *slots* (R' = R = B*k): the slot
    (within its sentence) that holds each row's position t. Each sentence's queries then score
    against every slot of the sentence (k times the score FLOPs, no copy of the history); the
    ancestor's score is kept, its weight alone is spread back for the weighted sum.
    padding: (R', T) per key row (per slot), True at padding; attn_mask: (M, T), added to the
    scores. Returns the context (R, N, M, D), the float weights (R, N, M, T) and the weight
    mass (R, N, M) after dropout, equal to stock attention over each row's own history.
    """
    key_rows, kv, length, d = keys.shape
    rows, m = q.size(0), q.size(2)
    q = q.view(key_rows, rows // key_rows, kv, m, d).transpose(1, 2)  # (R', N, R/R', M, D)
    q = q.reshape(key_rows, kv, -1, d)  # (R', N, M'', D), M'' = R/R' * M
    if ancestry is None:
        scores = torch.matmul(q, keys.transpose(-1, -2))  # (R', N, M'', T)
    else:
        sentences, hyps, _ = ancestry.shape
        per_slot = q.view(sentences, 1, hyps, kv, m, d).transpose(2, 3)  # (B, 1, N, k, M, D)
        per_slot = per_slot.expand(-1, hyps, -1, -1, -1, -1).reshape(rows, kv, hyps * m, d)
        # per_slot: (R, N, k*M, D): a sentence's queries for each of its slots
        every = torch.matmul(per_slot, keys.transpose(-1, -2))  # (R, N, k*M, T)
        every = every.view(sentences, hyps, kv, hyps, m, length)  # (B, k_slot, N, k_row, M, T)
        index = ancestry.view(sentences, 1, 1, hyps, 1, length).expand(-1, -1, kv, -1, m, -1)
        # index: (B, 1, N, k_row, M, T)
        scores = every.gather(1, index).squeeze(1).transpose(1, 2).reshape(rows, kv, m, length)
        # scores: (R, N, M, T)
        if padding is not None:  # each row's padding is its ancestors'
            padding = padding.view(sentences, hyps, length).gather(1, ancestry)  # (B, k, T)
    if attn_mask is not None:
        tiles = scores.size(-2) // attn_mask.size(0)  # R/R' query rows per key row
        scores = scores + (attn_mask if tiles == 1 else attn_mask.repeat(tiles, 1))  # (M'', T)
    pad = None if padding is None else padding.reshape(scores.size(0), 1, 1, length)
    # pad: (R', 1, 1, T)
    probs_float, probs = attention_weights(scores, pad, dropout)  # (R', N, M'', T) each
    mass = probs.sum(dim=-1)  # (R', N, M'')
    if ancestry is None:
        ctx = torch.matmul(probs, values)  # (R', N, M'', D)
        ctx = ctx.view(key_rows, kv, rows // key_rows, m, d).transpose(1, 2).reshape(rows, kv, m, d)
        # ctx: (R, N, M, D)
        probs_float = probs_float.view(key_rows, kv, rows // key_rows, m, length)
        probs_float = probs_float.transpose(1, 2).reshape(rows, kv, m, length)  # (R, N, M, T)
        mass = mass.view(key_rows, kv, rows // key_rows, m).transpose(1, 2).reshape(rows, kv, m)
        return ctx, probs_float, mass  # (R, N, M, D), (R, N, M, T), (R, N, M)
    spread = probs.new_zeros(sentences, hyps, kv, hyps, m, length)  # (B, k_slot, N, k_row, M, T)
    by_row = probs.view(sentences, hyps, kv, m, length).transpose(1, 2).unsqueeze(1)
    # by_row: (B, 1, N, k_row, M, T)
    spread.scatter_(1, index, by_row)
    ctx = torch.matmul(spread.view(rows, kv, hyps * m, length), values)  # (R, N, k*M, D)
    ctx = ctx.view(sentences, hyps, kv, hyps, m, d).sum(1)  # (B, N, k_row, M, D)
    ctx = ctx.transpose(1, 2).reshape(rows, kv, m, d)  # (R, N, M, D)
    return ctx, probs_float, mass  # (R, N, M, D), (R, N, M, T), (R, N, M)
