"""The examples: a binarized split (fairseq's own loader) or raw text lines (``--input``).

Ids are fairseq's example ids (the numbers of its S-/H- lines) for binarized data, and 0-based
line numbers for raw text and JSON lines; a JSON line's own id (``id``, ``custom_id`` or
``--id-field``) is kept beside it as the user's id. A rank asks only for the ids it generates;
raw sources are encoded as fairseq-interactive encodes them (tokenizer, BPE, ``encode_line``),
and only those.
"""

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset

from fairseq_el.usage import InputError, UsageError, json_object, read_text

logger = logging.getLogger("fairseq_el.generate")
EMPTY = "empty line"
TOO_LONG = "longer than the model's positions"
TEXT_FIELDS = ("document", "article", "text", "source")  # --text-field's default, first found
ID_FIELDS = ("id", "custom_id")  # --id-field's default, first found
BATCH_TEXT = "body.prompt|messages"  # an OpenAI Batch request line
NO_ID = "none"  # --id-field none: number the lines


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
    return [line.strip() for line in _lines(path, option)]


def _lines(path: str, option: str) -> List[str]:
    try:
        text = read_text(Path(path))
    except InputError as err:
        raise InputError(f"{option} {err}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def is_jsonl(path: str, input_format: str) -> bool:
    """``--input-format auto``: JSONL for ``*.jsonl``/``*.ndjson``, or a first line that is a
    JSON object (standard input), else one source per line."""
    if input_format != "auto":
        return input_format == "jsonl"
    if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
        return True
    with open(path, "rb") as f:
        first = f.readline().strip()
    return first.startswith(b"{") and first.endswith(b"}")


def _get(obj: Dict[str, Any], dotted: str) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``; KeyError when absent."""
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError(dotted)
        obj = obj[key]
    return obj


def _batch_text(body: Dict[str, Any]) -> Any:
    """An OpenAI Batch request body's source: ``prompt`` (a string, or a list of one), or the
    last user message of ``messages`` (string content, or its text parts joined)."""
    if "prompt" in body:
        prompt = body["prompt"]
        return prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
    users = [
        m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    if not users:
        return None
    content = users[-1].get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _is_batch(obj: Dict[str, Any]) -> bool:
    body = obj.get("body")
    return isinstance(body, dict) and ("prompt" in body or "messages" in body)


def _text_field(obj: Dict[str, Any]) -> Optional[str]:
    if _is_batch(obj):
        return BATCH_TEXT
    return next((name for name in TEXT_FIELDS if name in obj), None)


def read_jsonl(
    path: str, name: str, text_field: Optional[str], id_field: Optional[str]
) -> Tuple[List[str], Optional[List[Any]], str]:
    """Sources, user ids (None with ``--id-field none``) and a description of the fields, from
    JSON lines; a user error naming the line for anything that is not one record with a
    string source and a unique string or integer id."""
    sources: List[str] = []
    ids: List[Any] = []
    seen: Dict[Any, int] = {}
    for number, line in enumerate(_lines(path, "--input"), 1):
        where = f"--input {name}: line {number}"
        obj = json_object(line, where)
        if text_field is None:
            text_field = _text_field(obj)
            if text_field is None:
                known = ", ".join(TEXT_FIELDS)
                raise InputError(
                    f"{where}: no source field ({known}, or an OpenAI Batch "
                    "body.prompt): name it with --text-field"
                )
        if id_field is None:
            id_field = next((f for f in ID_FIELDS if f in obj), None)
            if id_field is None:
                raise InputError(
                    f"{where}: no id field ({', '.join(ID_FIELDS)}): name it with "
                    "--id-field, or --id-field none to number the lines"
                )
        try:
            text = _batch_text(obj["body"]) if text_field == BATCH_TEXT else _get(obj, text_field)
        except (KeyError, TypeError, AttributeError):
            raise InputError(f"{where}: no field {text_field!r} (--text-field)") from None
        if not isinstance(text, str):
            raise InputError(f"{where}: field {text_field!r} is not a string")
        sources.append(text.strip())
        if id_field == NO_ID:
            continue
        try:
            user_id = _get(obj, id_field)
        except KeyError:
            raise InputError(f"{where}: no id field {id_field!r} (--id-field)") from None
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
            raise InputError(f"{where}: id {user_id!r} is not a string or an integer")
        key = json.dumps(user_id)
        if key in seen:
            raise InputError(f"{where}: id {user_id!r} repeats line {seen[key]}")
        seen[key] = number
        ids.append(user_id)
    fields = f"source from {text_field!r}, ids from {id_field!r}"
    return sources, None if id_field == NO_ID else ids, fields


@dataclass
class Sources:
    """``--input``'s sources, its name for messages, and the JSON lines' ids (or None)."""

    texts: List[str]
    name: str
    user_ids: Optional[List[Any]] = None


def read_input(args: argparse.Namespace) -> Optional[Sources]:
    """``--input`` read and checked (None for binarized data): before any model is loaded."""
    if not args.raw_input:
        return None
    name = getattr(args, "input_name", None) or args.raw_input
    fields = args.text_field or args.id_field
    if is_jsonl(args.raw_input, args.input_format) or (fields and args.input_format == "auto"):
        texts, user_ids, described = read_jsonl(
            args.raw_input, name, args.text_field, args.id_field
        )
        logger.info(f"--input {name}: JSON lines, {described}")
        return Sources(texts, name, user_ids)
    return Sources(read_lines(args.raw_input, "--input"), name)


class RawText(Examples):
    """``--input``: one source per line, or JSON lines (their ids kept as ``user_ids``)."""

    def __init__(
        self,
        sources: List[str],
        name: str,
        skip_empty: bool,
        encode: Callable[[str], torch.Tensor],
        build: Callable[[List[torch.Tensor], List[int]], FairseqDataset],
        user_ids: Optional[List[Any]] = None,
    ) -> None:
        self.lines = sources
        self.user_ids = user_ids
        empty = [i for i, line in enumerate(self.lines) if not line]
        if empty and not skip_empty:
            shown = ", ".join(str(i + 1) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
            raise UsageError(
                f"--input {name}: {len(empty)} empty lines (line {shown}); remove "
                "them or pass --skip-empty"
            )
        if not self.lines:
            raise UsageError(f"--input {name}: no lines")
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
