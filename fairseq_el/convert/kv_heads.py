"""Move a decoder's attention between multi-head and grouped/multi-query key/value heads.

:func:`average_kv_heads` is the usual starting point for uptraining a multi-head checkpoint into a
grouped-query one (Ainslie et al. 2023): the key and value projection rows of the heads of each
group are mean-pooled. :func:`repeat_kv_heads` is its exact inverse direction: it writes a
grouped-query model as a stock multi-head one that computes the same function (each key/value
head repeated for the query heads of its group), which lets stock fairseq run or check it.
Groups are contiguous, as in :class:`~fairseq_el.attention.grouped.GroupedQueryAttention`.
"""

import re
import warnings
from collections import OrderedDict
from typing import Callable, Dict, List, Tuple

from torch import Tensor

# k/v projections of the decoder self- and encoder-decoder attention of every layer
KV_PROJ_KEY = re.compile(
    r"^decoder\.layers\.\d+\.(self_attn|encoder_attn)\.[kv]_proj\.(weight|bias)$"
)


def average_kv_heads(
    state_dict: Dict[str, Tensor], num_heads: int, kv_heads: int
) -> Dict[str, Tensor]:
    """A new state dict whose decoder attention has ``kv_heads`` key/value heads.

    For every decoder layer, ``self_attn`` and ``encoder_attn`` ``k_proj``/``v_proj`` weight and
    bias rows of the ``num_heads / kv_heads`` heads of each group are averaged (in float32, cast
    back). Other entries are shared with ``state_dict``, not copied. Warns that the outputs change:
    the result is an initialisation to uptrain, not a drop-in model. The model that loads it
    needs ``--decoder-kv-heads kv_heads``.
    """
    _check_heads(num_heads, kv_heads)
    group = num_heads // kv_heads

    def average(t: Tensor) -> Tensor:
        rows = t.view(kv_heads, group, -1, *t.shape[1:])  # (N, G, D[, C])
        return rows.float().mean(dim=1).reshape(-1, *t.shape[1:]).to(t.dtype)  # (N*D[, C])

    new, converted = _map_kv(state_dict, num_heads, "multi-head", average)
    if kv_heads != num_heads:
        warnings.warn(
            f"averaged the key/value heads of {len(converted)} decoder k/v projection tensors "
            f"from {num_heads} to {kv_heads} heads: the model's outputs change, and it needs "
            "uptraining (fairseq-train from this checkpoint with --decoder-kv-heads "
            f"{kv_heads}) before it is used",
            stacklevel=2,
        )
    return new


def repeat_kv_heads(
    state_dict: Dict[str, Tensor], num_heads: int, kv_heads: int
) -> Dict[str, Tensor]:
    """A new stock (``num_heads`` key/value heads) state dict computing the same function.

    Each of the ``kv_heads`` key/value heads of every decoder attention is repeated for the
    ``num_heads / kv_heads`` query heads of its group; other entries are shared, not copied.
    """
    _check_heads(num_heads, kv_heads)
    group = num_heads // kv_heads

    def repeat(t: Tensor) -> Tensor:
        rows = t.view(kv_heads, 1, -1, *t.shape[1:])  # (N, 1, D[, C])
        return rows.expand(-1, group, *rows.shape[2:]).reshape(-1, *t.shape[1:])  # (H*D[, C])

    new, _ = _map_kv(state_dict, num_heads, "grouped-query", repeat, from_kv_heads=kv_heads)
    return new


def _check_heads(num_heads: int, kv_heads: int) -> None:
    if kv_heads < 1 or num_heads % kv_heads != 0:
        raise ValueError(
            f"kv_heads must divide num_heads (1 <= kv_heads <= num_heads); "
            f"got num_heads={num_heads}, kv_heads={kv_heads}"
        )


def _map_kv(
    state_dict: Dict[str, Tensor],
    num_heads: int,
    expected: str,
    fn: Callable[[Tensor], Tensor],
    from_kv_heads: int = 0,
) -> Tuple[Dict[str, Tensor], List[str]]:
    """Apply ``fn`` to every decoder k/v projection tensor, checking it has the expected heads.

    The source has ``num_heads`` key/value heads (``from_kv_heads`` = 0) or ``from_kv_heads``;
    the sibling ``q_proj`` (always ``num_heads`` heads) gives the head width to check against.
    """
    new: Dict[str, Tensor] = OrderedDict(state_dict)
    converted = [key for key in state_dict if KV_PROJ_KEY.match(key)]
    if not converted:
        raise ValueError("no decoder self_attn/encoder_attn k_proj or v_proj in the state dict")
    for key in converted:
        q_key = re.sub(r"\.[kv]_proj\.", ".q_proj.", key)
        q_rows = state_dict[q_key].size(0)
        if q_rows % num_heads != 0:
            raise ValueError(f"{q_key} has {q_rows} rows, not a multiple of {num_heads} heads")
        want = q_rows // num_heads * (from_kv_heads or num_heads)
        rows = state_dict[key].size(0)
        if rows != want:
            raise ValueError(
                f"{key} has {rows} rows, expected {want} for a {expected} attention with "
                f"{num_heads} query heads of width {q_rows // num_heads}"
            )
        new[key] = fn(state_dict[key])
    return new, converted
