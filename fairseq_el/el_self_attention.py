"""EL decoder self-attention: the cache holds layer inputs, not projected keys and values."""

from typing import Optional, Tuple

import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from fairseq_el.el_attention import IncrementalState
from fairseq_el.el_math import el_attention

CACHE_KEY = "prev_input"  # (hypotheses, positions so far, C): the attention input of every step


class ELSelfAttention(MultiheadAttention):
    """Decoder self-attention that caches C numbers per position instead of 2C.

    Stock incremental self-attention stores ``prev_key`` and ``prev_value`` (2C per position and
    hypothesis); this stores the attention input x itself (C) and attends with expanded queries
    (:mod:`fairseq_el.el_math`). The cache is reordered with the beam exactly like the stock one
    (the inherited ``reorder_incremental_state`` index-selects every buffer). Parameters and their
    names are the stock ones. Full-sequence calls (training, scoring) are the stock forward.
    """

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: IncrementalState = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        if incremental_state is None or before_softmax or not self._el_supported():
            return super().forward(
                query, key, value, key_padding_mask=key_padding_mask,
                incremental_state=incremental_state, need_weights=need_weights,
                static_kv=static_kv, attn_mask=attn_mask, before_softmax=before_softmax,
                need_head_weights=need_head_weights,
            )  # fmt: skip
        return self._el_forward(
            query, key_padding_mask, incremental_state, attn_mask,
            need_weights or need_head_weights, need_head_weights,
        )  # fmt: skip

    def _el_supported(self) -> bool:
        # extra key slots (bias_k, zero attention) are not part of the identity: stock math
        return self.bias_k is None and not self.add_zero_attn and not self.use_xformers

    def _el_forward(
        self,
        query: Tensor,
        key_padding_mask: Optional[Tensor],
        incremental_state: IncrementalState,
        attn_mask: Optional[Tensor],
        need_weights: bool,
        need_head_weights: bool,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        tgt_len, bsz, embed_dim = query.size()
        saved = self._get_input_buffer(incremental_state)
        hidden = query.transpose(0, 1)  # (N, t, C)
        prev = saved.get(CACHE_KEY)
        if prev is not None:
            hidden = torch.cat([prev, hidden], dim=1)  # (N, T, C)
        src_len = hidden.size(1)
        key_padding_mask = self._append_prev_key_padding_mask(
            key_padding_mask=key_padding_mask,
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
            key_padding_mask, self.dropout_module, attn_mask,
        )  # fmt: skip
        # ctx: (N, t, H, D); probs: (N, t, H, T)
        attn = self.out_proj(ctx.reshape(bsz, tgt_len, embed_dim).transpose(0, 1))  # (t, N, E)
        weights: Optional[Tensor] = None
        if need_weights:
            weights = probs.permute(2, 0, 1, 3)  # (H, N, t, T)
            if not need_head_weights:
                weights = weights.mean(dim=0)  # (N, t, T)
        return attn, weights
