"""Decoder-only: ``el_transformer_lm`` vs ``transformer_lm`` on the same weights.

Prompts of different lengths in one batch, through the real ``fairseq-generate --task
language_modeling`` on real text shipped in the repo, for a seeded random model and for one
trained for a few seconds.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from fairseq.data import Dictionary

import fairseq_el
from fairseq_el.attention.self_attention import ELSelfAttention
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.convert.el_checkpoint import convert_checkpoint
from fairseq_el.paths import DATA_DIR
from fairseq_el.testing import (
    build_language_model,
    make_dictionary,
    tiny_lm_args,
)

from helpers import SCORE_TOL, assert_same_output, el_twin

TEXT = DATA_DIR / "xsum_pyrxsum" / "references.txt"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ARCH = "transformer_lm_gpt2_tiny"
SEARCH = {
    "beam": ["--beam", "4", "--nbest", "2"],
    "greedy": ["--beam", "1"],
    "sampling": ["--sampling", "--sampling-topk", "8", "--beam", "2", "--nbest", "2"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2", "--batch-size", "3"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """24 real one-sentence summaries, binarized for language modeling."""
    out = tmp_path_factory.mktemp("lm")
    lines = TEXT.read_text(encoding="utf-8").splitlines()
    (out / "train.txt").write_text("\n".join(lines[:80]) + "\n")
    (out / "valid.txt").write_text("\n".join(lines[80:92]) + "\n")
    cmd = [
        str(BIN / "fairseq-preprocess"),
        "--only-source",
        "--trainpref",
        str(out / "train.txt"),
        "--validpref",
        str(out / "valid.txt"),
        "--destdir",
        str(out / "bin"),
        "--workers",
        "1",
    ]
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    return out / "bin"


def lm_pair(dictionary: Dictionary, seed: int, el_self_attention: bool = True):
    extra = tiny_lm_args(dim=24, heads=3, ffn=48)
    stock, task, args = build_language_model(ARCH, dictionary, extra=extra, seed=seed)
    el_extra = [*extra, "--el-self-attention"] if el_self_attention else extra
    el, _, el_args = el_twin(stock, ARCH, dictionary, el_extra, seed, build=build_language_model)
    return stock, el, task, args, el_args


def train_briefly(model, task, dictionary: Dictionary, text: List[str], steps: int = 150):
    """A few seconds of next-token training on real text, so generations are not degenerate."""
    sentences = [dictionary.encode_line(line, add_if_not_exist=False) for line in text]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = [sentences[(step * 8 + i) % len(sentences)] for i in range(8)]
        length = max(len(s) for s in batch)
        tokens = torch.full((8, length + 1), dictionary.pad())
        tokens[:, 0] = dictionary.eos()
        for i, s in enumerate(batch):
            tokens[i, 1 : len(s) + 1] = s
        logits, _ = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            tokens[:, 1:].reshape(-1),
            ignore_index=dictionary.pad(),
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory) -> Dict[str, Dict[str, Path]]:
    out = tmp_path_factory.mktemp("lm_ckpt")
    dictionary = Dictionary.load(str(data / "dict.txt"))
    text = (data.parent / "train.txt").read_text().splitlines()
    paths: Dict[str, Dict[str, Path]] = {}
    for name in ("random", "trained"):
        stock, el, task, args, el_args = lm_pair(dictionary, seed=7)
        if name == "trained":
            train_briefly(stock, task, dictionary, text)
            el.load_state_dict(stock.state_dict())
        assert isinstance(el.decoder.layers[0].self_attn, ELSelfAttention)
        paths[name] = {"stock": out / f"{name}_stock.pt", "el": out / f"{name}_el.pt"}
        save_checkpoint(stock, args, str(paths[name]["stock"]))
        save_checkpoint(el, el_args, str(paths[name]["el"]))
    return paths


def lm_generate(data: Path, checkpoint: Path, *options: str) -> str:
    cmd = [
        str(BIN / "fairseq-generate"),
        str(data),
        "--path",
        str(checkpoint),
        "--user-dir",
        fairseq_el.USER_DIR,
        "--task",
        "language_modeling",
        "--gen-subset",
        "valid",
        "--sample-break-mode",
        "eos",
        "--max-len-a",
        "1",
        "--max-len-b",
        "6",
        "--batch-size",
        "6",
        "--seed",
        "2",
        *options,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    "model,search",
    [
        ("trained", "beam"),
        ("trained", "sampling"),
        ("trained", "diverse_beam"),
        ("random", "greedy"),
    ],
)
@pytest.mark.slow  # runs the real CLI in a subprocess
def test_fairseq_generate_language_modeling(data, checkpoints, model, search):
    stock = lm_generate(data, checkpoints[model]["stock"], *SEARCH[search])
    el = lm_generate(data, checkpoints[model]["el"], *SEARCH[search])
    prompts = [line for line in stock.splitlines() if line.startswith("S-")]
    assert len({len(p.split()) for p in prompts}) > 1, "prompts of different lengths expected"
    count = assert_same_output(stock, el)
    print(f"{model} LM, {search}: {count} H-/P- lines identical (scores within {SCORE_TOL:g})")
    if model == "trained":
        hypotheses = {line.split("\t")[2] for line in stock.splitlines() if line.startswith("H-")}
        assert len(hypotheses) > len(prompts) // 2, "a trained LM's continuations should differ"


def test_lm_checkpoint_converts_to_el_and_back(checkpoints, tmp_path):
    src = checkpoints["random"]["stock"]
    old, new, diff = convert_checkpoint(str(src), str(tmp_path / "el.pt"))
    assert (old, new) == (ARCH, "el_" + ARCH) and diff <= SCORE_TOL


def test_el_lm_builds_like_stock_from_the_same_seed():
    """Same initial weights, same random stream afterwards (seeded sampling depends on it)."""
    dictionary = make_dictionary(30)
    for el_extra in ([], ["--el-self-attention"]):
        torch.manual_seed(0)
        stock, _, _ = build_language_model(ARCH, dictionary, extra=tiny_lm_args(), seed=4)
        after_stock = torch.rand(3)
        el, _, _ = build_language_model(
            "el_" + ARCH, dictionary, extra=[*tiny_lm_args(), *el_extra], seed=4
        )
        assert torch.equal(torch.rand(3), after_stock)
        el_state = el.state_dict()
        assert all(torch.equal(el_state[k], v) for k, v in stock.state_dict().items())


@pytest.mark.slow  # runs the real CLI in a subprocess
@pytest.mark.parametrize("search", ["beam", "sampling"])
def test_fairseq_generate_prompt_in_one_pass(data, checkpoints, search):
    """--task el_language_modeling (prompt in one pass) == stock --task language_modeling."""
    stock = lm_generate(data, checkpoints["trained"]["stock"], *SEARCH[search])
    one_pass = lm_generate(
        data, checkpoints["trained"]["el"], *SEARCH[search], "--task", "el_language_modeling"
    )
    print(f"prompt in one pass, {search}: {assert_same_output(stock, one_pass)} lines identical")


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_fairseq_generate_prefix_size(data, checkpoints):
    """--prefix-size N: the first N tokens of each line are the prompt, the rest is generated."""
    options = ("--prefix-size", "3", "--beam", "4")
    stock = lm_generate(data, checkpoints["trained"]["stock"], *options)
    el = lm_generate(data, checkpoints["trained"]["el"], *options)
    print(f"--prefix-size 3: {assert_same_output(stock, el)} lines identical")


@pytest.mark.slow  # runs the real CLI in a subprocess
@pytest.mark.parametrize("task", ["language_modeling", "el_language_modeling"])
def test_fairseq_interactive(data, checkpoints, task):
    prompts = "The government said\nA man has been\nThe\n"
    outputs = []
    for variant in ("stock", "el"):
        cmd = [
            str(BIN / "fairseq-interactive"), str(data), "--path",
            str(checkpoints["trained"][variant]), "--user-dir", fairseq_el.USER_DIR,
            "--task", task if variant == "el" else "language_modeling", "--beam", "3",
            "--max-len-b", "8", "--buffer-size", "3", "--batch-size", "3",
        ]  # fmt: skip
        done = subprocess.run(cmd, input=prompts, capture_output=True, text=True, env=ENV)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    count = assert_same_output(*outputs)
    assert count >= 6  # 3 prompts: H- and P- lines
    print(f"fairseq-interactive ({task}): {count} lines identical")
