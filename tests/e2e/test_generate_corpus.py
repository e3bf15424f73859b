"""``fairseq-el-generate`` on a corpus as users bring it: JSON lines with their ids (one process,
torchrun x2, SIGKILL + ``--resume``), OpenAI Batch lines on standard input, ids refused by line.

The tiny seeded BART and CNN/DM lines of ``test_generate``'s ``work`` fixture.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

from test_generate import (
    BIN,
    COMMON,
    ENV,
    assert_one_line_error,
    el_generate,
    records,
    torchrun,
    work,  # noqa: F401  (the module's fixture)
)

from fairseq_el.paths import DATA_DIR

SEARCH = ("--beam", "4", "--nbest", "2", "--lenpen", "2.0", "--max-len-b", "30")
IDS = [f"doc-{i}" for i in range(6)]


def corpus(folder: Path) -> Path:
    """Six JSON lines with string ids, sources from the CNN/DM lines."""
    path = folder / "corpus.jsonl"
    if not path.exists():
        text = (DATA_DIR / "cnndm_fastseq" / "cnndm_128.txt").read_text().splitlines()
        path.write_text("".join(json.dumps({"id": i, "document": t[:200], "summary": "x"}) + "\n"
                                for i, t in zip(IDS, text)))  # fmt: skip
    return path


def test_jsonl_ids_echoed_sigkill_resume_and_torchrun(work):  # noqa: F811
    data = corpus(work)
    cmd = [str(BIN / "fairseq-el-generate"), str(work), "--path", str(work / "model.pt"), *COMMON,
           *SEARCH, "--batch-size", "1", "--input", str(data),
           "--output", str(work / "c.jsonl")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = work / "c.jsonl.parts"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if sum(p.read_bytes().count(b"\n") for p in parts.glob("*.jsonl")) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "c.jsonl").exists()
    before = sum(p.read_bytes().count(b"\n") for p in parts.glob("*.jsonl"))
    assert 2 <= before < len(IDS)
    done = el_generate(work, "c.jsonl", *SEARCH, "--batch-size", "4", "--input", str(data),
                       "--resume")  # fmt: skip
    assert f"generating the {len(IDS) - before} missing" in done.stderr
    assert "source from 'document', ids from 'id'" in done.stderr
    resumed = records(work / "c.jsonl")
    assert [r["user_id"] for r in resumed.values()] == IDS and list(resumed) == list(range(6))
    assert all(list(r)[:3] == ["id", "user_id", "hypotheses"] for r in resumed.values())
    el_generate(work, "c2.jsonl", *SEARCH, "--batch-size", "3", "--input", str(data),
                launcher=torchrun(2))  # fmt: skip
    assert (work / "c2.jsonl").read_bytes() == (work / "c.jsonl").read_bytes()


def test_openai_batch_lines_on_stdin(work):  # noqa: F811
    data = corpus(work)
    docs = [json.loads(line) for line in data.read_text().splitlines()][:3]
    batch = "".join(json.dumps({"custom_id": f"req-{i}", "method": "POST",
                                "url": "/v1/completions",
                                "body": {"model": "bart", "prompt": d["document"]}}) + "\n"
                    for i, d in enumerate(docs))  # fmt: skip
    cmd = [str(BIN / "fairseq-el-generate"), str(work), "--path", str(work / "model.pt"), *COMMON,
           *SEARCH, "--input", "-", "--output", str(work / "batch.jsonl")]  # fmt: skip
    done = subprocess.run(cmd, input=batch, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = records(work / "batch.jsonl")
    assert [r["user_id"] for r in ours.values()] == ["req-0", "req-1", "req-2"]
    # the same sources as plain JSON lines give the same hypotheses
    el_generate(work, "docs.jsonl", *SEARCH, "--input", str(data))
    plain = records(work / "docs.jsonl")
    for i in range(3):
        assert ours[i]["hypotheses"] == plain[i]["hypotheses"], f"id {i}"


def test_repeated_id_refused_by_line_before_any_work(work, tmp_path):  # noqa: F811
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n'
                   '{"id": "a", "text": "three"}\n')  # fmt: skip
    out = tmp_path / "o.jsonl"
    cmd = [str(BIN / "fairseq-el-generate"), str(work), "--path", str(work / "model.pt"), *COMMON,
           "--input", str(bad), "--output", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert_one_line_error(done)
    assert f"--input {bad}: line 3: id 'a' repeats line 1" in done.stderr
    assert "Loaded" not in done.stderr and "built" not in done.stderr, "refused before loading"
    assert not out.exists() and not Path(str(out) + ".parts").exists()
