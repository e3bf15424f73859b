"""EL model options as ``--model-overrides`` can set them: any Python literal, checked by name."""

import argparse

import pytest

from fairseq_el.models.options import ELOptionError, ELOptions, add_el_args, el_options


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False),
    ("1", True), ("0", False), (None, False),
])  # fmt: skip
def test_booleans_accept_true_false_1_0(value, expected):
    assert el_options(argparse.Namespace(el_self_attention=value)).self_attention is expected


@pytest.mark.parametrize("name, value, message", [
    ("el_self_attention", "no", "--el-self-attention (el_self_attention) takes true/false/1/0"),
    ("el_self_attention", "yes", "takes true/false/1/0, not 'yes'"),
    ("el_self_attention", 2, "takes true/false/1/0, not 2"),
    ("el_self_attention", [], "takes true/false/1/0"),
    ("decoder_kv_heads", "two", "--decoder-kv-heads (decoder_kv_heads) takes a int"),
    ("decoder_kv_heads", 2.5, "takes a int, not 2.5"),
    ("decoder_kv_heads", True, "takes a int, not True"),
    ("decoder_kv_heads", 0, "--decoder-kv-heads must be at least 1, not 0"),
    ("el_encoder_batch", -1, "--el-encoder-batch must be at least 1, not -1"),
    ("el_memory_budget", "lots", "--el-memory-budget (el_memory_budget) takes a float"),
    ("el_memory_budget", -1.0, "--el-memory-budget must be at least 0"),
    ("el_policy", "fast", "--el-policy must be one of el, cached, auto, not 'fast'"),
    ("el_policy", 3, "--el-policy (el_policy) takes a str, not 3"),
])  # fmt: skip
def test_wrong_types_and_ranges_are_refused_by_name(name, value, message):
    with pytest.raises(ELOptionError) as err:
        el_options(argparse.Namespace(**{name: value}))
    assert message in str(err.value)


def test_numbers_given_as_strings_are_read():
    options = el_options(
        argparse.Namespace(decoder_kv_heads="2", el_memory_budget="1.5", el_encoder_batch=4)
    )
    assert (options.kv_heads, options.memory_budget, options.encoder_batch) == (2, 1.5, 4)


def test_override_keys_are_the_options_added():
    """The one list of EL override keys (the stock-architecture warning, fairseq-el-generate
    --stock) is what add_el_args adds: a new option cannot be missed there."""
    import argparse

    from fairseq_el.models.options import OVERRIDE_KEYS, add_el_args

    parser = argparse.ArgumentParser()
    add_el_args(parser)
    added = {a.dest for a in parser._actions if a.dest != "help"}
    assert added == set(OVERRIDE_KEYS)


def test_policy_default_is_auto_everywhere_a_default_is_read():
    """The parser, the options of a checkpoint that records none, and the dataclass agree."""
    parser = argparse.ArgumentParser()
    add_el_args(parser)
    assert parser.parse_args([]).el_policy == "auto"
    assert el_options(argparse.Namespace()).policy == "auto" == ELOptions().policy
