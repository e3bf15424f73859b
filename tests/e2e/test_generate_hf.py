"""``--hf-model``: a Hugging Face BART from a hub-layout cache (no network), converted once into
the package's cache, generates the same tokens as the manual two-step conversion
(``fairseq-el-convert-hf`` then ``fairseq-el-convert``)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from fairseq_el.convert.cli import convert_hf_main, convert_main
from fairseq_el.convert.hf_common import ConversionError, import_transformers
from fairseq_el.paths import BPE_DIR

try:
    transformers = import_transformers()
except ConversionError as err:  # the optional "hf" extra; CI installs it
    pytest.skip(f"transformers (the 'hf' extra) is not installed: {err}", allow_module_level=True)

from test_generate import BIN, ENV, records  # noqa: E402

from helpers import exit_code  # noqa: E402

REPO = "acme/tiny-bart"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
SEARCH = ["--beam", "3", "--nbest", "2", "--max-len-b", "10", "--no-progress-bar"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """A randomly initialised tiny BART (GPT-2 BPE vocabulary) saved as the hub caches it."""
    root = tmp_path_factory.mktemp("hf")
    config = transformers.BartConfig(
        vocab_size=50265,
        max_position_embeddings=64,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights far from HF's init, so hypotheses are not degenerate
        for name, p in model.named_parameters():
            if name != "final_logits_bias":
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    repo = root / "hub" / ("models--" + REPO.replace("/", "--"))
    model.save_pretrained(repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    (root / "raw.txt").write_text("The river flows to the sea.\nA book was written in 1850.\n")
    return root


def env_for(hub: Path) -> dict:
    return {
        **ENV,
        "HF_HUB_CACHE": str(hub / "hub"),
        "FAIRSEQ_EL_CACHE": str(hub / "cache"),
        "HF_HUB_OFFLINE": "1",
    }


def test_hf_model_equals_the_manual_two_step_conversion(hub, monkeypatch):
    snapshot = hub / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots" / SNAPSHOT
    manual = hub / "manual"
    dict_txt = str(BPE_DIR / "dict.txt")
    argv = ["--hf-dir", str(snapshot), "--out-dir", str(manual), "--dict", dict_txt]
    assert exit_code(convert_hf_main, argv) == 0
    assert exit_code(convert_main, [str(manual / "model.pt"), str(manual / "model_el.pt")]) == 0
    raw = str(hub / "raw.txt")
    cmd = [
        str(BIN / "fairseq-el-generate"),
        str(manual),
        "--path",
        str(manual / "model_el.pt"),
        "-s",
        "source",
        "-t",
        "target",
        "--input",
        raw,
        *SEARCH,
        "--output",
        str(hub / "manual.jsonl"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env_for(hub), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cmd = [
        str(BIN / "fairseq-el-generate"),
        "--hf-model",
        REPO,
        "--input",
        raw,
        *SEARCH,
        "--output",
        str(hub / "hub.jsonl"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env_for(hub), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"--hf-model {REPO}: converted into" in done.stderr
    assert "built ELBARTModel" in done.stderr
    ours, theirs = records(hub / "hub.jsonl"), records(hub / "manual.jsonl")
    assert ours == theirs and len(ours) == 2
    assert all(len(r["hypotheses"]) == 2 for r in ours.values())
    converted = hub / "cache" / "hf" / f"models--{REPO.replace('/', '--')}" / SNAPSHOT
    assert (converted / "model.pt").is_file() and not list(converted.parent.glob(".*.tmp"))

    # a second use converts nothing; convert-hf --hf-model writes the same weights
    for key, value in env_for(hub).items():
        monkeypatch.setenv(key, value)
    from fairseq_el.convert.hf_hub import ensure_converted, resolve

    assert ensure_converted(resolve(REPO), dict_txt)["converted"] is False
    argv = ["--hf-model", REPO, "--out-dir", str(hub / "by-id"), "--dict", dict_txt]
    assert exit_code(convert_hf_main, argv) == 0
    a = torch.load(hub / "by-id" / "model.pt", weights_only=False)["model"]
    b = torch.load(manual / "model.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hub_id_not_in_the_cache_is_one_line(hub, capsys, monkeypatch):
    from fairseq_el.generate.cli import main

    for key, value in env_for(hub).items():
        monkeypatch.setenv(key, value)
    out = hub / "missing.jsonl"
    with pytest.raises(SystemExit) as exit_:
        main(["--hf-model", "acme/not-here", "--input", str(hub / "raw.txt"), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(
        "fairseq-el-generate: --hf-model acme/not-here: not in the local "
        f"Hugging Face cache ({hub / 'hub'}"
    )
    assert "nothing is downloaded" in err[0] and not out.exists()
    assert not os.path.exists(str(out) + ".parts")
