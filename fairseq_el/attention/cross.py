"""EL encoder-decoder attention as a drop-in subclass of fairseq's ``MultiheadAttention``."""

from typing import Optional, Tuple

from torch import Tensor

from fairseq_el.attention.base import AttentionBase, AttentionCall, IncrementalState
from fairseq_el.attention.cache import hypotheses
from fairseq_el.attention.grouped import GroupedQueryAttention
from fairseq_el.attention.math import el_attention
from fairseq_el.attention.policy import ELPolicy


class ELCrossAttention(AttentionBase):
    """Encoder-decoder attention that never projects or caches the encoder output.

    Parameters and their names are the stock ones (``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj``), so stock state dicts load unchanged. EL is used in incremental decoding and
    whenever the queries hold several hypotheses per encoder row (``query`` batch = k x ``key``
    batch, hypotheses of a sentence contiguous, as fairseq's generators lay them out). Every other
    call is the stock forward. An :class:`~fairseq_el.attention.policy.ELPolicy` may choose, per
    layer and run, a projection cached once per sentence instead (stock math, as fairseq's BART).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.policy = ELPolicy("el")  # the decoder's shared policy replaces it (set_policy)

    def set_policy(self, policy: ELPolicy) -> None:
        self.policy = policy
        policy.members.add(self._incremental_state_id)

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        if not self._el_applies(call):
            return super().attend(call)
        query, key = call.query, call.key
        assert key is not None
        if call.incremental_state is not None and self._use_cached(
            call.incremental_state, query, key
        ):
            return super().attend(call._replace(static_kv=True))
        return self._el_forward(call)

    def _el_applies(self, call: AttentionCall) -> bool:
        if not self.encoder_decoder_attention or call.key is None:
            return False
        if self.bias_k is not None or self.add_zero_attn or call.attn_mask is not None:
            return False  # extra key slots: not part of the identity, keep the stock math
        if call.before_softmax or self.use_xformers:
            return False
        return call.incremental_state is not None or call.query.size(1) != call.key.size(1)

    def _use_cached(self, incremental_state, query: Tensor, key: Tensor) -> bool:
        if "prev_key" in self._get_input_buffer(incremental_state):
            return True  # chosen at an earlier step of this run
        return not self.policy.use_el(self, incremental_state, query, key)

    def set_beam_size(self, beam_size: int) -> None:
        """EL needs no beam size: hypotheses per sentence are read off the batch sizes.

        Stock attention would use it to take every beam-th row of a full-batch key, which is only
        right during generation; keeping 1 keeps the stock fallback right everywhere.
        """

    def reorder_incremental_state(
        self, incremental_state: IncrementalState, new_order: Tensor
    ) -> IncrementalState:
        """Nothing to reorder after EL; a cached projection (B, ...) follows the sentences, not
        the hypotheses: it is index-selected only when sentences leave. The run's ``k``
        hypotheses per sentence come from the incremental state (fairseq's layout)."""
        buffer = self._get_input_buffer(incremental_state)
        if not buffer:
            return incremental_state
        hyps = hypotheses(incremental_state)
        assert hyps is not None, "the decoder records the hypotheses per sentence of a run"
        if buffer["prev_key"].size(0) * hyps == new_order.numel():
            return incremental_state  # the same sentences: hypotheses share their sentence's
        kept = new_order.view(-1, hyps)[:, 0] // hyps  # (B',) sentences kept, in order
        for name, tensor in buffer.items():
            if tensor is not None:
                buffer[name] = tensor.index_select(0, kept)
        return self._set_input_buffer(incremental_state, buffer)

    def _el_forward(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        query, key, key_padding_mask = call.query, call.key, call.key_padding_mask
        assert key is not None
        tgt_len, bsz, embed_dim = query.size()
        src_len, kv_bsz, _ = key.size()
        if bsz % kv_bsz != 0:
            raise ValueError(
                f"EL attention: query batch {bsz} is not a multiple of the encoder batch {kv_bsz}"
            )
        hyps = bsz // kv_bsz  # k hypotheses per sentence
        value = key if call.value is None else call.value
        if key_padding_mask is not None and key_padding_mask.size(0) != kv_bsz:
            key_padding_mask = key_padding_mask.view(kv_bsz, hyps, src_len)[:, 0]  # (B, S)

        q = self.q_proj(query) * self.scaling  # (t, B*k, E)
        q = q.view(tgt_len, kv_bsz, hyps, self.num_heads, self.head_dim)
        q = q.permute(1, 2, 0, 3, 4).reshape(kv_bsz, hyps * tgt_len, self.num_heads, -1)
        # q: (B, k*t, H, D)
        ctx, probs = el_attention(
            q,
            key.transpose(0, 1),  # (B, S, Ck)
            value.transpose(0, 1),  # (B, S, Cv)
            self.k_proj.weight,
            self.v_proj.weight,
            self.v_proj.bias,
            key_padding_mask,
            self.dropout_module,
        )  # ctx: (B, k*t, H, D); probs: (B, k*t, H, S)
        ctx = ctx.reshape(kv_bsz, hyps, tgt_len, embed_dim).permute(2, 0, 1, 3)  # (t, B, k, E)
        attn = self.out_proj(ctx.reshape(tgt_len, bsz, embed_dim))  # (t, B*k, E)

        weights: Optional[Tensor] = None
        if call.returns_weights:
            weights = probs.view(kv_bsz, hyps, tgt_len, self.num_heads, src_len)
            weights = weights.permute(3, 0, 1, 2, 4).reshape(self.num_heads, bsz, tgt_len, -1)
            # weights: (H, B*k, t, S)
            if not call.need_head_weights:
                weights = weights.mean(dim=0)  # (B*k, t, S)
        return attn, weights


ELMultiheadAttention = ELCrossAttention  # the name of releases up to 0.2.0


class ELGroupedCrossAttention(ELCrossAttention, GroupedQueryAttention):
    """Grouped-query encoder-decoder attention computed with EL (the identity holds per group).

    Method order (MRO): ``ELCrossAttention.attend`` runs EL; a call EL does not change, or a
    projection the policy caches, goes on to ``GroupedQueryAttention.attend`` (``N`` key/value
    heads), then to the stock forward.
    """


ELGroupedQueryAttention = ELGroupedCrossAttention  # its name (in models/decoder.py) up to 0.2.0
