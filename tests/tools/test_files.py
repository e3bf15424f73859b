"""Atomic writes: the destination holds the old content or the whole new one, never a part."""

import errno
import os

import pytest

from fairseq_el.bench.report import write_jsonl
from fairseq_el.files import OutputError, atomic_write, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"complete": True})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path) as f:
            f.write('{"complete": fa')
            raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n  "complete": true\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_full_disk_names_the_path(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "hypotheses.txt"
    with pytest.raises(OutputError) as err:
        write_text(path, "x\n" * 1000)
    assert str(err.value) == f"{path}: no space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_destination_that_cannot_hold_files_is_named():
    with pytest.raises(OutputError, match="/proc/self/result.json: cannot write here"):
        write_text("/proc/self/result.json", "x")


def test_jsonl_appends_are_whole_and_survive_a_torn_line(tmp_path):
    path = tmp_path / "results.jsonl"
    write_jsonl(str(path), [{"a": 1}])
    with open(path, "a") as f:
        f.write('{"a": ')  # a writer killed mid-line, before this package wrote atomically
    write_jsonl(str(path), [{"b": 2}, {"c": 3}])
    assert path.read_text().splitlines() == ['{"a": 1}', '{"a": ', '{"b": 2}', '{"c": 3}']
