"""The examples: a binarized split (fairseq's own loader) or raw text lines (``--input``).

Ids are fairseq's example ids (the numbers of its S-/H- lines) for binarized data, and 0-based
line numbers for raw text. A rank asks only for the ids it generates; raw lines are encoded as
fairseq-interactive encodes them (tokenizer, BPE, ``encode_line``), and only those.
"""

from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset

from fairseq_el.usage import InputError, UsageError, read_text

EMPTY = "empty line"
TOO_LONG = "longer than the model's positions"


class Selection(BaseWrapperDataset):
    """``dataset`` restricted to ``indices`` (same index space, fairseq's length order kept)."""

    def __init__(self, dataset: FairseqDataset, indices: Sequence[int]) -> None:
        super().__init__(dataset)
        self.keep = np.asarray(sorted(indices), dtype=np.int64)

    def ordered_indices(self) -> np.ndarray:
        order = self.dataset.ordered_indices()
        return order[np.isin(order, self.keep)]


class Examples:
    """``count`` examples; ``skipped`` ids with the reason; datasets over chosen ids."""

    def __init__(self, count: int, skipped: Dict[int, str]) -> None:
        self.count = count
        self.skipped = skipped

    def dataset(self, ids: Sequence[int]) -> Tuple[FairseqDataset, np.ndarray, List[int]]:
        """A dataset holding ``ids``, its index -> id map, and the indices of ``ids`` in it."""
        raise NotImplementedError


class Binarized(Examples):
    def __init__(self, dataset: FairseqDataset) -> None:
        super().__init__(len(dataset), {})
        self._dataset = dataset

    def dataset(self, ids: Sequence[int]) -> Tuple[FairseqDataset, np.ndarray, List[int]]:
        return self._dataset, np.arange(self.count), list(ids)


def read_lines(path: str, option: str) -> List[str]:
    """Lines of a UTF-8 text file, stripped as fairseq-interactive strips them."""
    try:
        text = read_text(Path(path))
    except InputError as err:
        raise InputError(f"{option} {err}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


class RawText(Examples):
    def __init__(
        self,
        path: str,
        skip_empty: bool,
        encode: Callable[[str], torch.Tensor],
        build: Callable[[List[torch.Tensor], List[int]], FairseqDataset],
    ) -> None:
        self.lines = read_lines(path, "--input")
        empty = [i for i, line in enumerate(self.lines) if not line]
        if empty and not skip_empty:
            shown = ", ".join(str(i + 1) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
            raise UsageError(f"--input {path}: {len(empty)} empty lines (line {shown}); remove "
                             "them or pass --skip-empty")  # fmt: skip
        if not self.lines:
            raise UsageError(f"--input {path}: no lines")
        super().__init__(len(self.lines), dict.fromkeys(empty, EMPTY))
        self._encode, self._build = encode, build

    def dataset(self, ids: Sequence[int]) -> Tuple[FairseqDataset, np.ndarray, List[int]]:
        tokens = [self._encode(self.lines[i]) for i in ids]
        dataset = self._build(tokens, [t.numel() for t in tokens])
        return dataset, np.asarray(ids, dtype=np.int64), list(range(len(tokens)))


def truncated(tokens: torch.Tensor, max_positions: int, eos: int) -> torch.Tensor:
    """``--truncate-source`` as fairseq's translation loader does it: strip eos, keep
    ``max_positions - 1`` tokens, append eos."""
    if tokens.numel() <= max_positions:
        return tokens
    body = tokens[:-1] if int(tokens[-1]) == eos else tokens
    return torch.cat([body[: max_positions - 1], tokens.new_tensor([eos])])
