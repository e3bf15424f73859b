"""Smoke tests of the benchmark harness on tiny shapes (no timing assertions)."""

import copy
import dataclasses
import json

import pytest
import torch

from fairseq_el.bench import analytic, cli
from fairseq_el.bench.models import VARIANTS, build_variant, synthetic_sample
from fairseq_el.bench.precision import DTYPES
from fairseq_el.bench.runner import run_variant
from fairseq_el.bench.shapes import Config
from fairseq_el.bench.state import Dims, LinearState, expected_bytes
from fairseq_el.testing.precision import Diffs
from fairseq_el.usage import UsageError

from helpers import SCORE_TOL

TINY = Config("tiny-transformer", src_len=7, batch=3, beam=4, steps=5)
TINY_DIMS = Dims(layers=2, embed_dim=16, encoder_dim=16, heads=4, dtype_bytes=4)


def test_json_lines_fields_and_identical_outputs(tmp_path):
    out = tmp_path / "bench.jsonl"
    argv = ["--shape", "tiny-bart", "--src-len", "7", "--batch", "3", "--beam", "4",
            "--steps", "5", "--repeats", "1", "--threads", "1", "--in-process",
            "--search", "beam", "diverse", "--out", str(out)]  # fmt: skip
    cli.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == list(VARIANTS) * 2
    for r in rows:
        assert r["identical"] is True, r["variant"]
        assert r["max_score_diff"] <= SCORE_TOL, r["variant"]
        for key in ("samples_per_s", "tokens_per_s", "encoder_seconds", "decoder_seconds",
                    "peak_memory_mib", "tokens_sha1", "threads"):  # fmt: skip
            assert r[key] is not None, key
        assert set(r["decoding_state_bytes"]) == {"encoder_out", "encdec_cache", "self_cache",
                                                  "other", "total"}  # fmt: skip
        assert {"cpu", "cores", "torch", "fairseq", "threads", "interop_threads"} <= set(r["env"])
        assert "load_1m" in r["load"]
        assert r["config"]["steps"] == 5 and r["decoder_calls"] == 6  # forced: 5 tokens + eos


def test_state_bytes_exact_by_hand():
    """2 layers, C=16, 4 heads, source 7, batch 3, beam 4, 6 cached positions, fp32."""
    hand = {
        # encoder_out + encoder_embedding (2 x S x rows x C x 4) + bool mask + int32 lengths
        # stock per-sentence: rows 3 -> 2*7*3*16*4 + 3*7 + 3*4 = 2721; keys+values of 2 layers
        # (2*3*7*16*4 each) + a float32 mask per layer (3*7*4) = 5544; self K/V 2*2*12*6*16*4
        "stock-per-sentence": {"encoder_out": 2721, "encdec_cache": 5544, "self_cache": 18432},
        # per-beam: rows 12 -> 4x the encoder output and encoder-decoder cache
        "stock-per-beam": {"encoder_out": 10884, "encdec_cache": 22176, "self_cache": 18432},
        # EL: rows 3, encoder_embedding dropped (7*3*16*4 + 3*7 + 3*4 = 1377), plus the int64
        # row->sentence map (12*8); no encoder-decoder cache. Its in-place self-attention cache
        # has room for 8 positions (capacity(6)): K/V 2*12*8*16*4 + int64 ancestry 12*8*8
        # per layer, 2 layers
        "el": {"encoder_out": 1473, "encdec_cache": 0, "self_cache": 26112},
        # EL self-attention: layer inputs (2 layers * 12 * 8 * (16 * 4 + 8 ancestry))
        "el-sa": {"encoder_out": 1473, "encdec_cache": 0, "self_cache": 13824},
    }
    torch.set_num_threads(1)
    for variant, parts in hand.items():
        measured = run_variant(TINY, variant, repeats=0)["decoding_state_bytes"]
        expected = expected_bytes(variant, TINY_DIMS, 3, 4, 7, 6)
        for part, value in parts.items():
            assert measured[part] == value == expected[part], (variant, part)
        assert measured["other"] == 0


def test_variants_share_weights():
    stock, _ = build_variant(TINY, "stock-per-beam")
    for variant in VARIANTS[1:]:
        model, _ = build_variant(TINY, variant)
        other = model.state_dict()
        for name, tensor in stock.state_dict().items():
            assert torch.equal(tensor, other[name]), (variant, name)


def test_linear_state_and_budget():
    state = LinearState.fit(1, 1100, 2, 2100)
    assert (state.per_sentence, state.fixed) == (1000, 100)
    assert state.largest_batch(10_100) == 10 and state.largest_batch(10_099) == 9
    assert state.largest_batch(50) == 0
    with pytest.raises(ValueError):
        LinearState.fit(1, 1000, 3, 2001)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="diverse"):
        Config("tiny-bart", 7, 3, 3, 5, search="diverse")
    with pytest.raises(ValueError, match="unknown shape"):
        Config("nope", 7, 3, 4, 5)
    with pytest.raises(UsageError, match="batch="):
        cli.main(["--shape", "tiny-bart", "--src-len", "7", "--batch", "3", "--beam", "4",
                  "--steps", "5", "--sweep", "beam=1,2"])  # fmt: skip


def test_analytic_model_runs():
    p = analytic.predict("xsum", "beam", analytic.GPUS["V100"], 2, ("stock-per-beam", "el"))
    assert p["el"]["batch"] > p["stock-per-beam"]["batch"] > 0
    assert p["el"]["samples_per_s"] > 0


def test_fixed_budget_runs_each_variant_at_its_own_automatic_batch(tmp_path, capsys):
    rows = cli.main(["--shape", "tiny-bart", "--src-len", "48", "--batch", "1", "--beam", "4",
                     "--steps", "6", "--fixed-budget", "0.004", "--in-process", "--repeats", "1",
                     "--threads", "1", "--variants", "stock-per-sentence,el,el-sa",
                     "--out", str(tmp_path / "b.jsonl")])  # fmt: skip
    by_variant = {r["variant"]: r for r in rows}
    print(capsys.readouterr().out)
    stock, el = by_variant["stock-per-sentence"], by_variant["el"]
    assert el["batch"] > stock["batch"] > 0 and by_variant["el-sa"]["batch"] >= el["batch"]
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert all(r["predicted_peak_mib"] <= 0.004 * 1024 for r in rows)
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 3


def incremental_logprobs(model, net_input, prev: torch.Tensor) -> torch.Tensor:
    """Log-probabilities at every position of ``prev``, decoded one token per call as the
    generator decodes (EL's own path for EL models)."""
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
        state: dict = {}
        steps = [model.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)[0]
                 for t in range(prev.size(1))]  # fmt: skip
    return torch.cat(steps, dim=1).float().log_softmax(-1)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_runs_in_that_dtype_with_tokens_identical_or_by_the_rule(tmp_path, dtype):
    """Every variant decodes in ``dtype`` (its state counted at 2 bytes a number, as the hand
    count says). A variant whose tokens differ from the reference's (random weights have near-ties)
    must be rounding: along the reference's hypotheses, stock's and EL's log-probabilities obey
    the low-precision rule against fp32 on the same rounded weights."""
    argv = ["--shape", "tiny-transformer", "--src-len", "7", "--batch", "3", "--beam", "4",
            "--steps", "5", "--repeats", "1", "--threads", "1", "--in-process", "--dtype", dtype,
            "--out", str(tmp_path / "bench.jsonl")]  # fmt: skip
    rows = cli.main(argv)
    dims = dataclasses.replace(TINY_DIMS, dtype_bytes=2)
    for r in rows:
        assert r["config"]["dtype"] == dtype and r["dims"]["dtype_bytes"] == 2
        assert r["decoding_state_bytes"] == expected_bytes(r["variant"], dims, 3, 4, 7, 6)
        print(f"{dtype} {r['variant']}: identical {r['identical']}, "
              f"max score diff {r['max_score_diff']}")  # fmt: skip
    assert rows[0]["variant"] == "stock-per-beam"  # the reference of "identical"
    config = dataclasses.replace(TINY, dtype=dtype)
    stock, task = build_variant(config, "stock-per-beam")
    eos = task.source_dictionary.eos()
    best = torch.tensor([s[0] for s in run_variant(config, "stock-per-beam", 0,
                                                   (stock, task))["tokens"]])  # fmt: skip
    prev = torch.cat([torch.full((config.batch, 1), eos), best[:, :-1]], dim=1)
    sample = synthetic_sample(config, len(task.source_dictionary), eos, lm=False)["net_input"]
    for r in rows:
        if r["identical"]:
            continue
        variant, _ = build_variant(config, r["variant"])
        ref, low, other = (incremental_logprobs(m, sample, prev)
                           for m in (copy.deepcopy(stock).float(), stock, variant))  # fmt: skip
        diffs = Diffs.of(ref, low, other, DTYPES[dtype])
        print(f"  {r['variant']} differs: {diffs.describe()}")
        assert diffs.holds(), r["variant"]


def test_speedups_pair_each_invocation_and_gains_per_dtype(tmp_path, capsys):
    """``fairseq-el-bench-report --speedups``: one line per invocation (EL against the stock row
    beside it, its model options named), then bf16 over fp32 per variant."""
    out = tmp_path / "bench.jsonl"
    base = ["--shape", "tiny-bart", "--src-len", "7", "--batch", "2", "--beam", "2", "--steps",
            "3", "--repeats", "1", "--threads", "1", "--in-process", "--out", str(out),
            "--variants", "stock-per-sentence,el"]  # fmt: skip
    for extra in ([], ["--model-option", "el_policy=auto"], ["--dtype", "bf16"]):
        cli.main([*base, *extra])
    capsys.readouterr()
    cli.report_main([str(out), "--speedups"])
    speedups, gains = capsys.readouterr().out.strip().split("\n\n")
    lines = speedups.splitlines()[2:]
    assert len(lines) == 3 and all("| stock-per-sentence |" in line for line in lines), lines
    assert "| el_policy=auto |" in lines[1] and "| bf16 |" in lines[2]
    assert all("| True |" in line for line in lines[:2])  # fp32: the very tokens
    gain_lines = gains.splitlines()[2:]
    assert [line.split(" | ")[3] for line in gain_lines] == ["stock-per-sentence", "el"]
    with pytest.raises(SystemExit) as exit_:
        cli.report_main([str(out)])
    assert (
        exit_.value.code == 2 and "give --shape, --src-len and --batch" in capsys.readouterr().err
    )


@pytest.mark.parametrize("options, policy", [((), "el"), (("el_policy=auto",), "auto")])
def test_el_variant_is_el_attention_unless_an_option_says_otherwise(options, policy):
    config = dataclasses.replace(TINY, model_options=options)
    model, _ = build_variant(config, "el")
    assert model.decoder.el_policy.mode == policy
