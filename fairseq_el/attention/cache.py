"""A self-attention cache written in place and reordered by ancestry, kept in fairseq's state.

Stock fairseq grows its cache with ``torch.cat`` (a copy of the whole history into a new
allocation) and reorders it at every beam step with ``index_select`` (a second copy). Here:

* every cached tensor is a view ``(R, ..., T, F)`` (time on axis -2) of a buffer with room for
  ``capacity(T)`` positions; a step writes its positions in place, and the buffer grows by at
  most 1/16 of its room (few positions unused, few regrowths);
* a reorder moves nothing: hypothesis rows keep their *slots*, and an ancestry index
  (``B x k x T``) records, for each row and position, the slot of its sentence that wrote that
  position. Attention reads each slot once and selects each row's ancestor
  (:func:`fairseq_el.attention.math.kv_attention`).

The layout is the one fairseq's generators keep, a precondition rather than something read off
the data at every step (that would be a host sync): ``k`` hypotheses per sentence, contiguous,
recorded once per run in the incremental state (:func:`set_hypotheses`, from shapes: the
decoder divides its rows by the encoder's sentences); a reorder keeps each block of ``k`` rows
within one old block, and sentences only leave, in order. ``CHECK_ORDERS`` (environment
``FAIRSEQ_EL_CHECK_ORDERS=1``; the tests set it) checks every order against it, with host syncs.
Without a recorded ``k`` (a decoder-only model under fairseq's own ``language_modeling`` task)
every reorder copies each row's history from its parent, as stock does: exact for any order.

Slots are copied only when sentences leave the batch (their slots are dropped). The cache lives
in the module's ``Dict[str, Optional[Tensor]]`` buffer, as fairseq's ``EnsembleModel`` expects:
the data under the module's own names, plus ``cache_ancestry`` (absent while every row's history
is its own slot) and ``cache_padding`` (absent without padding).

*Static* caches (the compiled step, ``--el-compile``; :func:`mark_static` before a run's first
step) are read over their whole capacity (:func:`capacity`, as the growing cache's): shapes
change only when a buffer grows (the compiled step keeps capacity symbolic), the write position
is a tensor (``cache_position``), every slot beyond it is padding (``cache_padding`` starts all
True) and the ancestry is kept from the first step (``k > 1``). Padded positions get weight
exactly 0, so outputs equal the growing cache's up to summation order. Reorders are the same
code. The decoder grows them between steps (:meth:`DecodingCache.reserve`).

Letters as in :mod:`fairseq_el.attention.math`: ``B`` sentences, ``k`` hypotheses per sentence,
``R = B*k`` rows (slots), ``T`` cached positions, ``t`` positions of one call, ``F`` features.
"""

import os
from typing import Dict, List, Optional

import torch
from torch import Tensor

Buffer = Dict[str, Optional[Tensor]]
IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]

ANCESTRY = "cache_ancestry"  # (B, k, T, 1) int64: slot (within its sentence) of each row's ancestor
PADDING = "cache_padding"  # (R, T, 1) bool, per slot: True at padded keys
POSITION = "cache_position"  # () int64, static caches only: positions written so far
RUN = "fairseq_el.run"  # incremental-state entry of the decoding run: {HYPOTHESES: k}
HYPOTHESES = "hypotheses"
STATIC = "fairseq_el.static"  # incremental-state entry: this run's caches are static
MIN_CAPACITY = 8
GROWTH = 16  # a full buffer grows by 1/16 of its room, at least 8 positions
# debug mode: check every reorder against fairseq's layout (host syncs); read at each reorder
CHECK_ORDERS = os.environ.get("FAIRSEQ_EL_CHECK_ORDERS", "") not in ("", "0")


def capacity(positions: int) -> int:
    """Positions a buffer holding ``positions`` has room for: 8, then grown by max(8, room/16),
    in multiples of 8. At most 8 positions or 1/16 stay unused (decoding state is the product),
    and a buffer is copied O(log T) times over T steps, where stock copies it at every step."""
    cap = MIN_CAPACITY
    while cap < positions:
        cap = (cap + max(8, cap // GROWTH) + 7) // 8 * 8
    return cap


def set_hypotheses(incremental_state: IncrementalState, hyps: int) -> None:
    """Record ``k``, the hypotheses per sentence of this decoding run (rows of a sentence
    contiguous, as fairseq's generators keep them); every cache of the run reads it."""
    incremental_state[RUN] = {HYPOTHESES: hyps}  # type: ignore[dict-item]


def hypotheses(incremental_state: Optional[IncrementalState]) -> Optional[int]:
    """``k`` of this run, or None when it was not recorded."""
    run = None if incremental_state is None else incremental_state.get(RUN)
    return None if run is None else run[HYPOTHESES]  # type: ignore[return-value]


def mark_static(incremental_state: IncrementalState, marker: Tensor) -> None:
    """Make the caches of this run static (preallocated, fixed shapes: the compiled step).
    Call before the run's first step; ``marker``: any tensor the run's state keeps alive."""
    incremental_state[STATIC] = {"marker": marker}


def is_static(incremental_state: Optional[IncrementalState]) -> bool:
    return incremental_state is not None and STATIC in incremental_state


def check_order(new_order: Tensor, rows: int, old_hyps: int, hyps: int) -> None:
    """Raise unless ``new_order`` keeps fairseq's layout: old rows in blocks of ``old_hyps`` per
    sentence, new rows in blocks of ``hyps`` that each descend from one old block, kept
    sentences in increasing order. Reads the order on the host: debug mode only."""
    order = new_order.tolist()
    ok = rows % old_hyps == 0 and len(order) % hyps == 0 and all(0 <= i < rows for i in order)
    if ok:
        blocks = [[i // old_hyps for i in order[j : j + hyps]] for j in range(0, len(order), hyps)]
        kept = [b[0] for b in blocks]
        ok = all(len(set(b)) == 1 for b in blocks) and all(a < b for a, b in zip(kept, kept[1:]))
    if not ok:
        raise ValueError(
            f"fairseq-el: reorder {order[:16]}{'...' if len(order) > 16 else ''} of {rows} rows "
            f"does not keep {hyps} contiguous hypotheses per sentence with sentences in order, "
            "the layout of fairseq's generators that EL's caches rely on"
        )


def _capacity_of(view: Tensor) -> int:
    """Positions the buffer under ``view`` (R, ..., T, F) holds; buffers are contiguous."""
    return view.stride(-3) // view.stride(-2)


def _full(view: Tensor) -> Tensor:
    """The whole buffer under ``view``: (R, ..., capacity, F)."""
    return view.as_strided((*view.shape[:-2], _capacity_of(view), view.size(-1)), view.stride())


def _regrown(view: Tensor, cap: int) -> Tensor:
    """A buffer of ``cap`` positions holding ``view``'s positions."""
    full = view.new_empty((*view.shape[:-2], cap, view.size(-1)))  # (R, ..., cap, F)
    full[..., : view.size(-2), :] = view
    return full


class DecodingCache:
    """The cache of one attention module, a view over its incremental-state buffer.

    The attention module appends (:meth:`append`) and attends over the slot views it returns
    with :meth:`ancestry` and :meth:`padding`; the generator's reorders go to :meth:`reorder`.
    ``hyps``: the run's hypotheses per sentence (None: not known, reorders copy).
    """

    def __init__(self, buffer: Buffer, hyps: Optional[int] = None, static: bool = False):
        self.buffer = buffer
        self.hyps = hyps
        self.static = static or POSITION in buffer  # static: preallocated (see the module)

    @classmethod
    def of(cls, module, incremental_state: IncrementalState) -> "DecodingCache":
        """The cache of ``module`` (a fairseq ``MultiheadAttention``) in ``incremental_state``;
        its buffer is stored there, so what the cache writes later is in the state."""
        buffer = module._get_input_buffer(incremental_state)
        module._set_input_buffer(incremental_state, buffer)
        return cls(buffer, hypotheses(incremental_state), is_static(incremental_state))

    def _data(self) -> List[str]:
        return [
            k
            for k, v in self.buffer.items()
            if v is not None and k not in (ANCESTRY, PADDING, POSITION)
        ]

    @property
    def length(self) -> int:
        """Positions cached so far."""
        names = self._data()
        return 0 if not names else self.buffer[names[0]].size(-2)

    def ancestry(self) -> Optional[Tensor]:
        """(B, k, T): for each row (sentence, member) and position, the member slot that wrote
        it; None when every row's history is its own slot."""
        ancestry = self.buffer.get(ANCESTRY)
        return None if ancestry is None else ancestry.squeeze(-1)

    def padding(self) -> Optional[Tensor]:
        """(R, T) per slot, True at padded keys; None without padding."""
        padding = self.buffer.get(PADDING)
        return None if padding is None else padding.squeeze(-1)

    def append(self, new: Dict[str, Tensor], padding: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Write ``new[name]`` (R, ..., t, F) after the cached positions; returns the slot
        histories (R, ..., T, F), views of the buffers. ``padding``: (R, t), True at padding.
        Static: the whole buffers (R, ..., capacity, F); positions not written are padding."""
        if self.static:
            return self._append_static(new, padding)
        length = self.length
        first = next(iter(new.values()))
        rows, steps, device = first.size(0), first.size(-2), first.device
        if PADDING in self.buffer or padding is not None:
            new = dict(new, **{PADDING: _padding_rows(padding, rows, steps, device)})  # (R, t, 1)
            if PADDING not in self.buffer and length > 0:  # nothing was padded before
                cap = _capacity_of(self.buffer[self._data()[0]])
                before = _padding_rows(None, rows, length, device)  # (R, T, 1)
                self.buffer[PADDING] = _regrown(before, cap)[..., :length, :]
        ancestry = self.buffer.get(ANCESTRY)
        if ancestry is not None:
            own = torch.arange(ancestry.size(1), device=device)  # (k,)
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

    def _append_static(
        self, new: Dict[str, Tensor], padding: Optional[Tensor]
    ) -> Dict[str, Tensor]:
        """Write at ``cache_position`` with ``index_copy_`` (no host sync, fixed shapes)."""
        first = next(iter(new.values()))
        rows, steps, device = first.size(0), first.size(-2), first.device
        if POSITION not in self.buffer:  # the run's first write: allocate
            self._allocate(new, capacity(steps))
        position = self.buffer[POSITION]
        assert position is not None
        index = position + torch.arange(steps, device=device)  # (t,) positions written
        writes = dict(new, **{PADDING: _padding_rows(padding, rows, steps, device)})  # (R, t, 1)
        ancestry = self.buffer.get(ANCESTRY)
        if ancestry is not None:  # each row wrote its own slot
            own = torch.arange(ancestry.size(1), device=device)  # (k,)
            writes[ANCESTRY] = own.view(1, -1, 1, 1).expand(ancestry.size(0), -1, steps, 1)
        for name, values in writes.items():
            full = self.buffer[name]
            assert full is not None
            full.index_copy_(full.dim() - 2, index, values.to(full.dtype))
        position.add_(steps)
        return {name: self.buffer[name] for name in new}  # type: ignore[misc]

    def _allocate(self, new: Dict[str, Tensor], cap: int) -> None:
        first = next(iter(new.values()))
        rows, device = first.size(0), first.device
        for name, values in new.items():
            self.buffer[name] = values.new_zeros((*values.shape[:-2], cap, values.size(-1)))
        self.buffer[PADDING] = torch.ones(rows, cap, 1, dtype=torch.bool, device=device)
        if self.hyps is not None and self.hyps > 1:
            own = torch.arange(self.hyps, device=device).view(1, -1, 1, 1)  # (1, k, 1, 1)
            self.buffer[ANCESTRY] = own.expand(rows // self.hyps, -1, cap, 1).contiguous()
        self.buffer[POSITION] = torch.zeros((), dtype=torch.long, device=device)

    def reserve(self, positions: int) -> None:
        """Static caches: room for ``positions`` in all (grown as :func:`capacity`, outside the
        compiled step; new slots are padding). No-op for other caches."""
        names = self._data()
        if not self.static or not names or positions <= self.length:
            return
        cap = capacity(positions)
        for name in names + [PADDING, ANCESTRY]:
            view = self.buffer.get(name)
            if view is not None:
                full = _regrown(view, cap)
                # new slots: padding; data 0 (weight 0 times a finite value); any ancestor
                full[..., view.size(-2) :, :] = name == PADDING
                self.buffer[name] = full

    def reorder(self, new_order: Tensor) -> None:
        """Row i of the next step continues the hypothesis of row ``new_order[i]``."""
        names = self._data()
        if not names:
            return
        rows, hyps = self.buffer[names[0]].size(0), self.hyps
        if hyps is None:  # layout unknown: every row copies its parent's history, as stock
            self._keep_slots(names, new_order)
            return
        if CHECK_ORDERS:
            check_order(new_order, rows, hyps, hyps)
        blocks = new_order.view(-1, hyps)  # (B', k): rows of each kept sentence
        ancestry = self.ancestry()  # (B, k, T) or None
        if new_order.numel() != rows:  # sentences left: drop their slots
            kept = blocks[:, 0] // hyps  # (B',) old sentences kept, in order
            member = torch.arange(hyps, device=kept.device)  # (k,)
            self._keep_slots(names, (kept[:, None] * hyps + member).view(-1))  # (R',) slots
            ancestry = None if ancestry is None else ancestry.index_select(0, kept)  # (B', k, T)
        if hyps == 1:  # one row per sentence: its slot is its history
            return
        parents = blocks % hyps  # (B', k): the member each new row continues
        if ancestry is None:
            ancestry = parents[:, :, None].expand(-1, -1, self.length)  # (B', k, T)
        else:
            ancestry = ancestry.gather(1, parents[:, :, None].expand(-1, -1, ancestry.size(-1)))
        cap = _capacity_of(self.buffer[names[0]])
        self.buffer[ANCESTRY] = self._kept(_regrown(ancestry.unsqueeze(-1), cap))

    def _keep_slots(self, names: List[str], slots: Tensor) -> None:
        """Keep the buffer rows ``slots`` (R',), a copy of their whole capacity."""
        for name in names + [PADDING]:
            view = self.buffer.get(name)
            if view is not None:
                self.buffer[name] = self._kept(_full(view).index_select(0, slots))

    def _kept(self, full: Tensor) -> Tensor:
        """What the buffer keeps of a whole buffer ``full``: a static cache keeps it whole (never
        a view, as at its allocation: a compiled step's guards see one kind of tensor), a growing
        one the view of its positions."""
        return full if self.static else full[..., : self.length, :]


def _padding_rows(padding: Optional[Tensor], rows: int, steps: int, device: torch.device) -> Tensor:
    if padding is None:
        return torch.zeros(rows, steps, 1, dtype=torch.bool, device=device)
    return padding.to(torch.bool).view(rows, steps, 1)  # (R, t, 1)
