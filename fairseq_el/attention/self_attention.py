"""EL decoder self-attention: the cache holds layer inputs, not projected keys and values."""

from typing import Optional, Tuple

import torch
from torch import Tensor

from fairseq_el.attention.base import AttentionBase, AttentionCall
from fairseq_el.attention.math import el_attention

CACHE_KEY = "prev_input"  # (hypotheses, positions so far, C): the attention input of every step


class ELSelfAttention(AttentionBase):
    """Decoder self-attention that caches C numbers per position instead of 2C.

    Stock incremental self-attention stores ``prev_key`` and ``prev_value`` (2C per position and
    hypothesis); this stores the attention input x itself (C) and attends with expanded queries
    (:mod:`fairseq_el.attention.math`). The cache is reordered with the beam like the stock one
    (the inherited ``reorder_incremental_state`` index-selects every buffer). Parameters and their
    names are the stock ones. Full-sequence calls (training, scoring) are the stock forward.
    """

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        # extra key slots (bias_k, zero attention) are not part of the identity: stock math
        extra_slots = self.bias_k is not None or self.add_zero_attn
        if (
            call.incremental_state is None
            or call.before_softmax
            or extra_slots
            or self.use_xformers
        ):
            return super().attend(call)
        query, incremental_state = call.query, call.incremental_state
        tgt_len, bsz, embed_dim = query.size()
        saved = self._get_input_buffer(incremental_state)
        hidden = query.transpose(0, 1)  # (N, t, C)
        prev = saved.get(CACHE_KEY)
        if prev is not None:
            hidden = torch.cat([prev, hidden], dim=1)  # (N, T, C)
        src_len = hidden.size(1)
        key_padding_mask = self._append_prev_key_padding_mask(
            key_padding_mask=call.key_padding_mask,
            prev_key_padding_mask=saved.get("prev_key_padding_mask"),
            batch_size=bsz,
            src_len=src_len,
            static_kv=False,
        )  # (N, T) or None
        saved[CACHE_KEY] = hidden
        saved["prev_key_padding_mask"] = key_padding_mask
        self._set_input_buffer(incremental_state, saved)

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
