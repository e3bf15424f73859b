"""``fairseq-el-generate`` on a corpus as users bring it: JSON lines with their ids (one process,
torchrun x2, SIGKILL + ``--resume``), OpenAI Batch lines on standard input, ids refused by line.

The tiny seeded BART and CNN/DM lines of ``test_generate``'s ``work`` fixture.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fairseq.data import Dictionary
from test_generate import (
    BIN,
    COMMON,
    ENV,
    N,
    assert_equal_to_fairseq,
    assert_one_line_error,
    el_generate,
    fairseq_lines,
    records,
    torchrun,
    work,  # noqa: F401  (the module's fixture)
)

import fairseq_el
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.generate.cli import main
from fairseq_el.paths import DATA_DIR
from fairseq_el.testing import build_translation_model, tiny_args

SEARCH = ("--beam", "4", "--nbest", "2", "--lenpen", "2.0", "--max-len-b", "30")
IDS = [f"doc-{i}" for i in range(6)]


def corpus(folder: Path) -> Path:
    """Six JSON lines with string ids, sources from the CNN/DM lines."""
    path = folder / "corpus.jsonl"
    if not path.exists():
        text = (DATA_DIR / "cnndm_fastseq" / "cnndm_128.txt").read_text().splitlines()
        path.write_text(
            "".join(
                json.dumps({"id": i, "document": t[:200], "summary": "x"}) + "\n"
                for i, t in zip(IDS, text)
            )
        )
    return path


def test_jsonl_ids_echoed_sigkill_resume_and_torchrun(work):  # noqa: F811
    data = corpus(work)
    cmd = [
        str(BIN / "fairseq-el-generate"),
        str(work),
        "--path",
        str(work / "model.pt"),
        *COMMON,
        *SEARCH,
        "--batch-size",
        "1",
        "--input",
        str(data),
        "--output",
        str(work / "c.jsonl"),
    ]
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
    done = el_generate(
        work, "c.jsonl", *SEARCH, "--batch-size", "4", "--input", str(data), "--resume"
    )
    assert f"generating the {len(IDS) - before} missing" in done.stderr
    assert "source from 'document', ids from 'id'" in done.stderr
    resumed = records(work / "c.jsonl")
    assert [r["user_id"] for r in resumed.values()] == IDS and list(resumed) == list(range(6))
    assert all(list(r)[:3] == ["id", "user_id", "hypotheses"] for r in resumed.values())
    el_generate(
        work, "c2.jsonl", *SEARCH, "--batch-size", "3", "--input", str(data), launcher=torchrun(2)
    )
    assert (work / "c2.jsonl").read_bytes() == (work / "c.jsonl").read_bytes()


def test_openai_batch_lines_on_stdin(work):  # noqa: F811
    data = corpus(work)
    docs = [json.loads(line) for line in data.read_text().splitlines()][:3]
    batch = "".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "bart", "prompt": d["document"]},
            }
        )
        + "\n"
        for i, d in enumerate(docs)
    )
    cmd = [
        str(BIN / "fairseq-el-generate"),
        str(work),
        "--path",
        str(work / "model.pt"),
        *COMMON,
        *SEARCH,
        "--input",
        "-",
        "--output",
        str(work / "batch.jsonl"),
    ]
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
    bad.write_text(
        '{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n{"id": "a", "text": "three"}\n'
    )
    out = tmp_path / "o.jsonl"
    cmd = [
        str(BIN / "fairseq-el-generate"),
        str(work),
        "--path",
        str(work / "model.pt"),
        *COMMON,
        "--input",
        str(bad),
        "--output",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert_one_line_error(done)
    assert f"--input {bad}: line 3: id 'a' repeats line 1" in done.stderr
    assert "Loaded" not in done.stderr and "built" not in done.stderr, "refused before loading"
    assert not out.exists() and not Path(str(out) + ".parts").exists()


WORDS = "what is the name of a river in france who wrote this book when did war end".split()


def test_word_level_model_raw_input_without_bpe(tmp_path, capsys):
    """SQuAD-QG-like word-level data: ``--bpe none`` gives fairseq-interactive's hypotheses (it
    applies no BPE unless asked); without ``--bpe`` the implicit GPT-2 BPE is refused by name."""
    dictionary = Dictionary()
    for word in WORDS:
        dictionary.add_symbol(word)
    model, _, args = build_translation_model("transformer", dictionary, extra=tiny_args(), seed=5)
    save_checkpoint(model, args, str(tmp_path / "model.pt"))
    for side in ("source", "target"):
        dictionary.save(str(tmp_path / f"dict.{side}.txt"))
    (tmp_path / "q.txt").write_text("the name of a river in france\nwho wrote this book\n")
    common = ["-s", "source", "-t", "target", "--beam", "3", "--nbest", "2", "--max-len-b", "8"]
    cmd = [
        str(BIN / "fairseq-interactive"),
        str(tmp_path),
        "--path",
        str(tmp_path / "model.pt"),
        "--user-dir",
        fairseq_el.USER_DIR,
        *common,
        "--input",
        str(tmp_path / "q.txt"),
        "--batch-size",
        "2",
        "--buffer-size",
        "2",
    ]
    interactive = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert interactive.returncode == 0, interactive.stderr[-2000:]
    base = [
        str(tmp_path),
        "--path",
        str(tmp_path / "model.pt"),
        *common,
        "--input",
        str(tmp_path / "q.txt"),
        "--no-progress-bar",
    ]
    out = tmp_path / "q.jsonl"
    done = subprocess.run(
        [str(BIN / "fairseq-el-generate"), *base, "--bpe", "none", "--output", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = fairseq_lines(interactive.stdout)
    assert assert_equal_to_fairseq(records(out), theirs, dictionary) == 4
    assert "unk" not in out.read_text()
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--output", str(tmp_path / "refused.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "pass --bpe none for a word-level model" in err, err
    assert "'what'" in err and not (tmp_path / "refused.jsonl.parts").exists()


def test_sampling_best_of_beam(work):  # noqa: F811
    """``--sampling --beam 4 --nbest 1`` (best of four samples; fairseq-generate asserts
    ``--nbest == --beam`` with ``--sampling``): the first hypothesis of fairseq-generate's
    ``--nbest 4`` for the same seed (global seeding); per-example seeding runs it too."""
    sampling = ("--sampling", "--sampling-topk", "10", "--beam", "4")
    cmd = [
        str(BIN / "fairseq-generate"),
        str(work),
        "--path",
        str(work / "model.pt"),
        "--user-dir",
        fairseq_el.USER_DIR,
        *COMMON,
        *sampling,
        "--nbest",
        "4",
        "--batch-size",
        "8",
    ]
    stock = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert stock.returncode == 0, stock.stderr[-2000:]
    best = {i: hypos[:1] for i, hypos in fairseq_lines(stock.stdout).items()}
    el_generate(
        work,
        "best-of-4.jsonl",
        *sampling,
        "--nbest",
        "1",
        "--batch-size",
        "8",
        "--sampling-seed",
        "global",
    )
    ours = records(work / "best-of-4.jsonl")
    dictionary = Dictionary.load(str(work / "dict.target.txt"))
    assert assert_equal_to_fairseq(ours, best, dictionary) == N
    # per-example seeding (the default): --nbest only slices the beam's samples, whose draws
    # test_generate shows independent of world and batch size
    el_generate(work, "best-of-4-p.jsonl", *sampling, "--nbest", "1", "--batch-size", "3")
    assert all(len(r["hypotheses"]) == 1 for r in records(work / "best-of-4-p.jsonl").values())
