"""Checkpoint conversion: round trip, verification, and a clear refusal per bad input."""

import argparse
import os

import pytest
import torch

from fairseq_el.convert.checkpoint import checkpoint_arch, load_checkpoint, save_checkpoint
from fairseq_el.convert.cli import convert_main as cli_main
from fairseq_el.convert.el_checkpoint import convert_checkpoint
from fairseq_el.convert.hf_common import ConversionError
from fairseq_el.convert.verify import build_from_state
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import SCORE_TOL, exit_code, make_dictionary


@pytest.fixture(params=["transformer", "bart_base"])
def stock_checkpoint(request, tmp_path):
    model, _, args = build_translation_model(
        request.param, make_dictionary(12), extra=tiny_args(dim=12, heads=3), seed=1
    )
    path = tmp_path / "stock.pt"
    save_checkpoint(model, args, str(path))
    return path, request.param


def test_round_trip_keeps_weights_and_restores_arch(stock_checkpoint, tmp_path):
    path, arch = stock_checkpoint
    el_path, back_path = tmp_path / "el.pt", tmp_path / "back.pt"
    old, new, diff = convert_checkpoint(str(path), str(el_path), to="el")
    print(f"{old} -> {new}: max decoder log-prob diff {diff:.2e}")
    assert (old, new) == (arch, "el_" + arch) and diff <= SCORE_TOL
    assert convert_checkpoint(str(el_path), str(back_path), to="stock")[1] == arch
    original, el, back = (load_checkpoint(str(p)) for p in (path, el_path, back_path))
    assert checkpoint_arch(el) == "el_" + arch and checkpoint_arch(back) == arch
    for state in (el, back):
        assert state["model"].keys() == original["model"].keys()
        assert all(torch.equal(state["model"][k], v) for k, v in original["model"].items())
    assert type(build_from_state(el)).__name__.startswith("EL")


def test_fairseq_train_style_checkpoint(tmp_path):
    """fairseq-train 0.12 writes args=None and the model config inside cfg['model']."""
    model, _, args = build_translation_model(
        "transformer", make_dictionary(12), extra=tiny_args(dim=12, heads=3)
    )
    state = {"args": None, "cfg": {"model": args, "task": {"_name": "translation"}},
             "model": model.state_dict()}  # fmt: skip
    torch.save(state, tmp_path / "trained.pt")
    convert_checkpoint(str(tmp_path / "trained.pt"), str(tmp_path / "el.pt"))
    converted = load_checkpoint(str(tmp_path / "el.pt"))
    assert converted["cfg"]["model"].arch == "el_transformer"
    assert args.arch == "transformer", "the source's config must not be modified"


def test_cli_prints_what_it_did(stock_checkpoint, tmp_path, capsys):
    path, arch = stock_checkpoint
    assert cli_main([str(path), str(tmp_path / "el.pt")]) == 0
    assert f"({arch}) -> " in capsys.readouterr().out


def bad_inputs(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    torch.save({"model": {}, "args": argparse.Namespace(arch="lstm")}, tmp_path / "lstm.pt")
    torch.save({"model": {}, "args": argparse.Namespace(arch="el_bart_large")}, tmp_path / "el.pt")
    torch.save({"model": {}, "args": argparse.Namespace(x=os.getcwd)}, tmp_path / "code.pt")
    return [
        (tmp_path / "missing.pt", "no such file"),
        (text, "not a torch checkpoint file"),
        (tmp_path / "plain.pt", "not a fairseq checkpoint"),
        (tmp_path / "lstm.pt", "no EL variant of architecture 'lstm'"),
        (tmp_path / "el.pt", "already an EL architecture"),
        (tmp_path / "code.pt", "weights_only loader"),
    ]


def test_each_bad_input_is_refused_clearly(tmp_path, capsys):
    for path, message in bad_inputs(tmp_path):
        with pytest.raises(ConversionError, match=message):
            convert_checkpoint(str(path), str(tmp_path / "out.pt"))
        assert exit_code(cli_main, [str(path), str(tmp_path / "out.pt")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_stock_target_of_a_stock_checkpoint_is_refused(stock_checkpoint, tmp_path):
    path, _ = stock_checkpoint
    with pytest.raises(ConversionError, match="is not an EL architecture"):
        convert_checkpoint(str(path), str(tmp_path / "out.pt"), to="stock")


def test_verification_catches_a_model_that_computes_something_else(stock_checkpoint, tmp_path):
    from fairseq_el.convert.verify import compare_decoders

    path, _ = stock_checkpoint
    state = load_checkpoint(str(path))
    broken = dict(state, model=dict(state["model"]))
    key = next(k for k in broken["model"] if "encoder_attn.v_proj.weight" in k)
    noise = torch.randn(broken["model"][key].shape, generator=torch.Generator().manual_seed(0))
    broken["model"][key] = broken["model"][key] + noise
    with pytest.raises(ConversionError, match="verification failed"):
        compare_decoders(state, broken)


def test_kv_heads_option_averages_heads_into_a_grouped_el_checkpoint(tmp_path, capsys):
    model, _, args = build_translation_model(
        "transformer", make_dictionary(12), extra=tiny_args(dim=16, heads=4)
    )
    save_checkpoint(model, args, str(tmp_path / "stock.pt"))
    with pytest.warns(UserWarning, match="uptrain"):
        assert (
            cli_main([str(tmp_path / "stock.pt"), str(tmp_path / "gqa.pt"), "--kv-heads", "2"]) == 0
        )
    assert "averaged to 2" in capsys.readouterr().out
    state = load_checkpoint(str(tmp_path / "gqa.pt"))
    assert state["args"].decoder_kv_heads == 2 and checkpoint_arch(state) == "el_transformer"
    assert state["model"]["decoder.layers.0.self_attn.k_proj.weight"].shape == (8, 16)
    assert build_from_state(state).decoder.layers[0].self_attn.kv_heads == 2
    with pytest.raises(ConversionError, match="with --to el"):
        convert_checkpoint(str(tmp_path / "gqa.pt"), str(tmp_path / "x.pt"), "stock", kv_heads=1)
