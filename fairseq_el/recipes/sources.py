"""Raw datasets to (source, target) text pairs, one pair per example.

fairseq binaries hold one example per line, so every reader returns single-line texts and refuses
empty ones with the file and line (or story) they came from, rather than shifting all later pairs.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from fairseq_el.recipes.paths import require_file

# abisee/cnn-dailymail make_datafiles.py: a line not ending in one of these gets " ."
END_TOKENS = (".", "!", "?", "...", "'", "`", '"', "\u2019", "\u201d", ")")
QG_SEPARATOR = " [SEP] "  # answer-aware QG input: "answer [SEP] paragraph" (UniLM / ProphetNet)


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


class EmptyLineError(ValueError):
    """An empty source or target: fairseq would drop or misalign it, so we refuse it."""


def one_line(text: str) -> str:
    """Collapse newlines and runs of whitespace so that an example fits on one line."""
    return " ".join(text.split())


def read_lines(path: Path) -> List[str]:
    """Lines of a text file; an empty (or all-whitespace) line is an error naming its number."""
    lines = require_file(Path(path), "text file").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise EmptyLineError(f"{path}: line {number} is empty")
    return [one_line(line) for line in lines]


def read_line_pairs(source_path: Path, target_path: Path) -> List[Pair]:
    """Parallel line files (XSum documents/summaries, CNN/DM or Du et al. source/target)."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}"
        )
    return [Pair(s, t) for s, t in zip(sources, targets)]


def read_xsum_jsonl(path: Path) -> List[Pair]:
    """XSum as JSON lines ``{"document", "summary"}`` (the Hugging Face layout)."""
    pairs = []
    text = require_file(Path(path), "XSum JSON lines").read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            raise EmptyLineError(f"{path}: line {number} is empty")
        record = json.loads(line)
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
        raise FileNotFoundError(f"no .story files in {', '.join(map(str, paths))}")
    return [
        parse_story(require_file(f, "story").read_text(encoding="utf-8"), str(f)) for f in files
    ]


def read_squad_qg(path: Path, separator: str = QG_SEPARATOR) -> List[Pair]:
    """Answer-aware question generation from SQuAD JSON: "answer [SEP] paragraph" -> question.

    Unanswerable SQuAD 2.0 questions are skipped; the first gold answer is used, as in the QG
    literature built on SQuAD 1.1.
    """
    data = json.loads(require_file(Path(path), "SQuAD JSON").read_text(encoding="utf-8"))
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
    if not pairs:
        raise ValueError(f"{path}: no answerable questions")
    return pairs
