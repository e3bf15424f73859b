"""EL decoder self-attention: the cache holds layer inputs, not projected keys and values."""

from typing import Optional, Tuple

from torch import Tensor

from fairseq_el.attention.base import AttentionBase, AttentionCall
from fairseq_el.attention.cache import DecodingCache
from fairseq_el.attention.math import expand_query, kv_attention, project_values

CACHE_KEY = "prev_input"  # (hypotheses, positions so far, C): the attention input of every step


class ELSelfAttention(AttentionBase):
    """Decoder self-attention that caches C numbers per position instead of 2C.

    Stock incremental self-attention stores ``prev_key`` and ``prev_value`` (2C per position and
    hypothesis); this stores the attention input x itself (C) and attends with expanded queries
    (:mod:`fairseq_el.attention.math`): one key/value "head" of model width that every query head
    reads. The inputs live in a :class:`~fairseq_el.attention.cache.DecodingCache`, written in
    place and reordered by ancestry, and are read as every other cache is
    (:func:`~fairseq_el.attention.math.kv_attention`). Parameters and their names are the stock
    ones. Full-sequence calls (training, scoring) are the stock forward.
    """

    def __init__(self, *args, in_place_cache: bool = True, **kwargs) -> None:
        super().__init__(*args, in_place_cache=in_place_cache, **kwargs)

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        if call.incremental_state is None or call.before_softmax or not self.in_place_cache:
            return super().attend(call)
        query = call.query
        tgt_len, bsz, embed_dim = query.size()
        cache = DecodingCache.of(self, call.incremental_state)
        slots = cache.append({CACHE_KEY: query.transpose(0, 1)}, call.key_padding_mask)
        hidden = slots[CACHE_KEY].unsqueeze(1)  # (R, 1, T, C): the inputs of every slot

        q = self.q_proj(query) * self.scaling  # (t, R, E)
        q = q.view(tgt_len, bsz, self.num_heads, self.head_dim).transpose(0, 1)  # (R, t, H, D)
        q = expand_query(q, self.k_proj.weight)  # (R, t, H, C)
        q = q.reshape(bsz, 1, tgt_len * self.num_heads, -1)  # (R, 1, t*H, C)
        attn_mask = call.attn_mask
        if attn_mask is not None:
            attn_mask = attn_mask.repeat_interleave(self.num_heads, dim=0)  # (t*H, T)
        ctx, probs, mass = kv_attention(
            q, hidden, hidden, cache.ancestry(), cache.padding(), attn_mask, self.dropout_module
        )  # ctx: (R, 1, t*H, C); probs: (R, 1, t*H, T); mass: (R, 1, t*H)
        out = project_values(
            ctx.view(bsz, tgt_len, self.num_heads, -1),  # (R, t, H, C)
            mass.view(bsz, tgt_len, self.num_heads),  # (R, t, H)
            self.v_proj.weight,
            self.v_proj.bias,
            self.head_dim,
        )  # (R, t, H, D)
        attn = self.out_proj(out.reshape(bsz, tgt_len, embed_dim).transpose(0, 1))  # (t, R, E)
        weights: Optional[Tensor] = None
        if call.returns_weights:
            weights = probs.view(bsz, tgt_len, self.num_heads, -1).permute(2, 0, 1, 3)
            # weights: (H, R, t, T)
            if not call.need_head_weights:
                weights = weights.mean(dim=0)  # (R, t, T)
        return attn, weights
