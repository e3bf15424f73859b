"""Stock decoder self-attention with the in-place cache: the EL models' default self-attention."""

from fairseq_el.attention.grouped import GroupedQueryAttention


class KVSelfAttention(GroupedQueryAttention):
    """Stock multi-head self-attention (all H key/value heads, the stock parameters, names,
    initialisation and math) whose incremental keys and values live in a
    :class:`~fairseq_el.attention.cache.DecodingCache`: written in place at each step and
    reordered by ancestry, instead of fairseq's ``torch.cat`` and ``index_select`` of the whole
    history at every step. Every other call (training, scoring) is the stock forward.
    """

    def __init__(self, embed_dim: int, num_heads: int, **kwargs) -> None:
        super().__init__(embed_dim, num_heads, num_heads, **kwargs)
