"""Faults around conversion: same file, full disk, missing directories, legacy, truncated and
corrupt checkpoints, grouped-query to stock. Nothing partial is ever left where a result goes."""

import errno
import io

import pytest
import torch

from fairseq_el.convert.checkpoint import ConversionError, load_checkpoint, save_checkpoint
from fairseq_el.convert.cli import convert_main
from fairseq_el.convert.el_checkpoint import convert_checkpoint
from fairseq_el.files import OutputError
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import SCORE_TOL, exit_code, make_dictionary


@pytest.fixture
def stock(tmp_path):
    model, _, args = build_translation_model(
        "transformer", make_dictionary(12), extra=tiny_args(dim=12, heads=3), seed=1
    )
    path = tmp_path / "stock.pt"
    save_checkpoint(model, args, str(path))
    return path


def test_output_equal_to_input_is_refused_unless_in_place(stock, tmp_path, capsys):
    before = stock.read_bytes()
    link = tmp_path / "link.pt"
    link.symlink_to(stock)
    for dst in (stock, link, tmp_path / "." / "stock.pt"):
        assert exit_code(convert_main, [str(stock), str(dst)]) == 2
        err = capsys.readouterr().err
        assert "is SRC" in err and "--in-place" in err and len(err.strip().splitlines()) == 1
        assert stock.read_bytes() == before
    assert exit_code(convert_main, [str(stock), str(stock), "--in-place"]) == 0
    assert load_checkpoint(str(stock))["args"].arch == "el_transformer"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_full_disk_is_reported_and_leaves_no_partial_file(stock, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:100])  # part of the file reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    out = tmp_path / "el.pt"
    with pytest.raises(OutputError, match="no space left on device"):
        convert_checkpoint(str(stock), str(out))
    assert exit_code(convert_main, [str(stock), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fairseq-el-convert: {out}: no space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stock.pt"]


def test_a_failed_in_place_write_keeps_the_original(stock, monkeypatch):
    before = stock.read_bytes()

    def fail(obj, f, *args, **kwargs):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fail)
    assert exit_code(convert_main, [str(stock), str(stock), "--in-place"]) == 2
    assert stock.read_bytes() == before


@pytest.mark.parametrize(
    "dst, message",
    [("missing/el.pt", "does not exist"), ("", "is a directory")],
)
def test_unwritable_destinations_are_refused_before_any_work(stock, tmp_path, capsys, dst, message):
    assert exit_code(convert_main, [str(stock), str(tmp_path / dst)]) == 2
    err = capsys.readouterr().err
    assert message in err and "DST" in err and "Traceback" not in err


def test_legacy_format_checkpoint_converts_and_maps(stock, tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(stock, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b"\x80"
    assert load_checkpoint(str(legacy), mmap=True)["args"].arch == "transformer"
    _, new, diff = convert_checkpoint(str(legacy), str(tmp_path / "el.pt"))
    assert new == "el_transformer" and diff <= SCORE_TOL


def test_truncated_checkpoint_is_unreadable_not_a_failed_conversion(stock, tmp_path, capsys):
    data = stock.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        broken = tmp_path / f"cut{cut}.pt"
        broken.write_bytes(data[:cut])
        with pytest.raises(ConversionError, match="unreadable checkpoint, truncated or corrupt"):
            load_checkpoint(str(broken))
        assert exit_code(convert_main, [str(broken), str(tmp_path / "out.pt")]) == 2
        assert "unreadable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_corrupt_weights_are_reported_as_corrupt(stock, tmp_path):
    state = torch.load(stock, weights_only=True)
    name = "decoder.layers.0.fc1.weight"
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ConversionError, match=f"corrupt checkpoint: non-finite weights in {name}"):
        convert_checkpoint(str(tmp_path / "nan.pt"), str(tmp_path / "out.pt"))
    del state["model"][name]
    torch.save(state, tmp_path / "missing_key.pt")
    with pytest.raises(ConversionError, match="weights do not fit its architecture"):
        convert_checkpoint(str(tmp_path / "missing_key.pt"), str(tmp_path / "out.pt"))


def test_grouped_query_to_stock_is_refused_with_the_reason(stock, tmp_path, capsys):
    gqa = tmp_path / "gqa.pt"
    assert exit_code(convert_main, [str(stock), str(gqa), "--kv-heads", "1"]) == 0
    for verify in ([], ["--no-verify"]):
        out = tmp_path / "back.pt"
        assert exit_code(convert_main, [str(gqa), str(out), "--to", "stock", *verify]) == 2
        err = capsys.readouterr().err
        assert "grouped-query model (decoder_kv_heads=1) has no stock fairseq" in err
        assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--kv-heads", "0"], "--kv-heads must be at least 1"),
    (["--kv-heads", "two"], "argument --kv-heads: invalid int value"),
    (["--to", "gpu"], "argument --to: invalid choice"),
])  # fmt: skip
def test_bad_options_are_one_line(stock, tmp_path, capsys, argv, message):
    assert exit_code(convert_main, [str(stock), str(tmp_path / "o.pt"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("fairseq-el-convert: ")
