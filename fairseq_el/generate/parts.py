"""Part files: what each rank has finished, kept across kills, merged into ``OUT.jsonl`` once.

``OUT.jsonl.parts/`` holds ``run.json`` (the options that decide the outputs) and one part per
rank per attempt, ``a{attempt}-r{rank}-of-{world}.jsonl``: one JSON record per line, appended and
fsynced per batch, so a killed run loses only its batches in flight. A kill mid-write leaves an
unterminated last line, which is ignored (torn). Every run writes to new parts (a higher
attempt), so parts from other world sizes and batch sizes stay valid. When every id is there,
``OUT.jsonl`` is written in id order in one atomic rename and the parts are removed.
"""

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Set, Tuple

from fairseq_el.files import atomic_write, write_json
from fairseq_el.usage import UsageError

PART = re.compile(r"a(\d+)-r(\d+)-of-(\d+)\.jsonl$")


class PartsError(UsageError):
    """The parts cannot be used as asked; one line naming the folder or file and the fix."""


@dataclass
class Plan:
    """Rank 0's view at start: this run's attempt number and the ids already done."""

    attempt: int
    done: Set[int] = field(default_factory=set)
    torn: int = 0


def dumps(record: Dict[str, Any]) -> str:
    """One record as one JSONL line (no newline); the same bytes on every rank."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def normalized(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples become lists), for comparing with ``run.json``."""
    return json.loads(json.dumps(obj, default=str))


class PartWriter:
    """One rank's part: records appended, flushed and fsynced per batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "ab")  # noqa: SIM115  (closed by close())

    def write(self, lines: Iterable[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        if data:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class PartStore:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.dir = output.with_name(output.name + ".parts")
        self.manifest = self.dir / "run.json"

    def parts(self) -> List[Path]:
        """Part files, by attempt then rank."""
        if not self.dir.is_dir():
            return []
        found = [(PART.match(p.name), p) for p in self.dir.iterdir()]
        return [p for m, p in sorted((m.groups(), p) for m, p in found if m)]

    def part(self, attempt: int, rank: int, world: int) -> Path:
        return self.dir / f"a{attempt:03d}-r{rank:05d}-of-{world:05d}.jsonl"

    def check(self, fingerprint: Dict[str, Any], resume: bool) -> bool:
        """Rank 0, before any work: whether earlier parts exist, and that this run may use them
        (``--resume``, same options); writes nothing."""
        exists = bool(self.parts())  # a manifest alone: a run that stopped before generating
        if exists and not resume:
            raise PartsError(
                f"{self.dir} holds an earlier run's parts: pass --resume to "
                f"continue it, or remove the folder to start over"
            )
        if exists:
            self._check(normalized(fingerprint))
        return exists

    def start(self, fingerprint: Dict[str, Any], resume: bool) -> Plan:
        """Rank 0: check or create the folder, drop a stale output, read what is done."""
        fingerprint = normalized(fingerprint)
        if not self.check(fingerprint, resume):
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(self.manifest, fingerprint)
        if self.output.exists():  # never leave a result of other options looking current
            self.output.unlink()
        records, torn = self.read()
        attempts = [int(PART.match(p.name).group(1)) for p in self.parts()]
        return Plan(attempt=max(attempts, default=0) + 1, done=set(records), torn=torn)

    def _check(self, fingerprint: Dict[str, Any]) -> None:
        try:
            before = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PartsError(
                f"{self.manifest}: unreadable ({err}); remove {self.dir} to start over"
            ) from err
        for key in sorted(set(before) | set(fingerprint)):
            if before.get(key) != fingerprint.get(key):
                option = "--" + key.replace("_", "-")
                raise PartsError(
                    f"--resume: {self.dir} was made with {option} {before.get(key)!r}, this "
                    f"command has {fingerprint.get(key)!r}; rerun the same command, or remove "
                    f"{self.dir} to start over"
                )

    def read(self) -> Tuple[Dict[int, str], int]:
        """id -> its record line (first one wins), and how many torn last lines were ignored."""
        records: Dict[int, str] = {}
        torn = 0
        for path in self.parts():
            *lines, tail = path.read_bytes().split(b"\n")
            torn += bool(tail)
            for number, raw in enumerate(lines, 1):
                line = raw.decode("utf-8", errors="replace")
                try:
                    example_id = json.loads(line)["id"]
                except (ValueError, KeyError, TypeError) as err:
                    raise PartsError(
                        f"{path}: line {number} is not a record ({err}); remove "
                        f"{self.dir} to start over"
                    ) from err
                records.setdefault(int(example_id), line)
        return records, torn

    def merge(self, expected: Iterable[int]) -> int:
        """Write ``OUT.jsonl`` (id order) atomically, then remove the parts; returns records."""
        records, _ = self.read()
        expected = sorted(expected)
        missing = [i for i in expected if i not in records]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise PartsError(
                f"{len(missing)} examples missing from {self.dir} (ids {shown}): "
                "a rank stopped early; rerun with --resume"
            )
        extra = sorted(set(records) - set(expected))
        if extra:
            raise PartsError(
                f"{self.dir}: id {extra[0]} is not an example of this input; "
                f"remove {self.dir} to start over"
            )
        with atomic_write(self.output) as f:
            for example_id in expected:
                f.write(records[example_id] + "\n")
        shutil.rmtree(self.dir, ignore_errors=True)
        return len(expected)
