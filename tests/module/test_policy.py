"""--el-policy: EL, a per-sentence cached projection, or the cost model's choice; all exact."""

import pytest
import torch

from fairseq_el.attention import policy as policy_module
from fairseq_el.attention.policy import ELPolicy, Hardware, step_seconds
from fairseq_el.testing import build_translation_model

from helpers import assert_hypos_equal, generate, make_batch, tiny_args

SEARCH = {
    "beam": ["--beam", "4"],
    "greedy": ["--beam", "1"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2"],
    "sampling": ["--sampling", "--sampling-topk", "4", "--beam", "2", "--seed", "3"],
}


def el_twin(trained_transformer, *extra):
    stock, task, dictionary = trained_transformer
    el, _, _ = build_translation_model(
        "el_transformer", dictionary, extra=[*tiny_args(dim=32, heads=4, ffn=64), *extra]
    )
    el.load_state_dict(stock.state_dict())
    return stock, el, task, dictionary


@pytest.mark.parametrize("search", list(SEARCH))
@pytest.mark.parametrize("mode", ["cached", "auto"])
def test_every_policy_gives_the_stock_hypotheses(trained_transformer, mode, search):
    stock, el, task, dictionary = el_twin(trained_transformer, "--el-policy", mode)
    sample = make_batch(dictionary, [2, 8, 5, 3, 6], seed=11)  # sentences finish at their lengths
    argv = ["--max-len-a", "1.2", "--max-len-b", "3", *SEARCH[search]]
    diff = assert_hypos_equal(generate(task, stock, sample, argv), generate(task, el, sample, argv))
    print(f"--el-policy {mode}, {search}: identical tokens, max score diff {diff:.2e}")


def cached_layers(model, task, sample, monkeypatch):
    """Indices of the decoder layers that cached a projection while generating ``sample``."""
    seen = {}
    original = model.decoder.forward

    def spy(*args, incremental_state=None, **kwargs):
        out = original(*args, incremental_state=incremental_state, **kwargs)
        seen["state"] = incremental_state
        return out

    monkeypatch.setattr(model.decoder, "forward", spy)
    generate(task, model, sample, ["--beam", "2", "--max-len-a", "0", "--max-len-b", "3"])
    ids = [layer.encoder_attn._incremental_state_id for layer in model.decoder.layers]
    return [i for i, name in enumerate(ids) if seen["state"].get(f"{name}.attn_state")]


def test_auto_follows_the_cost_model_and_the_memory_budget(trained_transformer, monkeypatch):
    stock, el, task, dictionary = el_twin(trained_transformer, "--el-policy", "auto")
    sample = make_batch(dictionary, [4, 6], seed=2)
    policy = el.decoder.el_policy
    assert policy.members == {
        layer.encoder_attn._incremental_state_id for layer in el.decoder.layers
    }
    compute_bound = Hardware(flops=1e9, bandwidth=1e15)  # FLOPs dominate: EL's H x FLOPs lose
    bandwidth_bound = Hardware(flops=1e18, bandwidth=1e9)  # bytes dominate: the same bytes, a tie
    for hw, expected in ((compute_bound, [0, 1]), (bandwidth_bound, [0, 1])):
        monkeypatch.setattr(policy_module, "measure_hardware", lambda device, dtype, hw=hw: hw)
        policy.memory_budget = 1e9
        assert cached_layers(el, task, sample, monkeypatch) == expected
    monkeypatch.setattr(policy_module, "measure_hardware", lambda device, dtype: compute_bound)
    one_layer = 2 * 2 * sample["net_input"]["src_tokens"].size(1) * 32 * 4  # K+V, 2 sentences
    policy.memory_budget = one_layer  # room for one layer's cache: the next one runs EL
    assert cached_layers(el, task, sample, monkeypatch) == [0]


def test_auto_runs_el_where_the_model_prices_it_lower(trained_transformer, monkeypatch):
    """Where the model prices EL lower (its work patched here: half the bytes of a cached
    projection), auto runs EL and caches nothing."""
    stock, el, task, dictionary = el_twin(trained_transformer, "--el-policy", "auto")
    policy = el.decoder.el_policy
    policy.memory_budget = 1e9
    bandwidth_bound = Hardware(flops=1e18, bandwidth=1e9)
    monkeypatch.setattr(policy_module, "measure_hardware", lambda device, dtype: bandwidth_bound)
    monkeypatch.setattr(policy_module, "cross_attention_work", lambda *a: {
        "el": (1.0, 1e6), "cached": (1.0, 2e6)})  # fmt: skip
    assert cached_layers(el, task, make_batch(dictionary, [4, 6], seed=2), monkeypatch) == []


def test_cost_model_prices_el_at_h_times_the_attention_flops():
    hw = Hardware(flops=1.0, bandwidth=1e30)  # seconds == FLOPs
    el, cached = step_seconds(hw, rows=4, sentences=1, src_len=1000, embed_dim=64, kdim=64,
                              heads=8, elem=4)  # fmt: skip
    assert el > 7 * 4 * 4 * 1000 * 64 > cached  # 8 heads: about 8x the attention FLOPs


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="--el-policy must be one of"):
        ELPolicy("fast")


def test_policy_option_is_a_model_argument(trained_transformer):
    _, el, _, _ = el_twin(trained_transformer, "--el-policy", "cached", "--el-memory-budget", "2")
    assert el.decoder.el_policy.mode == "cached" and el.decoder.el_policy.memory_budget == 2e9
    assert all(layer.encoder_attn.policy is el.decoder.el_policy for layer in el.decoder.layers)
    assert torch.is_tensor(el.decoder.layers[0].encoder_attn.k_proj.weight)


@pytest.mark.parametrize(
    "option,value",
    [("--el-encoder-batch", "0"), ("--decoder-kv-heads", "0"), ("--el-memory-budget", "-1")],
)
def test_bad_option_values_are_refused_by_name(trained_transformer, option, value):
    with pytest.raises(ValueError, match=f"{option} must be at least"):
        el_twin(trained_transformer, option, value)


def test_measuring_the_device_leaves_the_random_state_alone():
    """Sampling draws from the global generator: the one-time measurement must not (it changed
    every sampled hypothesis of ``fairseq-el-generate --sampling`` under ``auto``)."""
    before = torch.get_rng_state()
    policy_module.measure_hardware(torch.device("cpu"), torch.float64)  # a dtype not yet measured
    assert torch.equal(torch.get_rng_state(), before)
