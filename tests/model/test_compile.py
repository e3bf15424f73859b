"""The compiled decoding step (``--el-compile``): same hypotheses as stock and eager EL, one graph
per step (no breaks), a bounded number of graphs, and eager decoding, said once, where compiling
is impossible.

Compiling is slow on a small CPU (tens of seconds per graph): one compiled model serves every
search mode (module fixture); graphs of the same search width are reused across runs. The
inductor cases are the trained Transformer; the BART-shaped case (learned positions, embedding
layer norm, EL self-attention, capacity growth) traces with ``aot_eager`` (dynamo and
functionalization, no C++ compile) to keep the file short.
"""

import argparse
import gc
import logging

import pytest
import torch
from torch._dynamo.utils import counters

from fairseq_el.models.compiled_step import freezes, log_run
from fairseq_el.models.options import ELOptionError, el_options
from fairseq_el.testing import build_language_model, generation_args, tiny_lm_args

from helpers import (
    assert_hypos_equal,
    el_twin,
    generate,
    make_batch,
    make_dictionary,
    stock_and_el,
    tiny_args,
)

TRAINED = tiny_args(dim=32, heads=4, ffn=64)
LENGTHS = ["--max-len-a", "1.2", "--max-len-b", "3"]  # sentences finish at different steps
SEARCHES = {  # k = 4 but greedy: two search widths, so a handful of graphs in all
    "beam": ["--beam", "4"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2", "--diverse-beam-strength", "0.5"],
    "sampling": ["--sampling", "--sampling-topk", "5", "--beam", "4", "--seed", "7"],
    "greedy": ["--beam", "1"],
}
MAX_GRAPHS_PER_RUN = 2  # per search width: symbolic sizes, and one sentence left (size 1)


@pytest.fixture(scope="module")
def compiled(trained_transformer):
    """(stock, eager EL, compiled EL, task, sample): the trained Transformer and its EL twins."""
    trained, task, dictionary = trained_transformer
    eager, _, _ = el_twin(trained, "transformer", dictionary, TRAINED, 9)
    el, _, _ = el_twin(trained, "transformer", dictionary, [*TRAINED, "--el-compile", "default"], 9)
    sample = make_batch(dictionary, [4, 8, 6, 3, 7, 5], seed=1234)
    return trained, eager, el, task, sample


@pytest.mark.parametrize("value, message", [
    ("fast", "--el-compile must be one of none, default, reduce-overhead, not 'fast'"),
    (True, "--el-compile (el_compile) takes a str, not True"),
])  # fmt: skip
def test_compile_option_is_refused_by_name(value, message):
    with pytest.raises(ELOptionError) as err:
        el_options(argparse.Namespace(el_compile=value))
    assert message in str(err.value)
    assert el_options(argparse.Namespace()).compile == "none"


@pytest.mark.parametrize("name", list(SEARCHES))
def test_compiled_step_matches_stock_and_eager(compiled, name):
    stock, eager, el, task, sample = compiled
    argv = LENGTHS + SEARCHES[name]
    breaks = sum(counters["graph_break"].values())
    hypos = generate(task, el, sample, argv)
    stats = el.decoder.compile_stats
    assert stats.eager_reason is None, stats.eager_reason
    assert stats.compiled_steps > 0 and stats.eager_steps == 0
    assert stats.graph_breaks == 0 and sum(counters["graph_break"].values()) == breaks
    assert stats.graphs <= MAX_GRAPHS_PER_RUN, stats.graph_shapes
    to_stock = assert_hypos_equal(generate(task, stock, sample, argv), hypos)
    to_eager = assert_hypos_equal(generate(task, eager, sample, argv), hypos)
    print(f"{name}: {stats.summary()}; max score diff {to_stock:.1e} (stock), {to_eager:.1e} (EL)")


def test_graphs_are_reused_and_bounded(compiled, caplog):
    """Runs of one search width reuse their graphs; two widths compile a bounded number; each
    run logs its stats once."""
    stock, eager, el, task, sample = compiled
    log_run(el.decoder.compile_stats)  # an earlier test's run: said before these
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fairseq_el.models.compiled_step"):
        for name in ("beam", "greedy", "beam", "greedy"):
            generate(task, el, sample, LENGTHS + SEARCHES[name])
        gc.collect()  # the last run's state (cycles) is freed: its line comes
    lines = [r.getMessage() for r in caplog.records if "steps compiled" in r.getMessage()]
    assert len(lines) == 4 and all("; 0 graphs compiled" in line for line in lines[2:]), lines
    assert el.decoder.compile_stats.graphs == 0  # the last run compiled nothing
    step = el.decoder.compiled_step
    assert 0 < step.total_graphs <= 2 * MAX_GRAPHS_PER_RUN, step.total_graphs


@pytest.mark.parametrize("options", [
    ["--el-self-attention"],
    ["--el-policy", "cached"],  # fairseq's attention over a projection cached per sentence
])  # fmt: skip
def test_static_caches_grow_and_match_without_c_compiler(options):
    """BART shape, caches growing (capacity 8, then 16), sentences finishing at different steps,
    traced by dynamo with ``aot_eager``: one graph per step, few graphs, outputs as stock and
    eager EL; with EL self-attention, and with the cached projection ``--el-policy auto`` (the
    default) picks where it is the faster."""
    dictionary = make_dictionary(24)
    stock, eager, task = stock_and_el("bart_base", dictionary, tiny_args(dim=16), 2, options)
    _, el, _ = stock_and_el(
        "bart_base", dictionary, tiny_args(dim=16), 2, [*options, "--el-compile", "default"]
    )
    el.decoder.compiled_step.backend = "aot_eager"
    sample = make_batch(dictionary, [5, 9, 3], seed=3)
    argv = ["--max-len-a", "1", "--max-len-b", "3", "--beam", "2"]  # 8 to 12 steps
    hypos = generate(task, el, sample, argv)
    stats = el.decoder.compile_stats
    assert stats.eager_reason is None and stats.graph_breaks == 0
    assert stats.compiled_steps > 8 and 0 < stats.graphs <= MAX_GRAPHS_PER_RUN, stats.graph_shapes
    assert_hypos_equal(generate(task, stock, sample, argv), hypos)
    assert_hypos_equal(generate(task, eager, sample, argv), hypos)


def _same_scores(reference, hypos) -> bool:
    """The very same scores, bit for bit (the same eager code ran)."""
    pairs = [(a, b) for sa, sb in zip(reference, hypos, strict=True) for a, b in zip(sa, sb)]
    return all(torch.equal(a["positional_scores"], b["positional_scores"]) for a, b in pairs)


def _eager_twins(extra=()):
    dictionary = make_dictionary(24)
    stock, eager, task = stock_and_el("transformer", dictionary, [*tiny_args(), *extra], 1)
    _, el, _ = stock_and_el(
        "transformer", dictionary, [*tiny_args(), *extra], 1, ["--el-compile", "default"]
    )
    return eager, el, task, make_batch(dictionary, [5, 9, 3], seed=3)


def test_compiler_failure_decodes_eagerly_and_says_so_once(monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", no_compiler)
    eager, el, task, sample = _eager_twins()
    argv = ["--max-len-a", "0", "--max-len-b", "6", "--beam", "3"]
    with caplog.at_level(logging.WARNING, logger="fairseq_el.models.compiled_step"):
        first = generate(task, el, sample, argv)
        second = generate(task, el, sample, argv)
    lines = [r.getMessage() for r in caplog.records if "decoding eagerly" in r.getMessage()]
    assert lines == [
        "fairseq-el: --el-compile default: compiling failed (RuntimeError: InvalidCxxCompiler: "
        "no working C++ compiler found); decoding eagerly"
    ]
    reference = generate(task, eager, sample, argv)
    assert_hypos_equal(reference, first)
    assert _same_scores(reference, second)  # later runs: the eager decoder, as without the option
    assert el.decoder.compile_stats.eager_steps == 0 and "C++" in el.decoder.compile_stats.summary()


def test_unsupported_option_is_eager_from_the_start(caplog):
    with caplog.at_level(logging.WARNING, logger="fairseq_el.models.compiled_step"):
        eager, el, task, sample = _eager_twins(["--checkpoint-activations"])
    said = [r.getMessage() for r in caplog.records]
    assert any("--checkpoint-activations; decoding eagerly" in line for line in said), said
    argv = ["--max-len-a", "0", "--max-len-b", "5", "--beam", "2"]
    assert _same_scores(generate(task, eager, sample, argv), generate(task, el, sample, argv))
    assert el.decoder.compile_stats.compiled_steps == 0


def test_decoder_only_model_without_recorded_hypotheses():
    """``el_transformer_lm`` under fairseq's ``language_modeling`` task: no ``k`` is recorded,
    reorders copy each row's parent; traced with ``aot_eager``, outputs as eager EL."""
    dictionary = make_dictionary(24)
    eager, task, _ = build_language_model("el_transformer_lm", dictionary, tiny_lm_args(), seed=3)
    el, _, _ = build_language_model(
        "el_transformer_lm", dictionary, [*tiny_lm_args(), "--el-compile", "default"], seed=4
    )
    el.load_state_dict(eager.state_dict())
    el.decoder.compiled_step.backend = "aot_eager"
    prompts = torch.randint(dictionary.nspecial, len(dictionary), (3, 4))
    sample = {"net_input": {"src_tokens": prompts, "src_lengths": torch.full((3,), 4)}}
    args = generation_args(
        ["--task", "language_modeling", "--max-len-a", "0", "--max-len-b", "10", "--beam", "3"]
    )
    hypos = []
    for model in (eager, el):
        with torch.no_grad():
            hypos.append(task.inference_step(task.build_generator([model], args), [model], sample))
    assert_hypos_equal(*hypos)
    stats = el.decoder.compile_stats
    assert stats.eager_reason is None and stats.compiled_steps > 0 and stats.graph_breaks == 0


def test_frozen_graphs_follow_changed_weights(caplog):
    """On a CPU the step is frozen (weights are constants of its graph): a run after an in-place
    change of the weights compiles again and decodes with the new ones, as eager EL does."""
    eager, el, task, sample = _eager_twins()
    argv = ["--max-len-a", "0", "--max-len-b", "6", "--beam", "1"]
    before = generate(task, el, sample, argv)
    assert_hypos_equal(generate(task, eager, sample, argv), before)
    with torch.no_grad():  # the same in-place change in both: the output rows reversed
        for model in (eager, el):
            weight = model.decoder.output_projection.weight
            weight.copy_(weight.flip(0))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fairseq_el.models.compiled_step"):
        after = generate(task, el, sample, argv)
    assert any("the weights changed; compiling again" in r.getMessage() for r in caplog.records)
    assert el.decoder.compile_stats.graphs > 0 and el.decoder.compile_stats.eager_reason is None
    assert_hypos_equal(generate(task, eager, sample, argv), after)
    changed = [a[0]["tokens"].tolist() != b[0]["tokens"].tolist() for a, b in zip(before, after)]
    assert any(changed), "the change left every hypothesis as it was: the test could not fail"


def test_frozen_graph_holds_the_weights_it_was_compiled_with():
    """Why the weights are compared: a frozen graph holds the weights it was compiled with (this
    test fails if freezing stops reaching the trace, and the step would silently be unfrozen)."""
    linear, x = torch.nn.Linear(8, 8), torch.randn(2, 8)
    step = torch.compile(lambda module, x: module(x), fullgraph=True)
    with torch.no_grad(), torch._inductor.config.patch(freezing=freezes("inductor", x.device)):
        first = step(linear, x)
        linear.weight.mul_(2)
        assert torch.equal(step(linear, x), first)  # stale: the graph holds the old weights
