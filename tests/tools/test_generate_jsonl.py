"""``fairseq-el-generate --input FILE.jsonl``: sources and the user's ids from JSON lines (plain
records and OpenAI Batch lines), each bad line refused by number before any work."""

import json
import re
from pathlib import Path

import pytest

from fairseq_el.generate.source import is_jsonl, read_jsonl
from fairseq_el.usage import InputError


def jsonl(path: Path, *records) -> str:
    """JSON lines (a string record is written as it is: a broken line)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_default_fields_document_and_id(tmp_path):
    path = jsonl(
        tmp_path / "x.jsonl",
        {"id": "a", "document": " One. ", "summary": "s"},
        {"id": 7, "document": "Two."},
    )
    texts, ids, described = read_jsonl(path, path, None, None)
    assert texts == ["One.", "Two."] and ids == ["a", 7]
    assert described == "source from 'document', ids from 'id'"
    for field in ("article", "text", "source"):
        path = jsonl(tmp_path / f"{field}.jsonl", {"custom_id": "q", field: "t"})
        assert read_jsonl(path, path, None, None)[:2] == (["t"], ["q"])


def test_openai_batch_lines_prompt_and_messages(tmp_path):
    body = {"model": "m", "max_tokens": 60}
    path = jsonl(
        tmp_path / "batch.jsonl",
        {
            "custom_id": "r1",
            "method": "POST",
            "url": "/v1/completions",
            "body": {**body, "prompt": "First article."},
        },
        {
            "custom_id": "r2",
            "method": "POST",
            "url": "/v1/completions",
            "body": {**body, "prompt": ["Second article."]},
        },
        {
            "custom_id": "r3",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                **body,
                "messages": [
                    {"role": "system", "content": "Summarize."},
                    {"role": "user", "content": "Third."},
                ],
            },
        },
        {
            "custom_id": "r4",
            "url": "/v1/chat/completions",
            "body": {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Fourth"},
                            {"type": "text", "text": "part."},
                        ],
                    }
                ]
            },
        },
    )
    texts, ids, _ = read_jsonl(path, path, None, None)
    assert texts == ["First article.", "Second article.", "Third.", "Fourth part."]
    assert ids == ["r1", "r2", "r3", "r4"]


def test_named_nested_fields_and_no_ids(tmp_path):
    path = jsonl(
        tmp_path / "x.jsonl",
        {"meta": {"key": 3}, "input": {"doc": "a"}},
        {"meta": {"key": 4}, "input": {"doc": "b"}},
    )
    assert read_jsonl(path, path, "input.doc", "meta.key")[:2] == (["a", "b"], [3, 4])
    assert read_jsonl(path, path, "input.doc", "none")[:2] == (["a", "b"], None)


@pytest.mark.parametrize(
    "records,fields,message",
    [
        (
            [{"id": 1, "document": "a"}, {"id": 2, "document": "b"}, {"id": 1, "document": "c"}],
            (None, None),
            "line 3: id 1 repeats line 1",
        ),
        (
            [{"id": "x", "document": "a"}, {"document": "b"}],
            (None, None),
            "line 2: no id field 'id' (--id-field)",
        ),
        (
            [{"document": "a"}],
            (None, None),
            "line 1: no id field (id, custom_id): name it with --id-field, or --id-field none",
        ),
        ([{"id": 1, "body_text": "a"}], (None, None), "line 1: no source field"),
        (
            [{"id": 1, "document": "a"}, {"id": 2, "article": "b"}],
            (None, None),
            "line 2: no field 'document' (--text-field)",
        ),
        ([{"id": 1, "document": ["a"]}], (None, None), "line 1: field 'document' is not a string"),
        (
            [{"id": [1], "document": "a"}],
            (None, None),
            "line 1: id [1] is not a string or an integer",
        ),
        ([{"id": 1, "document": "a"}, '{"id": 2, "document": '], (None, None), "line 2: not JSON"),
        ([{"id": 1, "document": "a"}, "[1, 2]"], (None, None), "line 2: not a JSON object"),
        ([{"id": 1, "document": "a"}], ("text", None), "line 1: no field 'text' (--text-field)"),
    ],
    ids=[
        "repeated",
        "missing",
        "no-id-field",
        "no-source",
        "other-source",
        "not-string",
        "bad-id",
        "not-json",
        "not-object",
        "named-missing",
    ],
)
def test_bad_lines_are_named(tmp_path, records, fields, message):
    path = jsonl(tmp_path / "bad.jsonl", *records)
    with pytest.raises(InputError, match="^--input .*bad.jsonl: " + re.escape(message)):
        read_jsonl(path, path, *fields)


def test_format_detection(tmp_path):
    (tmp_path / "a.txt").write_text('{"id": 1, "text": "x"}\n')
    (tmp_path / "b.txt").write_text("{curly} text line\n")
    (tmp_path / "c.ndjson").write_text("")
    assert is_jsonl(str(tmp_path / "a.txt"), "auto") and is_jsonl(
        str(tmp_path / "c.ndjson"), "auto"
    )
    assert not is_jsonl(str(tmp_path / "b.txt"), "auto")
    assert not is_jsonl(str(tmp_path / "a.txt"), "lines")
    assert is_jsonl(str(tmp_path / "b.txt"), "jsonl")
