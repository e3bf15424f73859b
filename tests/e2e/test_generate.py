"""``fairseq-el-generate`` end to end: JSONL equal to fairseq-generate's H-/D- lines, sharded on
torchrun (gloo, CPU) and srun's variables byte-identical to one process, SIGKILL + ``--resume``.

A tiny seeded BART on the first 8 shipped CNN/DM pairs; raw text from the shipped CNN/DM lines.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest
import torch
from fairseq import checkpoint_utils, utils
from fairseq.data import Dictionary, data_utils, indexed_dataset

import fairseq_el
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.generate.runner import example_seed
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import SCORE_TOL, generation_args

BIN = Path(sys.executable).parent
DATA = DATA_DIR / "cnndm_fastseq_bin"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
N = 8
COMMON = ("-s", "source", "-t", "target", "--gen-subset", "valid", "--truncate-source",
          "--max-len-b", "12", "--seed", "3", "--no-progress-bar")  # fmt: skip
SEARCHES = {
    "beam-nbest": ("--beam", "4", "--nbest", "2", "--lenpen", "2.0", "--no-repeat-ngram-size",
                   "2", "--min-len", "4", "--batch-size", "8"),
    "diverse": ("--beam", "4", "--diverse-beam-groups", "2", "--diverse-beam-strength", "0.5",
                "--max-tokens", "6000", "--required-batch-size-multiple", "1"),
    "sampling": ("--sampling", "--sampling-topk", "10", "--beam", "2", "--nbest", "2",
                 "--batch-size", "8"),
}  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """DATA (8 pairs, re-binarized), a stock checkpoint, and 3 raw text lines."""
    out = tmp_path_factory.mktemp("generate")
    for side in ("source", "target"):
        prefix = f"valid.source-target.{side}"
        dataset = data_utils.load_indexed_dataset(str(DATA / prefix), None)
        builder = indexed_dataset.make_builder(str(out / f"{prefix}.bin"), impl="mmap",
                                               vocab_size=50264)  # fmt: skip
        for i in range(N):
            builder.add_item(dataset[i])
        builder.finalize(str(out / f"{prefix}.idx"))
        shutil.copy(DATA / f"dict.{side}.txt", out / f"dict.{side}.txt")
    dictionary = Dictionary.load(str(DATA / "dict.source.txt"))
    model, _, args = build_translation_model("bart_base", dictionary,
                                             extra=tiny_args(dim=16, heads=4), seed=3)  # fmt: skip
    save_checkpoint(model, args, str(out / "model.pt"))
    lines = (DATA_DIR / "cnndm_fastseq" / "cnndm_128.txt").read_text().splitlines()
    (out / "raw.txt").write_text("".join(line[:300] + "\n" for line in lines[:3]))
    return out


def el_generate(work: Path, output: str, *options: str, launcher: Sequence[str] = (),
                env=None, check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = [*launcher] if launcher else [str(BIN / "fairseq-el-generate")]
    cmd += [str(work), "--path", str(work / "model.pt"), *COMMON, *options,
            "--output", str(work / output)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_one_line_error(done: subprocess.CompletedProcess) -> None:
    """Exit status 2, the last stderr line is the only error line, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback (most recent call last)" not in done.stderr
    assert lines[-1].startswith("fairseq-el-generate: ")
    assert sum(line.startswith("fairseq-el-generate: ") for line in lines) == 1, lines


def torchrun(nproc: int) -> List[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(nproc),
            "-m", "fairseq_el.generate.cli"]  # fmt: skip


def records(path: Path) -> Dict[int, dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = {r["id"]: r for r in map(json.loads, lines)}
    assert sorted(out) == list(out) and len(out) == len(lines), "input order, one per example"
    return out


def fairseq_lines(stdout: str) -> Dict[int, List[Tuple[float, str, str]]]:
    """id -> [(score, H text, D text)] from fairseq-generate/-interactive output."""
    found: Dict[int, List[Tuple[float, str, str]]] = {}
    h = {}
    for line in stdout.splitlines():
        if line[:2] in ("H-", "D-"):
            tag, score, text = line.split("\t")
            sid = int(tag[2:])
            if line[0] == "H":
                h[sid] = (float(score), text)
            else:
                found.setdefault(sid, []).append((h[sid][0], h[sid][1], text))
    return found


def assert_equal_to_fairseq(ours: Dict[int, dict], theirs, dictionary: Dictionary) -> int:
    assert set(ours) == set(theirs), "the same example ids"
    compared = 0
    for sid, hypos in theirs.items():
        mine = ours[sid]["hypotheses"]
        assert len(mine) == len(hypos), f"id {sid}: nbest"
        for got, (score, h_text, d_text) in zip(mine, hypos):
            assert got["text"] == d_text, f"id {sid}: {got['text']!r} != {d_text!r}"
            assert dictionary.string(torch.tensor(got["tokens"])) == h_text, f"id {sid} tokens"
            assert abs(got["score"] - score) <= SCORE_TOL, f"id {sid}: score"
            compared += 1
    return compared


@pytest.mark.parametrize(
    "search,attention,seeding",
    [("beam-nbest", "el", ()), ("beam-nbest", "stock", ()), ("diverse", "el", ()),
     ("sampling", "el", ("--sampling-seed", "global")),
     ("sampling", "stock", ("--sampling-seed", "global"))],
    ids=["beam-nbest-el", "beam-nbest-stock", "diverse-el", "sampling-global-el",
         "sampling-global-stock"],
)  # fmt: skip
def test_jsonl_equals_fairseq_generate(work, search, attention, seeding):
    cmd = [str(BIN / "fairseq-generate"), str(work), "--path", str(work / "model.pt"),
           "--user-dir", fairseq_el.USER_DIR, *COMMON, *SEARCHES[search]]  # fmt: skip
    stock = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert stock.returncode == 0, stock.stderr[-2000:]
    stock_flag = ("--stock",) if attention == "stock" else ()
    done = el_generate(work, f"{search}-{attention}.jsonl", *SEARCHES[search], *seeding,
                       *stock_flag)  # fmt: skip
    assert ("built ELBARTModel" in done.stderr) == (attention == "el")
    dictionary = Dictionary.load(str(work / "dict.target.txt"))
    ours = records(work / f"{search}-{attention}.jsonl")
    compared = assert_equal_to_fairseq(ours, fairseq_lines(stock.stdout), dictionary)
    assert len(ours) == N and compared >= N
    summary = json.loads((work / f"{search}-{attention}.jsonl.summary.json").read_text())
    assert summary["generated"] == N and summary["examples"] == N


def test_raw_text_equals_fairseq_interactive(work):
    cmd = [str(BIN / "fairseq-interactive"), str(work), "--path", str(work / "model.pt"),
           "--user-dir", fairseq_el.USER_DIR, "-s", "source", "-t", "target", "--beam", "4",
           "--nbest", "2", "--max-len-b", "12", "--bpe", "gpt2", "--gpt2-encoder-json",
           str(BPE_DIR / "encoder.json"), "--gpt2-vocab-bpe", str(BPE_DIR / "vocab.bpe"),
           "--input", str(work / "raw.txt"), "--buffer-size", "8", "--batch-size", "8"]  # fmt: skip
    interactive = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert interactive.returncode == 0, interactive.stderr[-2000:]
    el_generate(work, "raw.jsonl", "--input", str(work / "raw.txt"), "--beam", "4", "--nbest",
                "2", "--batch-size", "2")  # fmt: skip
    ours = records(work / "raw.jsonl")
    assert list(ours) == [0, 1, 2]  # 0-based line numbers
    dictionary = Dictionary.load(str(work / "dict.target.txt"))
    assert assert_equal_to_fairseq(ours, fairseq_lines(interactive.stdout), dictionary) == 6


def test_torchrun_two_ranks_byte_identical_to_one_process(work):
    beam = SEARCHES["beam-nbest"]
    el_generate(work, "one.jsonl", *beam)
    el_generate(work, "two.jsonl", *beam, launcher=torchrun(2))
    assert (work / "two.jsonl").read_bytes() == (work / "one.jsonl").read_bytes()
    assert not (work / "two.jsonl.parts").exists()


def test_per_example_sampling_is_independent_of_ranks_and_batches(work):
    """Per-example seeding: each example's samples are stock fairseq's for that example alone
    after ``torch.manual_seed(seed * 2**32 + id)``, whatever the world and batch size."""
    sampling = ("--sampling", "--sampling-topk", "10", "--beam", "2", "--nbest", "2")
    el_generate(work, "s1.jsonl", *sampling, "--batch-size", "3")
    el_generate(work, "s2.jsonl", *sampling, "--batch-size", "auto", launcher=torchrun(2))
    assert (work / "s2.jsonl").read_bytes() == (work / "s1.jsonl").read_bytes()
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(work / "model.pt")], arg_overrides={"data": str(work), "truncate_source": True}
    )
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    args = generation_args([*sampling, "--max-len-b", "12", "--seed", "3"])
    generator = task.build_generator(models, args)
    ours = records(work / "s1.jsonl")
    for i in range(N):
        utils.set_torch_seed(example_seed(3, i))
        with torch.no_grad():
            (hypos,) = task.inference_step(generator, models, dataset.collater([dataset[i]]))
        for got, hypo in zip(ours[i]["hypotheses"], hypos, strict=True):
            assert got["tokens"] == hypo["tokens"].tolist(), f"id {i}"
            assert abs(got["score"] - float(hypo["score"]) / math.log(2)) <= SCORE_TOL


def test_world_size_three_on_two_examples(work):
    two = work / "two_lines.txt"
    two.write_text("".join((work / "raw.txt").read_text().splitlines(True)[:2]))
    el_generate(work, "w1.jsonl", "--input", str(two), "--beam", "2")
    el_generate(work, "w3.jsonl", "--input", str(two), "--beam", "2", launcher=torchrun(3))
    assert (work / "w3.jsonl").read_bytes() == (work / "w1.jsonl").read_bytes()
    assert list(records(work / "w3.jsonl")) == [0, 1]


def test_srun_variables_shard_like_torchrun(work):
    """Two processes with srun's variables meet through a file store beside the output."""
    beam = SEARCHES["beam-nbest"]
    if not (work / "one.jsonl").exists():
        el_generate(work, "one.jsonl", *beam)
    cmd = [str(BIN / "fairseq-el-generate"), str(work), "--path", str(work / "model.pt"),
           *COMMON, *beam, "--output", str(work / "slurm.jsonl")]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, env={**ENV, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": str(r),
                                   "SLURM_LOCALID": str(r), "SLURM_JOB_ID": "42",
                                   "SLURM_STEP_ID": "0"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert (work / "slurm.jsonl").read_bytes() == (work / "one.jsonl").read_bytes()
    assert not list(work.glob(".slurm.jsonl.rendezvous-*"))


def test_sigkill_then_resume_with_another_batch_size(work):
    beam = ("--beam", "4", "--nbest", "2", "--lenpen", "2.0")
    cmd = [str(BIN / "fairseq-el-generate"), str(work), "--path", str(work / "model.pt"),
           *COMMON, *beam, "--batch-size", "1", "--max-len-b", "40",
           "--output", str(work / "killed.jsonl")]  # fmt: skip
    # --max-len-b 40 only slows the run down; fingerprints must match, so pass it again below
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = work / "killed.jsonl.parts"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        lines = sum(p.read_bytes().count(b"\n") for p in parts.glob("*.jsonl"))
        if lines >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "killed.jsonl").exists(), "an interrupted run leaves no complete output"
    done_before = sum(p.read_bytes().count(b"\n") for p in parts.glob("*.jsonl"))
    assert 2 <= done_before < N
    # the same command without --resume is refused, not mixed
    refused = el_generate(work, "killed.jsonl", *beam, "--max-len-b", "40", check=False)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    assert_one_line_error(refused)
    # another option is refused too, naming it
    other = el_generate(work, "killed.jsonl", *beam, "--max-len-b", "41", "--resume",
                        check=False)  # fmt: skip
    assert other.returncode == 2 and "--max-len-b" in other.stderr
    assert_one_line_error(other)
    done = el_generate(work, "killed.jsonl", *beam, "--max-len-b", "40", "--batch-size", "3",
                       "--resume")  # fmt: skip
    missing = N - done_before
    assert f"{done_before} of {N} examples done" in done.stderr
    assert f"generating the {missing} missing" in done.stderr
    summary = json.loads((work / "killed.jsonl.summary.json").read_text())
    assert summary["generated"] == missing and summary["resumed"] == done_before
    reference = el_generate(work, "full40.jsonl", *beam, "--max-len-b", "40", "--batch-size", "2")
    assert reference.returncode == 0
    assert (work / "killed.jsonl").read_bytes() == (work / "full40.jsonl").read_bytes()


def test_out_of_memory_halves_the_batch_and_loses_nothing(work, tmp_path, monkeypatch):
    """An injected CUDA out-of-memory above 2 sentences: 8 -> 4 -> 2, same records."""
    from fairseq_el.generate.options import parse
    from fairseq_el.generate.parts import PartWriter
    from fairseq_el.generate.ranks import Ranks
    from fairseq_el.generate.runner import Generation, Stats

    argv = [str(work), "--path", str(work / "model.pt"), *COMMON, "--beam", "4",
            "--batch-size", "8", "--output", str(tmp_path / "x.jsonl")]  # fmt: skip
    gen = Generation(parse(argv), Ranks())
    dataset, id_of, indices = gen.examples().dataset(range(N))

    def run(path: Path):
        stats, writer = Stats(), PartWriter(path)
        gen.run(dataset, id_of, indices, writer, None, lambda: None, stats)
        writer.close()
        return stats, sorted(path.read_text().splitlines())

    _, clean = run(tmp_path / "clean.jsonl")
    real, sizes = gen.task.inference_step, []

    def failing(generator, models, sample, **kwargs):
        sizes.append(len(sample["id"]))
        if len(sample["id"]) > 2:
            raise torch.cuda.OutOfMemoryError("injected")
        return real(generator, models, sample, **kwargs)

    monkeypatch.setattr(gen.task, "inference_step", failing)
    stats, retried = run(tmp_path / "oom.jsonl")
    assert retried == clean and len(clean) == N
    assert sizes == [8, 4, 2, 2, 2, 2] and stats.out_of_memory == 2


@pytest.mark.parametrize(
    "case",
    ["empty-line", "references", "no-checkpoint", "sampling-nbest", "auto-and-max-tokens",
     "bad-option", "too-long", "auto-too-small", "el-option-with-stock"],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(work, tmp_path, capsys, case):
    from fairseq_el.generate.cli import main

    raw = tmp_path / "raw.txt"
    raw.write_text("first line\n\nthird\n   \n")
    refs = tmp_path / "refs.txt"
    refs.write_text("one\n")
    base = [str(work), "--path", str(work / "model.pt"), "-s", "source", "-t", "target",
            "--output", str(tmp_path / "o.jsonl"), "--no-progress-bar"]  # fmt: skip
    argv, expected = {
        "empty-line": (["--input", str(raw)], "2 empty lines (line 2, 4)"),
        "references": (["--references", str(refs), "--gen-subset", "valid",
                        "--truncate-source"], f"1 lines for {N} examples"),
        "no-checkpoint": (["--path", str(tmp_path / "nope.pt")], "--path"),
        "sampling-nbest": (["--sampling", "--beam", "2", "--nbest", "3"],
                           "--nbest 3 is more than --beam 2"),
        "auto-and-max-tokens": (["--batch-size", "auto", "--max-tokens", "99"], "give one"),
        "bad-option": (["--beam", "four"], "--beam"),
        "too-long": (["--gen-subset", "valid", "--max-source-positions", "5"],
                     "longer than the model's positions"),
        "auto-too-small": (["--gen-subset", "valid", "--truncate-source", "--batch-size", "auto",
                            "--max-memory", "0.0001"], "not even one sentence fits"),
        "el-option-with-stock": (["--stock", "--model-overrides", "{'el_self_attention': True}"],
                                 "--model-overrides el_self_attention: an EL model option"),
    }[case]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(base + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and expected in err[-1], err[-1]
    assert err[-1].startswith("fairseq-el-generate: ")
    assert not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / "o.jsonl.parts").exists(), "refused before any work"
