"""Grouped-query and multi-query attention (Shazeer 2019; Ainslie et al. 2023) for fairseq.

``H`` query heads share ``N`` key/value heads: query head ``h`` attends with key/value head
``h // (H / N)``, so the heads of a group are contiguous, as in the usual ``repeat_kv`` layout.
``N = 1`` is multi-query attention, ``N = H`` is stock multi-head attention. Only the key and
value projections shrink (to ``N * head_dim`` outputs), so the incremental cache holds ``N`` heads
per position instead of ``H``: that cache is what makes decoding memory-bound, and what this saves.
"""

from typing import Optional, Tuple

import torch
from fairseq.modules import MultiheadAttention
from fairseq.modules.quant_noise import quant_noise
from torch import Tensor, nn

from fairseq_el.attention.base import AttentionBase, AttentionCall, IncrementalState
from fairseq_el.attention.cache import DecodingCache
from fairseq_el.attention.math import ancestral_attention, attention_weights


class GroupedQueryAttention(AttentionBase):
    """``MultiheadAttention`` whose keys and values have ``kv_heads`` heads.

    Parameter names are the stock ones; ``k_proj`` and ``v_proj`` map to ``kv_heads * head_dim``.
    With ``kv_heads == num_heads`` the module *is* the stock one: same parameters, same
    initialisation from the same seed, and the stock forward. With ``kv_heads < num_heads``,
    incremental self-attention keeps ``prev_key``/``prev_value`` of shape (batch, kv_heads, time,
    head_dim) in a :class:`~fairseq_el.attention.cache.DecodingCache`: written in place, reordered
    by ancestry, read by :func:`~fairseq_el.attention.math.ancestral_attention`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kv_heads: int,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = True,
        self_attention: bool = False,
        encoder_decoder_attention: bool = False,
        q_noise: float = 0.0,
        qn_block_size: int = 8,
    ):
        if kv_heads < 1 or num_heads % kv_heads != 0:
            raise ValueError(
                f"grouped-query attention needs 1 <= kv_heads <= num_heads with num_heads "
                f"divisible by kv_heads; got num_heads={num_heads}, kv_heads={kv_heads}"
            )
        super().__init__(
            embed_dim, num_heads, kdim=kdim, vdim=vdim, dropout=dropout, bias=bias,
            self_attention=self_attention, encoder_decoder_attention=encoder_decoder_attention,
            q_noise=q_noise, qn_block_size=qn_block_size,
        )  # fmt: skip
        self.kv_heads = kv_heads
        if kv_heads != num_heads:
            kv_dim = kv_heads * self.head_dim
            self.k_proj = quant_noise(
                nn.Linear(self.kdim, kv_dim, bias=bias), q_noise, qn_block_size
            )
            self.v_proj = quant_noise(
                nn.Linear(self.vdim, kv_dim, bias=bias), q_noise, qn_block_size
            )
            self.reset_parameters()

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        if self.caches_in_place and call.incremental_state is not None and not call.before_softmax:
            return self._cached_self_attention(call)
        if self.kv_heads == self.num_heads:
            return super().attend(call)
        if call.before_softmax:
            raise NotImplementedError(
                "grouped-query attention does not return pre-softmax scores (before_softmax): "
                "its values have kv_heads heads, not the num_heads callers of it expect"
            )
        k, v, key_padding_mask = self._keys_values(
            call.query,
            call.key,
            call.value,
            call.key_padding_mask,
            call.incremental_state,
            call.static_kv,
        )  # k, v: (Bk, N, S, D)
        return self._attend(
            call.query, k, v, key_padding_mask, call.attn_mask, call.returns_weights,
            call.need_head_weights,
        )  # fmt: skip

    @property
    def caches_in_place(self) -> bool:
        """Whether incremental self-attention keeps its keys and values in a
        :class:`~fairseq_el.attention.cache.DecodingCache` (N < H here; with all heads this is
        the stock module, stock cache included)."""
        return self.self_attention and self.kv_heads != self.num_heads and not self.use_xformers

    def _cached_self_attention(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        """Incremental self-attention over keys and values written in place, read by ancestry."""
        query = call.query
        tgt_len, bsz, embed_dim = query.size()
        assert call.incremental_state is not None
        shape = (tgt_len, bsz, self.kv_heads, self.head_dim)
        k = self.k_proj(query).view(shape).permute(1, 2, 0, 3)  # (N, K, t, D)
        v = self.v_proj(query).view(shape).permute(1, 2, 0, 3)  # (N, K, t, D)
        cache = DecodingCache(self._get_input_buffer(call.incremental_state))
        slots = cache.append({"prev_key": k, "prev_value": v}, call.key_padding_mask)
        self._set_input_buffer(call.incremental_state, cache.buffer)

        group = self.num_heads // self.kv_heads  # query heads per key/value head
        q = self.q_proj(query) * self.scaling  # (t, N, H*D)
        q = q.view(tgt_len, bsz, self.kv_heads, group, self.head_dim)  # (t, N, K, G, D)
        q = q.permute(1, 2, 3, 0, 4).reshape(bsz, self.kv_heads, group * tgt_len, -1)
        # q: (N, K, G*t, D)
        attn_mask = None if call.attn_mask is None else call.attn_mask.repeat(group, 1)
        # attn_mask: (G*t, T)
        ctx, probs = ancestral_attention(
            q, slots["prev_key"], slots["prev_value"], cache.ancestry(), cache.padding(),
            attn_mask, self.dropout_module,
        )  # fmt: skip
        # ctx: (N, K, G*t, D); probs: (N, K, G*t, T)
        ctx = ctx.view(bsz, self.kv_heads, group, tgt_len, self.head_dim)  # (N, K, G, t, D)
        attn = self.out_proj(ctx.permute(3, 0, 1, 2, 4).reshape(tgt_len, bsz, embed_dim))
        # attn: (t, N, E)
        weights: Optional[Tensor] = None
        if call.returns_weights:
            weights = probs.view(bsz, self.num_heads, tgt_len, -1).transpose(0, 1)  # (H, N, t, T)
            if not call.need_head_weights:
                weights = weights.mean(dim=0)  # (N, t, T)
        return attn, weights

    def _keys_values(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        incremental_state: IncrementalState,
        static_kv: bool,
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Project (or read from the cache) the keys and values, as stock attention does."""
        saved_state = None
        if incremental_state is not None:
            saved_state = self._get_input_buffer(incremental_state)
            if static_kv and "prev_key" in saved_state:
                key = value = None  # the encoder-side keys/values are cached
        if self.self_attention:
            key = value = query
        elif self.encoder_decoder_attention and key is not None:
            value = key  # stock projects the values from `key` too
            bsz = query.size(1)
            if self.beam_size > 1 and bsz == key.size(1):
                key = value = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0]
                # key: (S, B/beam, C)
                if key_padding_mask is not None:
                    kpm = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))
                    key_padding_mask = kpm[:, 0]  # (B/beam, S)

        k: Optional[Tensor] = None
        v: Optional[Tensor] = None
        if key is not None:
            assert value is not None
            src_len, kv_bsz, _ = key.size()
            k = self.k_proj(key).view(src_len, kv_bsz, self.kv_heads, self.head_dim)  # (S,Bk,N,D)
            k = k.permute(1, 2, 0, 3)  # (Bk, N, S, D)
            v = self.v_proj(value).view(src_len, kv_bsz, self.kv_heads, self.head_dim)
            v = v.permute(1, 2, 0, 3)  # (Bk, N, S, D)

        if saved_state is not None:
            if "prev_key" in saved_state:
                prev_key, prev_value = saved_state["prev_key"], saved_state["prev_value"]
                assert prev_key is not None and prev_value is not None  # (Bk, N, S', D) each
                if static_kv:
                    k, v = prev_key, prev_value
                else:
                    assert k is not None and v is not None
                    k = torch.cat([prev_key, k], dim=2)  # (Bk, N, S'+S, D)
                    v = torch.cat([prev_value, v], dim=2)  # (Bk, N, S'+S, D)
            assert k is not None and v is not None
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved_state.get("prev_key_padding_mask"),
                batch_size=k.size(0),
                src_len=k.size(2),
                static_kv=static_kv,
            )  # (Bk, S) or None
            saved_state["prev_key"] = k
            saved_state["prev_value"] = v
            saved_state["prev_key_padding_mask"] = key_padding_mask
            self._set_input_buffer(incremental_state, saved_state)
        assert k is not None and v is not None
        return k, v, key_padding_mask

    def _attend(
        self,
        query: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding_mask: Optional[Tensor],
        attn_mask: Optional[Tensor],
        need_weights: bool,
        need_head_weights: bool,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Each group of H/N query heads attends with its key/value head.

        The query batch may be x times the key batch (beam hypotheses of a sentence contiguous,
        against encoder keys kept once per sentence), as in stock attention.
        """
        tgt_len, bsz, embed_dim = query.size()
        kv_bsz, num_kv, src_len, head_dim = k.size()
        if bsz % kv_bsz != 0:
            raise ValueError(f"query batch {bsz} is not a multiple of the key batch {kv_bsz}")
        group = self.num_heads // num_kv  # query heads per key/value head
        x = bsz // kv_bsz  # query rows per key row

        q = self.q_proj(query) * self.scaling  # (T, B, H*D)
        q = q.view(tgt_len, kv_bsz, x, num_kv, group, head_dim)  # (T, Bk, x, N, G, D)
        q = q.permute(1, 3, 2, 4, 0, 5).reshape(kv_bsz, num_kv, x * group * tgt_len, head_dim)
        # q: (Bk, N, x*G*T, D)
        scores = torch.matmul(q, k.transpose(2, 3))  # (Bk, N, x*G*T, S)
        scores = scores.view(kv_bsz, num_kv, x, group, tgt_len, src_len)  # (Bk, N, x, G, T, S)
        if attn_mask is not None:
            if attn_mask.dim() != 2:
                raise ValueError(
                    f"attn_mask must be (tgt_len, src_len), got {tuple(attn_mask.shape)}"
                )
            scores = scores + attn_mask  # (T, S) broadcast
        padding = None
        if key_padding_mask is not None:
            padding = key_padding_mask.view(kv_bsz, 1, 1, 1, 1, src_len)  # (Bk, 1, 1, 1, 1, S)
        probs_float, probs = attention_weights(scores, padding, self.dropout_module)
        # probs: (Bk, N, x, G, T, S)

        ctx = torch.matmul(probs.view(kv_bsz, num_kv, -1, src_len), v)  # (Bk, N, x*G*T, D)
        ctx = ctx.view(kv_bsz, num_kv, x, group, tgt_len, head_dim)  # (Bk, N, x, G, T, D)
        ctx = ctx.permute(4, 0, 2, 1, 3, 5).reshape(tgt_len, bsz, embed_dim)  # (T, B, H*D)
        attn = self.out_proj(ctx)  # (T, B, E)

        weights: Optional[Tensor] = None
        if need_weights:
            weights = probs_float.permute(1, 3, 0, 2, 4, 5)  # (N, G, Bk, x, T, S)
            weights = weights.reshape(self.num_heads, bsz, tgt_len, src_len)  # (H, B, T, S)
            if not need_head_weights:
                weights = weights.mean(dim=0)  # (B, T, S)
        return attn, weights
