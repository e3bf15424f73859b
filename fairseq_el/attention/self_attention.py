"""EL decoder self-attention: the cache holds layer inputs, not projected keys and values."""

from typing import Optional, Tuple

from torch import Tensor

from fairseq_el.attention.base import AttentionBase, AttentionCall
from fairseq_el.attention.cache import DecodingCache
from fairseq_el.attention.math import el_attention

CACHE_KEY = "prev_input"  # (hypotheses, positions so far, C): the attention input of every step


class ELSelfAttention(AttentionBase):
    """Decoder self-attention that caches C numbers per position instead of 2C.

    Stock incremental self-attention stores ``prev_key`` and ``prev_value`` (2C per position and
    hypothesis); this stores the attention input x itself (C) and attends with expanded queries
    (:mod:`fairseq_el.attention.math`). The inputs live in a
    :class:`~fairseq_el.attention.cache.DecodingCache`: written in place, reordered by ancestry;
    each step gathers every row's own history once. Parameters and their names are the stock ones.
    Full-sequence calls (training, scoring) are the stock forward.
    """

    @property
    def caches_in_place(self) -> bool:
        """Whether incremental calls use the cache; extra key slots keep the stock math."""
        return self.bias_k is None and not self.add_zero_attn and not self.use_xformers

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        if call.incremental_state is None or call.before_softmax or not self.caches_in_place:
            return super().attend(call)
        query, incremental_state = call.query, call.incremental_state
        tgt_len, bsz, embed_dim = query.size()
        cache = DecodingCache(self._get_input_buffer(incremental_state))
        cache.append({CACHE_KEY: query.transpose(0, 1)}, call.key_padding_mask)  # (N, t, C)
        self._set_input_buffer(incremental_state, cache.buffer)
        hidden = cache.histories(CACHE_KEY)  # (N, T, C): each row's own inputs
        key_padding_mask = cache.padding()  # (N, T) or None

        q = self.q_proj(query) * self.scaling  # (t, N, E)
        q = q.view(tgt_len, bsz, self.num_heads, self.head_dim).transpose(0, 1)  # (N, t, H, D)
        ctx, probs = el_attention(
            q, hidden, hidden, self.k_proj.weight, self.v_proj.weight, self.v_proj.bias,
            key_padding_mask, self.dropout_module, call.attn_mask,
        )  # fmt: skip
        # ctx: (N, t, H, D); probs: (N, t, H, T)
        attn = self.out_proj(ctx.reshape(bsz, tgt_len, embed_dim).transpose(0, 1))  # (t, N, E)
        weights: Optional[Tensor] = None
        if call.returns_weights:
            weights = probs.permute(2, 0, 1, 3)  # (H, N, t, T)
            if not call.need_head_weights:
                weights = weights.mean(dim=0)  # (N, t, T)
        return attn, weights
