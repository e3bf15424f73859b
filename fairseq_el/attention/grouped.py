"""Grouped-query and multi-query attention (Shazeer 2019; Ainslie et al. 2023) for fairseq.

``H`` query heads share ``N`` key/value heads: query head ``h`` attends with key/value head
``h // (H / N)``, so the heads of a group are contiguous, as in the usual ``repeat_kv`` layout.
``N = 1`` is multi-query attention, ``N = H`` is stock multi-head attention. Only the key and
value projections shrink (to ``N * head_dim`` outputs), so the incremental cache holds ``N`` heads
per position instead of ``H``: that cache is what makes decoding memory-bound, and what this saves.
"""

from typing import Optional, Tuple

from fairseq.modules.quant_noise import quant_noise
from torch import Tensor, nn

from fairseq_el.attention.base import AttentionBase, AttentionCall
from fairseq_el.attention.cache import DecodingCache
from fairseq_el.attention.math import kv_attention


class GroupedQueryAttention(AttentionBase):
    """``MultiheadAttention`` whose keys and values have ``kv_heads`` heads.

    Parameter names are the stock ones; ``k_proj`` and ``v_proj`` map to ``kv_heads * head_dim``.
    With ``kv_heads == num_heads`` the module has the stock parameters, initialisation (same seed)
    and math. Incremental self-attention keeps ``prev_key``/``prev_value`` of shape (R, N, T, D)
    in a :class:`~fairseq_el.attention.cache.DecodingCache` (``in_place_cache``, the default):
    written in place, reordered by ancestry, read by
    :func:`~fairseq_el.attention.math.kv_attention`. Encoder-decoder calls with an incremental
    state project the encoder output once per run (``static_kv``) and read that projection after.
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
        in_place_cache: bool = True,
    ):
        if kv_heads < 1 or num_heads % kv_heads != 0:
            raise ValueError(
                f"grouped-query attention needs 1 <= kv_heads <= num_heads with num_heads "
                f"divisible by kv_heads; got num_heads={num_heads}, kv_heads={kv_heads}"
            )
        super().__init__(
            embed_dim,
            num_heads,
            kdim=kdim,
            vdim=vdim,
            dropout=dropout,
            bias=bias,
            self_attention=self_attention,
            encoder_decoder_attention=encoder_decoder_attention,
            q_noise=q_noise,
            qn_block_size=qn_block_size,
            in_place_cache=in_place_cache,
        )
        self.kv_heads = kv_heads
        if kv_heads != num_heads:
            if self_attention and not self.in_place_cache:
                raise ValueError(
                    "grouped-query self-attention keeps its incremental keys and values in a "
                    "DecodingCache: build it with in_place_cache=True"
                )
            kv_dim = kv_heads * self.head_dim
            self.k_proj = quant_noise(
                nn.Linear(self.kdim, kv_dim, bias=bias), q_noise, qn_block_size
            )
            self.v_proj = quant_noise(
                nn.Linear(self.vdim, kv_dim, bias=bias), q_noise, qn_block_size
            )
            self.reset_parameters()

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        if self.in_place_cache and call.incremental_state is not None and not call.before_softmax:
            return self._cached_self_attention(call)
        if self.kv_heads == self.num_heads:
            return super().attend(call)
        if call.before_softmax:
            raise NotImplementedError(
                "grouped-query attention does not return pre-softmax scores (before_softmax): "
                "its values have kv_heads heads, not the num_heads callers of it expect"
            )
        if call.attn_mask is not None and call.attn_mask.dim() != 2:
            raise ValueError(
                f"attn_mask must be (tgt_len, src_len), got {tuple(call.attn_mask.shape)}"
            )
        k, v, key_padding_mask = self._keys_values(call)  # k, v: (Bk, N, S, D)
        return self._attend(call, k, v, None, key_padding_mask)

    def _cached_self_attention(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        """Incremental self-attention over keys and values written in place, read by ancestry."""
        query = call.query
        tgt_len, bsz, _ = query.size()
        assert call.incremental_state is not None
        shape = (tgt_len, bsz, self.kv_heads, self.head_dim)
        k = self.k_proj(query).view(shape).permute(1, 2, 0, 3)  # (R, N, t, D)
        v = self.v_proj(query).view(shape).permute(1, 2, 0, 3)  # (R, N, t, D)
        cache = DecodingCache.of(self, call.incremental_state)
        slots = cache.append({"prev_key": k, "prev_value": v}, call.key_padding_mask)
        return self._attend(
            call, slots["prev_key"], slots["prev_value"], cache.ancestry(), cache.padding()
        )

    def _keys_values(self, call: AttentionCall) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Project the keys and values, (Bk, N, S, D) each, as stock attention does; with an
        incremental state (encoder-decoder, ``static_kv``) once per run, read back after."""
        saved = None
        if call.incremental_state is not None:
            saved = self._get_input_buffer(call.incremental_state)
            if "prev_key" in saved:
                k, v = saved["prev_key"], saved["prev_value"]
                assert k is not None and v is not None
                return k, v, saved.get("prev_key_padding_mask")
        key, value = call.key, call.value
        if self.self_attention:
            key = value = call.query
        elif self.encoder_decoder_attention:
            value = key  # stock projects the values from `key` too
        assert key is not None and value is not None
        src_len, kv_bsz, _ = key.size()
        shape = (src_len, kv_bsz, self.kv_heads, self.head_dim)
        k = self.k_proj(key).view(shape).permute(1, 2, 0, 3)  # (Bk, N, S, D)
        v = self.v_proj(value).view(shape).permute(1, 2, 0, 3)  # (Bk, N, S, D)
        if saved is not None:
            saved["prev_key"], saved["prev_value"] = k, v
            saved["prev_key_padding_mask"] = call.key_padding_mask
            self._set_input_buffer(call.incremental_state, saved)
        return k, v, call.key_padding_mask

    def _attend(
        self,
        call: AttentionCall,
        k: Tensor,
        v: Tensor,
        ancestry: Optional[Tensor],
        padding: Optional[Tensor],
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Each group of g = H/N query heads attends with its key/value head (math in
        :func:`~fairseq_el.attention.math.kv_attention`); k, v: (R', N, T, D), the query batch a
        multiple of R' (hypotheses of a sentence contiguous) or, with ancestry, cache slots."""
        query = call.query
        tgt_len, bsz, embed_dim = query.size()
        per_kv = self.num_heads // self.kv_heads  # g
        q = self.q_proj(query) * self.scaling  # (t, R, H*D)
        q = q.view(tgt_len, bsz, self.kv_heads, per_kv, self.head_dim)  # (t, R, N, g, D)
        q = q.permute(1, 2, 3, 0, 4).reshape(bsz, self.kv_heads, per_kv * tgt_len, -1)
        # q: (R, N, g*t, D)
        attn_mask = None if call.attn_mask is None else call.attn_mask.repeat(per_kv, 1)
        # attn_mask: (g*t, T)
        ctx, probs, _ = kv_attention(q, k, v, ancestry, padding, attn_mask, self.dropout_module)
        # ctx: (R, N, g*t, D); probs: (R, N, g*t, T)
        ctx = ctx.view(bsz, self.kv_heads, per_kv, tgt_len, self.head_dim)  # (R, N, g, t, D)
        attn = self.out_proj(ctx.permute(3, 0, 1, 2, 4).reshape(tgt_len, bsz, embed_dim))
        # attn: (t, R, E)
        weights: Optional[Tensor] = None
        if call.returns_weights:
            weights = probs.view(bsz, self.num_heads, tgt_len, -1).transpose(0, 1)  # (H, R, t, T)
            if not call.need_head_weights:
                weights = weights.mean(dim=0)  # (R, t, T)
        return attn, weights
