"""Raw datasets to (source, target) text pairs, one pair per example.

fairseq binaries hold one example per line, so every reader returns single-line texts and refuses
empty ones with the file and line (or story) they came from, rather than shifting all later pairs.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from fairseq_el.usage import InputError, json_object, read_text

# abisee/cnn-dailymail make_datafiles.py: a line not ending in one of these gets " ."
END_TOKENS = (".", "!", "?", "...", "'", "`", '"', "\u2019", "\u201d", ")")
QG_SEPARATOR = " [SEP] "  # answer-aware QG input: "answer [SEP] paragraph" (UniLM / ProphetNet)


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


class EmptyLineError(InputError):
    """An empty source or target: fairseq would drop or misalign it, so we refuse it."""


def one_line(text: str) -> str:
    """Collapse newlines and runs of whitespace so that an example fits on one line."""
    return " ".join(text.split())


def read_nonempty_lines(path: Path) -> List[str]:
    """Lines of a text file; an empty (or all-whitespace) line is an error naming its number."""
    lines = read_text(Path(path), "text file").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise EmptyLineError(f"{path}: line {number} is empty")
    return [one_line(line) for line in lines]


def read_line_pairs(source_path: Path, target_path: Path) -> List[Pair]:
    """Parallel line files (XSum documents/summaries, CNN/DM or Du et al. source/target)."""
    sources, targets = read_nonempty_lines(source_path), read_nonempty_lines(target_path)
    if len(sources) != len(targets):
        raise InputError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}"
        )
    return [Pair(s, t) for s, t in zip(sources, targets)]


def read_xsum_jsonl(path: Path) -> List[Pair]:
    """XSum as JSON lines ``{"document", "summary"}`` (the Hugging Face layout)."""
    pairs = []
    text = read_text(Path(path), "XSum JSON lines file")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            raise EmptyLineError(f"{path}: line {number} is empty")
        record = json_object(line, f"{path}: line {number}")
        for field in ("document", "summary"):
            if not str(record.get(field, "")).strip():
                raise EmptyLineError(f"{path}: line {number} has an empty {field!r}")
        pairs.append(Pair(one_line(record["document"]), one_line(record["summary"])))
    return pairs


def fix_missing_period(line: str) -> str:
    """Give a line a final full stop, as the standard CNN/DM preparation does (abisee)."""
    if line.startswith("@highlight") or line.endswith(END_TOKENS):
        return line
    return line + " ."


def parse_story(text: str, name: str = "<story>") -> Pair:
    """A CNN/DM ``.story``: the article, then ``@highlight`` blocks that form the summary."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    article, highlights, next_is_highlight = [], [], False
    for line in lines:
        if line.startswith("@highlight"):
            next_is_highlight = True
        elif next_is_highlight:
            highlights.append(fix_missing_period(line))
            next_is_highlight = False
        else:
            article.append(fix_missing_period(line))
    if not article:
        raise EmptyLineError(f"{name}: the story has no article text")
    if not highlights:
        raise EmptyLineError(f"{name}: the story has no @highlight")
    return Pair(one_line(" ".join(article)), one_line(" ".join(highlights)))


def read_stories(paths: Sequence[Path]) -> List[Pair]:
    """CNN/DM ``.story`` files (directories are expanded, sorted by file name)."""
    files: List[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.story")) if path.is_dir() else [path])
    if not files:
        raise InputError(f"no .story files in {', '.join(map(str, paths))}")
    return [parse_story(read_text(f, "story"), str(f)) for f in files]


def read_squad_qg(path: Path, separator: str = QG_SEPARATOR) -> List[Pair]:
    """Answer-aware question generation from SQuAD JSON: "answer [SEP] paragraph" -> question.

    Unanswerable SQuAD 2.0 questions are skipped; the first gold answer is used, as in the QG
    literature built on SQuAD 1.1.
    """
    text = read_text(Path(path), "SQuAD JSON file")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InputError(f"{path}: line {getattr(err, 'lineno', '?')}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(f"{path}: not SQuAD JSON (no 'data' list)")
    pairs = []
    try:
        pairs = _squad_pairs(data, path, separator)
    except (KeyError, TypeError, IndexError) as err:
        raise InputError(f"{path}: not SQuAD JSON (missing or malformed field {err})") from None
    if not pairs:
        raise InputError(f"{path}: no answerable questions")
    return pairs


def _squad_pairs(data: dict, path: Path, separator: str) -> List[Pair]:
    pairs = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = one_line(paragraph["context"])
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                answer, question = one_line(qa["answers"][0]["text"]), one_line(qa["question"])
                if not answer or not question:
                    raise EmptyLineError(f"{path}: question {qa.get('id')} has an empty field")
                pairs.append(Pair(answer + separator + context, question))
    return pairs
