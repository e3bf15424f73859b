"""The finished experiments in ``experiments/`` (outside the wheel) still run from a clone:
``fairseq-el-benchmark --peers`` loads ``experiments/peers.py``, and the cache-copy profile runs
on a tiny shape."""

import importlib.util
from pathlib import Path

import pytest

from fairseq_el.bench import cli
from fairseq_el.bench.shapes import Config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peers_load_from_the_clone_and_refuse_bad_names_first():
    peers = cli.peers_module()
    assert callable(peers.run_peers) and callable(peers.prepare)
    with pytest.raises(cli.UsageError, match="unknown"):
        cli.check_peers(["hf", "onnx"], "tiny-bart")
    with pytest.raises(cli.UsageError, match="BART shape"):
        cli.check_peers(["hf"], "tiny-lm")


def test_copy_profile_on_a_tiny_shape():
    profile = load("copy_profile")
    config = Config("tiny-bart", src_len=8, batch=1, beam=2, steps=3)
    stock = profile.profile_variant(config, "stock-per-sentence")
    el = profile.profile_variant(config, "el")
    assert el["tokens"] == stock["tokens"]
    assert set(el["shares"]) == set(profile.COPY_OPS)
    assert all(0 <= share <= 1 for share in el["shares"].values()) and el["seconds"] > 0
