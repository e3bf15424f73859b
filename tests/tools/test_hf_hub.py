"""``--hf-model``'s resolution without a network: hub ids from a cache laid out as the hub's,
local folders, and each refusal in one line (the conversion itself: tests/e2e/test_generate_hf)."""

import json

import pytest

from fairseq_el.convert.hf_hub import converted_dir, hub_cache, own_cache, resolve
from fairseq_el.usage import UsageError

HASH = "f" * 40


def snapshot(root, repo="acme/m", commit=HASH, weights=True, ref="main"):
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    folder = repo_dir / "snapshots" / commit
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bart"}))
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return folder


def test_cache_locations():
    assert hub_cache({"HF_HUB_CACHE": "/a"}).as_posix() == "/a"
    assert hub_cache({"HF_HOME": "/h"}).as_posix() == "/h/hub"
    assert hub_cache({}).as_posix().endswith(".cache/huggingface/hub")
    assert own_cache({"FAIRSEQ_EL_CACHE": "/c"}).as_posix() == "/c/hf"


def test_hub_ids_revisions_and_local_folders(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path), "FAIRSEQ_EL_CACHE": str(tmp_path / "own")}
    folder = snapshot(tmp_path)
    model = resolve("acme/m", env=env)
    assert model.folder == folder and model.key == f"models--acme--m/{HASH}"
    assert converted_dir(model, env) == tmp_path / "own" / "hf" / "models--acme--m" / HASH
    assert resolve(f"acme/m@{HASH}", env=env).folder == folder  # a commit as the revision
    local = resolve(str(folder), env=env)
    assert local.folder == folder and local.key.startswith("local--")
    (folder / "model.safetensors").write_bytes(b"changed!")
    assert resolve(str(folder), env=env).key != local.key, "a changed folder converts again"


@pytest.mark.parametrize(
    "spec,setup,message",
    [
        ("acme/absent", None, "not in the local Hugging Face cache"),
        ("acme/m@v2", "ok", "revision 'v2' is not in"),
        ("acme/m", "no-weights", "no weights file (model.safetensors, pytorch_model.bin)"),
        ("acme/m", "bad-config", "config.json: not a JSON config"),
        ("a/b/c", None, "not a hub id"),
    ],
)
def test_refusals_are_one_line(tmp_path, spec, setup, message):
    env = {"HF_HUB_CACHE": str(tmp_path)}
    if setup:
        folder = snapshot(tmp_path, weights=setup != "no-weights")
        if setup == "bad-config":
            (folder / "config.json").write_text("{")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        resolve(spec, env=env)
    assert str(err.value).startswith("--hf-model ") and "\n" not in str(err.value)
