"""A self-attention cache written in place and reordered by ancestry, kept in fairseq's state.

Stock fairseq grows its cache with ``torch.cat`` (a copy of the whole history into a new
allocation) and reorders it at every beam step with ``index_select`` (a second copy). Here:

* every cached tensor is a view ``(N, ..., T, F)`` (time on axis -2) of a buffer with room for
  ``capacity(T)`` positions; a step writes its positions in place, and the buffer grows by at
  most 1/16 of its room (few positions unused, few regrowths);
* a reorder moves nothing: hypothesis rows keep their *slots*, and an ancestry index (``G x g x T``,
  ``N = G*g``) records, for each row and position, the slot of its group that wrote that position.
  Rows are grouped as fairseq's generators keep them (the hypotheses of a sentence contiguous, in
  equal numbers); the group size is read off the orders themselves. Attention then reads each
  slot once and selects each row's ancestor
  (:func:`fairseq_el.attention.math.ancestral_attention`), or gathers each row's history
  (:meth:`DecodingCache.histories`).

Slots are copied only when sentences leave the batch (their slots are dropped) and, for an order
that keeps no groups (never from fairseq's generators), when every row's history is gathered
once. The cache lives in the module's ``Dict[str, Optional[Tensor]]`` buffer, as fairseq's
``EnsembleModel`` expects: the data under the module's own names, plus ``cache_ancestry``
(absent while every row's history is its own slot) and ``cache_padding`` (absent without padding).
"""

from typing import Dict, List, Optional

import torch
from torch import Tensor

Buffer = Dict[str, Optional[Tensor]]

ANCESTRY = "cache_ancestry"  # (G, g, T, 1) int64: slot (within its group) of each row's ancestor
PADDING = "cache_padding"  # (N, T, 1) bool, per slot: True at padded keys
MIN_CAPACITY = 8
GROWTH = 16  # a full buffer grows by 1/16 of its room, at least 8 positions


def capacity(positions: int) -> int:
    """Positions a buffer holding ``positions`` has room for: 8, then grown by max(8, room/16),
    in multiples of 8. At most 8 positions or 1/16 stay unused (decoding state is the product),
    and a buffer is copied O(log T) times over T steps, where stock copies it at every step."""
    cap = MIN_CAPACITY
    while cap < positions:
        cap = (cap + max(8, cap // GROWTH) + 7) // 8 * 8
    return cap


def _capacity_of(view: Tensor) -> int:
    """Positions the buffer under ``view`` (N, ..., T, F) holds; buffers are contiguous."""
    return view.stride(-3) // view.stride(-2)


def _full(view: Tensor) -> Tensor:
    """The whole buffer under ``view``: (N, ..., capacity, F)."""
    return view.as_strided((*view.shape[:-2], _capacity_of(view), view.size(-1)), view.stride())


def _regrown(view: Tensor, cap: int) -> Tensor:
    """A buffer of ``cap`` positions holding ``view``'s positions."""
    full = view.new_empty((*view.shape[:-2], cap, view.size(-1)))  # (N, ..., cap, F)
    full[..., : view.size(-2), :] = view
    return full


def _fits(new_order: Tensor, size: int) -> bool:
    """Every block of ``size`` new rows descends from one block of ``size`` old rows, and the
    kept blocks stay in order (sentences only leave)."""
    blocks = new_order.view(-1, size) // size  # (G', size) old block of every new row
    kept = blocks[:, 0]
    return bool((blocks == kept[:, None]).all() and (kept[1:] > kept[:-1]).all())


class DecodingCache:
    """The cache of one attention module, a view over its incremental-state buffer.

    The attention module appends (:meth:`append`) and reads the slot histories it returns, with
    :meth:`ancestry` (scores selected per row) or :meth:`histories` (one gathered history per
    row); the generator's reorders go to :meth:`reorder`.
    """

    def __init__(self, buffer: Buffer):
        self.buffer = buffer

    def _data(self) -> List[str]:
        return [k for k, v in self.buffer.items() if v is not None and k not in (ANCESTRY, PADDING)]

    @property
    def length(self) -> int:
        """Positions cached so far."""
        names = self._data()
        return 0 if not names else self.buffer[names[0]].size(-2)

    @property
    def group(self) -> int:
        """Rows per group (their ancestors are slots of the group); 1: each row owns its slot."""
        ancestry = self.buffer.get(ANCESTRY)
        return 1 if ancestry is None else ancestry.size(1)

    def ancestry(self) -> Optional[Tensor]:
        """(G, g, T): for each row (group, member) and position, the member slot that wrote it;
        None when every row's history is its own slot."""
        ancestry = self.buffer.get(ANCESTRY)
        return None if ancestry is None else ancestry.squeeze(-1)

    def padding(self) -> Optional[Tensor]:
        """(N, T) per row (its own history), True at padded keys; None without padding."""
        if self.buffer.get(PADDING) is None:
            return None
        return self.histories(PADDING).squeeze(-1)

    def append(self, new: Dict[str, Tensor], padding: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Write ``new[name]`` (N, ..., t, F) after the cached positions; returns the slot
        histories (N, ..., T, F), views of the buffers. ``padding``: (N, t), True at padding."""
        length = self.length
        steps = next(iter(new.values())).size(-2)
        if PADDING in self.buffer or padding is not None:
            first = next(iter(new.values()))
            rows, device = first.size(0), first.device
            new = dict(new, **{PADDING: _padding_rows(padding, rows, steps, device)})  # (N, t, 1)
            if PADDING not in self.buffer and length > 0:  # nothing was padded before
                cap = _capacity_of(self.buffer[self._data()[0]])
                before = _padding_rows(None, rows, length, device)  # (N, T, 1)
                self.buffer[PADDING] = _regrown(before, cap)[..., :length, :]
        ancestry = self.buffer.get(ANCESTRY)
        if ancestry is not None:
            own = torch.arange(ancestry.size(1), device=ancestry.device)  # (g,)
            new = dict(
                new, **{ANCESTRY: own.view(1, -1, 1, 1).expand(ancestry.size(0), -1, steps, 1)}
            )
        for name, values in new.items():
            old = self.buffer.get(name)
            if old is None:
                full = values.new_empty((*values.shape[:-2], capacity(steps), values.size(-1)))
            elif length + steps > _capacity_of(old):
                full = _regrown(old, capacity(length + steps))
            else:
                full = _full(old)
            full[..., length : length + steps, :] = values
            self.buffer[name] = full[..., : length + steps, :]
        return {name: self.buffer[name] for name in new if name not in (ANCESTRY, PADDING)}

    def histories(self, name: str) -> Tensor:
        """Each row's own history of ``name``, (N, ..., T, F): the slot view when rows own their
        slots, else gathered along the ancestry (a copy)."""
        view = self.buffer[name]
        assert view is not None
        ancestry = self.ancestry()
        if ancestry is None:
            return view
        return _gather(view, _global_slots(ancestry))

    def reorder(self, new_order: Tensor) -> None:
        """Row i of the next step continues the hypothesis of row ``new_order[i]``."""
        names = self._data()
        if not names:
            return
        rows, group = self.buffer[names[0]].size(0), self.group
        size = next(
            (
                c
                for c in range(group, rows + 1, group)
                if rows % c == 0 and new_order.numel() % c == 0 and _fits(new_order, c)
            ),
            None,
        )
        if size is None:
            self._gather_all(new_order)
            return
        blocks = new_order.view(-1, size)  # (G', c)
        kept = blocks[:, 0] // size  # (G',) old blocks kept, in order
        ancestry = None if size == 1 else self._ancestry_in_blocks(size)  # (G, c, T)
        if kept.numel() != rows // size:  # sentences left: drop their slots
            slots = (kept[:, None] * size + torch.arange(size, device=kept.device)).view(-1)
            for name in names + [PADDING]:
                if self.buffer.get(name) is not None:
                    self.buffer[name] = _keep_rows(self.buffer[name], slots)
            ancestry = None if ancestry is None else ancestry.index_select(0, kept)  # (G', c, T)
        if ancestry is not None:
            parents = (blocks % size)[:, :, None].expand(-1, -1, ancestry.size(-1))  # (G', c, T)
            ancestry = ancestry.gather(1, parents)  # (G', c, T): each row inherits its parent's
            cap = _capacity_of(self.buffer[names[0]])
            self.buffer[ANCESTRY] = _regrown(ancestry.unsqueeze(-1), cap)[..., : self.length, :]

    def _ancestry_in_blocks(self, size: int) -> Tensor:
        """The ancestry in blocks of ``size`` rows, a multiple of the group: (G, c, T)."""
        rows, length = self.buffer[self._data()[0]].size(0), self.length
        ancestry = self.ancestry()
        if ancestry is None:
            ancestry = torch.zeros(rows, 1, length, dtype=torch.long, device=self._device())
        group = ancestry.size(1)
        merged = size // group  # old groups per block
        base = torch.arange(ancestry.size(0), device=ancestry.device) % merged * group  # (G,)
        return (ancestry + base[:, None, None]).view(-1, size, length)  # (G/merged, c, T)

    def _gather_all(self, new_order: Tensor) -> None:
        """Any other order: gather every new row's history into its own slot (a full copy)."""
        slots = _global_slots(self._ancestry_in_blocks(self.group))  # (N, T) old slots
        slots = slots.index_select(0, new_order)  # (N', T)
        for name in self._data() + [PADDING]:
            view = self.buffer.get(name)
            if view is not None:
                self.buffer[name] = _regrown(_gather(view, slots), _capacity_of(view))[
                    ..., : view.size(-2), :
                ]
        self.buffer.pop(ANCESTRY, None)

    def _device(self) -> torch.device:
        return self.buffer[self._data()[0]].device


def _padding_rows(padding: Optional[Tensor], rows: int, steps: int, device: torch.device) -> Tensor:
    if padding is None:
        return torch.zeros(rows, steps, 1, dtype=torch.bool, device=device)
    return padding.to(torch.bool).view(rows, steps, 1)  # (N, t, 1)


def _global_slots(ancestry: Tensor) -> Tensor:
    """(G, g, T) member slots -> (N, T) slots of the whole buffer."""
    groups, group, length = ancestry.shape
    base = torch.arange(groups, device=ancestry.device) * group  # (G,)
    return (ancestry + base[:, None, None]).view(groups * group, length)  # (N, T)


def _gather(view: Tensor, slots: Tensor) -> Tensor:
    """out[n, ..., t, :] = view[slots[n, t], ..., t, :]; view (N, ..., T, F), slots (N', T)."""
    time = torch.arange(view.size(-2), device=view.device)  # (T,)
    by_time = view.movedim(-2, 1)  # (N, T, ..., F)
    return by_time[slots, time[None, :]].movedim(1, -2)  # (N', ..., T, F)


def _keep_rows(view: Tensor, slots: Tensor) -> Tensor:
    """The buffer rows ``slots`` (whole capacity), viewed at the cached length."""
    return _full(view).index_select(0, slots)[..., : view.size(-2), :]  # (N', ..., T, F)
