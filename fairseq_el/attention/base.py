"""fairseq's attention ``forward`` written once: variants say when they apply and how they attend.

``MultiheadAttention.forward`` takes ten arguments. Every attention of this package keeps that
signature and falls back to the stock forward for any call it does not change (training, scoring,
extra key slots, ...). This base class holds the signature and the fallback; a variant overrides
:meth:`AttentionBase.attend`, which receives the call as one :class:`AttentionCall` and hands a
call it does not change to ``super().attend(call)``. Variants combine through the MRO (grouped-query
encoder-decoder attention computed with EL is ``ELGroupedCrossAttention(ELCrossAttention,
GroupedQueryAttention)``); the chain ends in fairseq's own forward.

One rule says which modules keep their incremental state as a
:class:`~fairseq_el.attention.cache.DecodingCache` (written in place, reordered by ancestry):
self-attention built with ``in_place_cache=True`` and without extra key slots or xformers.
"""

from typing import Dict, NamedTuple, Optional, Tuple

from fairseq.modules import MultiheadAttention
from torch import Tensor

from fairseq_el.attention.cache import DecodingCache

# fairseq's incremental state: module id -> buffer name -> tensor
IncrementalState = Optional[Dict[str, Dict[str, Optional[Tensor]]]]


class AttentionCall(NamedTuple):
    """The arguments of one ``MultiheadAttention.forward`` call (fairseq's names and shapes)."""

    query: Tensor  # (T, B, C)
    key: Optional[Tensor]  # (S, Bk, Ck)
    value: Optional[Tensor]  # (S, Bk, Cv)
    key_padding_mask: Optional[Tensor]  # (Bk, S), True at padding
    incremental_state: IncrementalState
    need_weights: bool
    static_kv: bool
    attn_mask: Optional[Tensor]  # (T, S), added to the scores
    before_softmax: bool
    need_head_weights: bool

    @property
    def returns_weights(self) -> bool:
        """Whether the caller gets attention weights back (per head or averaged)."""
        return self.need_weights or self.need_head_weights


class AttentionBase(MultiheadAttention):
    """``MultiheadAttention`` with the stock forward as the fallback of every variant.

    ``in_place_cache``: incremental self-attention keeps a :class:`DecodingCache` (the one rule:
    only for self-attention without ``bias_k``/``add_zero_attn`` or xformers).
    """

    def __init__(self, *args, in_place_cache: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.in_place_cache = (
            in_place_cache
            and self.self_attention
            and self.bias_k is None
            and not self.add_zero_attn
            and not self.use_xformers
        )

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
        call = AttentionCall(
            query,
            key,
            value,
            key_padding_mask,
            incremental_state,
            need_weights,
            static_kv,
            attn_mask,
            before_softmax,
            need_head_weights,
        )
        return self.attend(call)

    def reorder_incremental_state(
        self, incremental_state: IncrementalState, new_order: Tensor
    ) -> IncrementalState:
        """A :class:`DecodingCache` reorders by ancestry (nothing moves); stock otherwise."""
        if not self.in_place_cache:
            return super().reorder_incremental_state(incremental_state, new_order)
        assert incremental_state is not None
        DecodingCache.of(self, incremental_state).reorder(new_order)
        return incremental_state

    def attend(self, call: AttentionCall) -> Tuple[Tensor, Optional[Tensor]]:
        """Attention for ``call``: here, fairseq's own ``MultiheadAttention.forward``."""
        return super().forward(
            call.query,
            call.key,
            call.value,
            key_padding_mask=call.key_padding_mask,
            incremental_state=call.incremental_state,
            need_weights=call.need_weights,
            static_kv=call.static_kv,
            attn_mask=call.attn_mask,
            before_softmax=call.before_softmax,
            need_head_weights=call.need_head_weights,
        )
