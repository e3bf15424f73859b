"""Device and sync discipline of EL decoding (``tests/discipline.py``) on the parity paths.

Each case builds a tiny seeded model, decodes under :class:`Discipline` (the generate call only),
prints the counts and checks the tokens against a reference decoded outside the harness (stock
fairseq on the same weights where a stock twin exists), then fails on any implicit-device factory
made by fairseq_el while decoding or any host sync made by fairseq_el in a step after the first.
fairseq's own syncs are printed, never failed on. The harness is first shown to see every op it
claims to, and to catch a planted fault of each kind inside a real decoding step.
"""

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary, data_utils, indexed_dataset

import fairseq_el
from fairseq_el.attention import cache as cache_module
from fairseq_el.attention.policy import measure_hardware
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.tasks.el_language_modeling import ELLanguageModelingTask
from fairseq_el.testing import (
    build_language_model,
    build_translation_model,
    make_dictionary,
    tiny_args,
    tiny_lm_args,
)

from discipline import (
    FACTORY,
    FAIRSEQ_EL,
    STEP,
    SYNC,
    Discipline,
    DisciplineError,
    legacy_constructor_calls,
)
from helpers import LM_SEARCHES, SCORE_TOL, assert_hypos_equal, exit_code, generate, make_batch

DATA_DIR = Path(fairseq_el.__file__).parent / "data"

# -- the harness sees what it claims to -----------------------------------------------------------

PLANTED = '''
import numpy as np
import torch

def factories(x):
    """Implicit-device factories, one per line (the test reads the op off the line)."""
    torch.arange(3)
    torch.zeros(2)
    torch.ones(2)
    torch.empty(2)
    torch.full((2,), 1.0)
    torch.tensor([1, 2])
    torch.as_tensor([1, 2])
    torch.randn(2)
    torch.rand(2)
    torch.randint(0, 3, (2,))
    torch.randperm(3)
    torch.eye(2)
    torch.linspace(0, 1, 3)
    torch.logspace(0, 1, 3)
    torch.empty_strided((2,), (1,))
    torch.scalar_tensor(1)
    torch.triu_indices(3, 3)
    torch.from_numpy(np.zeros(2))

def derived(x):
    """Factories that name a device or derive from a tensor: none is recorded."""
    torch.arange(3, device=x.device)
    torch.zeros(2, device=x.device)
    torch.full((2,), 1.0, device=x.device, dtype=x.dtype)
    torch.tensor([1, 2], device=x.device)
    torch.as_tensor(x)
    torch.zeros_like(x)
    x.new_zeros(2)
    x.new_full((2,), 1.0)
    torch.arange(3, out=x.new_empty(3, dtype=torch.long))

def syncs(x):
    """Host syncs, one per line."""
    bool(x.any())
    x.sum().item()
    x.tolist()
    torch.unique(x)
    torch.nonzero(x)
    x.nonzero()
    torch.where(x > 0)
    x.cpu()
    x.numpy()
    int(x[0])
    float(x[0])
    [0, 1, 2][x[0].long()]
    torch.equal(x, x)
    x.masked_select(x > 0)
    x[x > 0]
    torch.repeat_interleave(x.long(), x.long())
    x.to("cpu")
    1.0 in x
    torch.unique_consecutive(x)
    torch.argwhere(x)
    torch.allclose(x, x)
    torch.is_nonzero(x[0])
    torch.bincount(x.long())
    f"{x[0]:.1f}"
    repr(x)
    np.asarray(x)

def no_syncs(x):
    """Device-side ops: none is recorded."""
    x.any()
    torch.where(x > 0, x, x)
    x.repeat_interleave(2)
    x[x.long()]
    x.to(x.device)
    x.index_select(0, x.long())

def implicit_device(x):
    return x + torch.arange(x.size(-1)).to(x)  # planted: a factory without a device

def host_sync(x):
    if bool((x == x).all()):  # planted: a sync in every step
        return x
    return x
'''

FACTORY_OPS = ["arange", "zeros", "ones", "empty", "full", "tensor", "as_tensor", "randn", "rand",
               "randint", "randperm", "eye", "linspace", "logspace", "empty_strided",
               "scalar_tensor", "triu_indices", "from_numpy"]  # fmt: skip
SYNC_OPS = ["__bool__", "item", "tolist", "unique", "nonzero", "nonzero", "where(cond)", "cpu",
            "numpy", "__int__", "__float__", "__index__", "equal", "masked_select",
            "__getitem__(bool mask)", "repeat_interleave(tensor repeats)", "to(cpu)",
            "__contains__", "unique_consecutive", "argwhere", "allclose", "is_nonzero",
            "bincount", "__format__", "__repr__", "__array__"]  # fmt: skip


@pytest.fixture
def planted(tmp_path):
    """The module above, as a file of its own folder (the test adds it to the harness roots)."""
    path = tmp_path / "planted_faults.py"
    path.write_text(PLANTED)
    spec = importlib.util.spec_from_file_location("planted_faults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines_of(function: Callable) -> List[int]:
    """The line numbers of a planted function's body statements (after its docstring)."""
    first = function.__code__.co_firstlineno
    source = Path(function.__code__.co_filename).read_text().splitlines()
    body = []
    for offset, line in enumerate(source[first:], start=first + 1):
        if line and not line.startswith(" "):
            break
        if line.strip() and not line.strip().startswith('"""'):
            body.append(offset)
    return body


def test_every_op_reaches_the_harness(planted):
    """Each factory and sync is recorded once, at its line, with its name; derived factories and
    device-side ops are not."""
    x = torch.tensor([1.0, 0.0, 2.0])
    with Discipline(roots=(FAIRSEQ_EL, Path(planted.__file__).parent)) as d:
        with d.decoding():
            for function in (planted.factories, planted.derived, planted.syncs, planted.no_syncs):
                function(x)
    found = {kind: sorted((e.site.line, e.op) for e in d.events if e.kind == kind)
             for kind in (FACTORY, SYNC)}  # fmt: skip
    print(d.report("planted ops"))
    assert found[FACTORY] == list(zip(lines_of(planted.factories), FACTORY_OPS))
    assert found[SYNC] == list(zip(lines_of(planted.syncs), SYNC_OPS))
    assert {e.origin for e in d.events} == {"fairseq_el"}


def test_nothing_is_recorded_outside_decoding(planted):
    x = torch.tensor([1.0, 2.0])
    with Discipline(roots=(Path(planted.__file__).parent,)) as d:
        planted.factories(x)
        planted.syncs(x)
    assert d.events == [] and d.steps == 0


def test_the_cpu_only_factories_are_restored():
    before = (torch.from_numpy, torch.frombuffer, torch.cuda.synchronize)
    with Discipline():
        assert torch.from_numpy is not before[0]
    assert (torch.from_numpy, torch.frombuffer, torch.cuda.synchronize) == before


@pytest.mark.parametrize("fault", ["implicit_device", "host_sync"])
def test_a_planted_fault_in_a_decoding_step_is_caught(planted, fault, monkeypatch):
    """The fault runs in every layer's encoder-decoder attention of a real EL decoding; inside
    fairseq_el's roots it fails the case, outside them it is only reported as other code's."""
    dictionary = make_dictionary(24)
    model, task, _ = build_translation_model(
        "el_transformer", dictionary, extra=tiny_args(dim=16, heads=4), seed=1
    )
    for layer in model.decoder.layers:
        original = layer.encoder_attn.forward

        def forward(query, *args, _original=original, **kwargs):
            getattr(planted, fault)(query)
            return _original(query, *args, **kwargs)

        monkeypatch.setattr(layer.encoder_attn, "forward", forward)
    sample = make_batch(dictionary, [5, 9, 3], seed=3)
    argv = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "6"]
    kind, op = (FACTORY, "arange") if fault == "implicit_device" else (SYNC, "__bool__")

    with Discipline(roots=(FAIRSEQ_EL, Path(planted.__file__).parent)) as d:
        generate(task, model, sample, argv)
    print(d.report(f"planted {fault}"))
    planted_events = [e for e in d.events if e.site.file == planted.__file__]
    assert {(e.kind, e.op, e.origin) for e in planted_events} == {(kind, op, "fairseq_el")}
    layers = len(model.decoder.layers)
    assert len([e for e in planted_events if e.phase == STEP]) == layers * (d.steps - 1)
    with pytest.raises(DisciplineError, match="planted_faults.py"):
        d.assert_clean()
    assert d.count(SYNC, "fairseq"), "fairseq's own syncs are counted apart"

    with Discipline() as other:  # the same fault, not under fairseq_el's roots
        generate(task, model, sample, argv)
    planted_events = [e for e in other.events if e.site.file == planted.__file__]
    assert planted_events and {e.origin for e in planted_events} == {"other"}
    violations = [site for c in other.violations().values() for site, _ in c]
    assert planted.__file__ not in {site.file for site in violations}


def test_decoding_code_has_no_legacy_constructors():
    """``torch.LongTensor(...)``-style constructors make CPU tensors and are invisible to a
    TorchFunctionMode: a source scan of the decoding packages."""
    packages = [FAIRSEQ_EL / p for p in ("attention", "models", "tasks", "compat")]
    assert legacy_constructor_calls(packages) == []


# -- the parity paths under the harness ---------------------------------------------------------

DEFAULTS = ["--max-len-a", "0", "--max-len-b", "10"]
SEARCH = {
    "beam": ["--beam", "4"],
    "greedy": ["--beam", "1"],
    "sampling": ["--sampling", "--sampling-topk", "5", "--beam", "3", "--seed", "7"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2", "--diverse-beam-strength", "0.5"],
    "prefix": ["--beam", "3", "--prefix-size", "2"],
    "nbest": ["--beam", "5", "--nbest", "3"],
}
TRANSLATION = {"transformer": ("transformer", 16, 4), "bart": ("bart_base", 18, 3)}
MAIN = ["beam", "greedy", "sampling", "diverse_beam"]  # the search modes of every variant
VARIANTS = {  # name: (EL options, whether the stock model is the reference, search modes)
    "el": ([], True, list(SEARCH)),
    "el_self_attention": (["--el-self-attention"], True, MAIN),
    "grouped_query": (["--decoder-kv-heads", "1"], False, MAIN),
    "policy_auto": (["--el-policy", "auto"], True, ["beam", "sampling"]),
    "policy_cached": (["--el-policy", "cached"], True, ["beam", "sampling"]),
    "encoder_batch": (["--el-encoder-batch", "2"], True, ["beam", "sampling"]),
}
LENGTHS = [5, 9, 3, 12, 7]


@pytest.fixture(autouse=True)
def production_mode(monkeypatch):
    """The order checks of debug mode (``FAIRSEQ_EL_CHECK_ORDERS``, which conftest turns on) are
    host syncs by design: decode as in production."""
    monkeypatch.setattr(cache_module, "CHECK_ORDERS", False, raising=False)


def check(d: Discipline, name: str, reference: List, hypos: List) -> None:
    diff = assert_hypos_equal(reference, hypos)
    print(f"{name}: identical tokens, max score diff {diff:.1e}")
    print(d.report(name))
    d.assert_clean()


TRANSLATION_CASES = [
    (model_name, variant, search)
    for model_name in TRANSLATION
    for variant, (_, _, searches) in VARIANTS.items()
    for search in searches
]


@pytest.mark.parametrize("model_name,variant,search", TRANSLATION_CASES)
def test_translation_decoding_is_disciplined(model_name, variant, search):
    arch, dim, heads = TRANSLATION[model_name]
    dictionary = make_dictionary(24)
    extra, stock_reference, _ = VARIANTS[variant]
    el, task, _ = build_translation_model(
        "el_" + arch, dictionary, extra=[*tiny_args(dim=dim, heads=heads), *extra], seed=2
    )
    sample = make_batch(dictionary, LENGTHS, seed=3)
    argv = DEFAULTS + SEARCH[search]
    if stock_reference:
        stock, _, _ = build_translation_model(
            arch, dictionary, extra=tiny_args(dim=dim, heads=heads)
        )
        stock.load_state_dict(el.state_dict())
        reference = generate(task, stock, sample, argv)
    else:
        reference = generate(task, el, sample, argv)
    if variant == "policy_auto":
        measure_hardware(torch.device("cpu"), torch.float32)  # the policy's one-time measurement
    with Discipline() as d:
        hypos = generate(task, el, sample, argv)
    check(d, f"{model_name} {variant} {search}", reference, hypos)


@pytest.mark.parametrize(
    "variant,search",
    [("el", s) for s in SEARCH] + [("el_self_attention", s) for s in ("beam", "diverse_beam")],
)
def test_sentences_finishing_at_different_steps(trained_transformer, variant, search):
    """A trained model ends its hypotheses at different steps: the batch shrinks as it decodes."""
    trained, task, dictionary = trained_transformer
    extra = [*tiny_args(dim=32, heads=4, ffn=64), *VARIANTS[variant][0]]
    el, _, _ = build_translation_model("el_transformer", dictionary, extra=extra, seed=9)
    el.load_state_dict(trained.state_dict())
    sample = make_batch(dictionary, [4, 8, 6, 3, 7, 5], seed=1234)
    argv = ["--max-len-a", "1.2", "--max-len-b", "3", *SEARCH[search]]
    reference = generate(task, trained, sample, argv)
    with Discipline() as d:
        hypos = generate(task, el, sample, argv)
    assert len(set(d.rows)) > 1, f"the batch should shrink: rows per step {d.rows}"
    check(d, f"trained transformer {variant} {search}", reference, hypos)


# -- decoder-only: transformer_lm and the prompt task ------------------------------------------

LM_ARCH = "transformer_lm_gpt2_tiny"
LM_SEARCH = LM_SEARCHES
LM_VARIANTS = {
    "el": [],
    "el_self_attention": ["--el-self-attention"],
    "grouped_query": ["--decoder-kv-heads", "2"],
}


def lm_sample(dictionary: Dictionary, lengths: Sequence[int], seed: int = 0) -> Dict:
    """Prompts of different lengths, right-padded as fairseq's LM datasets pad them."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.full((len(lengths), max(lengths)), dictionary.pad())
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(dictionary.nspecial, len(dictionary), (n,), generator=gen)
    return {
        "id": torch.arange(len(lengths)),
        "net_input": {"src_tokens": tokens, "src_lengths": torch.tensor(lengths)},
        "target": tokens,
        "nsentences": len(lengths),
        "ntokens": int(sum(lengths)),
    }


def lm_generate(task, model, sample: Dict, argv: Sequence[str], seq_gen_cls=None) -> List:
    parser = options.get_generation_parser(default_task="language_modeling")
    args = options.parse_args_and_arch(
        parser, ["<none>", "--max-len-a", "1", "--max-len-b", "5", *argv]
    )
    generator = task.build_generator([model], args, seq_gen_cls=seq_gen_cls)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        return task.inference_step(generator, [model], sample)


LM_CASES = [
    (task_name, variant, search)
    for task_name in ("language_modeling", "el_language_modeling")
    for variant in LM_VARIANTS
    for search in LM_SEARCH
]


@pytest.mark.parametrize("task_name,variant,search", LM_CASES)
def test_lm_decoding_is_disciplined(task_name, variant, search):
    """``el_transformer_lm`` through fairseq's generator, and ``--task el_language_modeling``
    (the shared prompt in one pass, then the rest forced step by step)."""
    dictionary = make_dictionary(30)
    extra = [*tiny_lm_args(dim=24, heads=4), *LM_VARIANTS[variant]]
    el, lm_task, args = build_language_model("el_" + LM_ARCH, dictionary, extra=extra, seed=1)
    sample = lm_sample(dictionary, [7, 3, 5, 9], seed=2)
    argv = LM_SEARCH[search]
    if task_name == "el_language_modeling":
        task = ELLanguageModelingTask(args, dictionary, dictionary)
        reference = lm_generate(lm_task, el, sample, argv)  # stock generator, token by token
    else:
        task = lm_task
        if variant == "grouped_query":
            reference = lm_generate(task, el, sample, argv)
        else:
            stock, _, _ = build_language_model(
                LM_ARCH, dictionary, extra=tiny_lm_args(dim=24, heads=4)
            )
            stock.load_state_dict(el.state_dict())
            reference = lm_generate(task, stock, sample, argv)
    with Discipline() as d:
        hypos = lm_generate(task, el, sample, argv)
    if task_name == "el_language_modeling":
        assert d.decoder_calls < d.steps, "the shared prompt is decoded in one pass"
    check(d, f"{task_name} {variant} {search}", reference, hypos)


# -- fairseq-el-generate, in process ------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 4 shipped CNN/DM pairs, binarized, and a tiny seeded BART checkpoint."""
    out = tmp_path_factory.mktemp("el_generate")
    data = DATA_DIR / "cnndm_fastseq_bin"
    for side in ("source", "target"):
        prefix = f"valid.source-target.{side}"
        dataset = data_utils.load_indexed_dataset(str(data / prefix), None)
        builder = indexed_dataset.make_builder(str(out / f"{prefix}.bin"), impl="mmap",
                                               vocab_size=50264)  # fmt: skip
        for i in range(4):
            builder.add_item(dataset[i])
        builder.finalize(str(out / f"{prefix}.idx"))
        shutil.copy(data / f"dict.{side}.txt", out / f"dict.{side}.txt")
    dictionary = Dictionary.load(str(data / "dict.source.txt"))
    model, _, args = build_translation_model(
        "bart_base", dictionary, extra=tiny_args(dim=16, heads=4), seed=3
    )
    save_checkpoint(model, args, str(out / "model.pt"))
    return out


def test_fairseq_el_generate_is_disciplined(corpus):
    """``fairseq-el-generate``'s own path (``generate.runner.Generation``), called in process
    (its output equals fairseq-generate's: tests/e2e/test_generate.py)."""
    from fairseq_el.generate.cli import main

    output = corpus / "el.jsonl"
    argv = [str(corpus), "--path", str(corpus / "model.pt"), "-s", "source", "-t", "target",
            "--gen-subset", "valid", "--truncate-source", "--max-len-b", "8", "--seed", "3",
            "--no-progress-bar", "--batch-size", "4", "--beam", "4", "--nbest", "2",
            "--output", str(output)]  # fmt: skip
    with Discipline() as d:
        assert exit_code(main, argv) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 4 and all(len(r["hypotheses"]) == 2 for r in lines)
    assert d.generates == 1 and d.steps > 1
    print(d.report("fairseq-el-generate"))
    d.assert_clean()


def test_fairseq_el_generate_compile(corpus, monkeypatch, capsys):
    """``fairseq-el-generate --compile``: the model option reaches the decoder, the records equal
    the eager run's token for token, the summary reports the graphs and their seconds apart
    from decoding; refused with --stock. Traced with ``aot_eager`` (no C++ compile here; the
    inductor path is tests/model/test_compile.py's)."""
    from fairseq_el.generate.cli import main
    from fairseq_el.models import compiled_step

    init = compiled_step.CompiledStep.__init__

    def aot_eager(self, mode):
        init(self, mode)
        self.backend = "aot_eager"

    monkeypatch.setattr(compiled_step.CompiledStep, "__init__", aot_eager)
    argv = [str(corpus), "--path", str(corpus / "model.pt"), "-s", "source", "-t", "target",
            "--gen-subset", "valid", "--truncate-source", "--max-len-b", "8", "--seed", "3",
            "--no-progress-bar", "--batch-size", "4", "--beam", "4"]  # fmt: skip
    eager, compiled = corpus / "eager.jsonl", corpus / "compiled.jsonl"
    assert exit_code(main, [*argv, "--output", str(eager)]) == 0
    assert exit_code(main, [*argv, "--compile", "default", "--output", str(compiled)]) == 0
    records = [[json.loads(x) for x in p.read_text().splitlines()] for p in (eager, compiled)]
    for a, b in zip(*records):
        assert [h["tokens"] for h in a["hypotheses"]] == [h["tokens"] for h in b["hypotheses"]]
        for ha, hb in zip(a["hypotheses"], b["hypotheses"]):
            assert abs(ha["score"] - hb["score"]) < SCORE_TOL
    summary = json.loads((corpus / "compiled.jsonl.summary.json").read_text())
    assert summary["compile"] == "default" and summary["compile_graphs"] >= 1
    assert 0 < summary["compile_seconds"] <= summary["seconds"]
    assert "graphs compiled in" in capsys.readouterr().err
    stock = [*argv, "--compile", "default", "--stock", "--output", str(corpus / "s.jsonl")]
    assert exit_code(main, stock) == 2
