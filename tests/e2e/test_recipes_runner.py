"""The runner on a tiny model for each task config: stock and EL give the same hypotheses."""

import json

import pytest
from fairseq.data import Dictionary

from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.recipes import cli, compare, prepare, runner, sources
from fairseq_el.recipes.config import load_config
from fairseq_el.testing import build_translation_model, tiny_args

TASK_SAMPLES = {
    "xsum": lambda: sources.read_xsum_jsonl(DATA_DIR / "xsum_hf_fixture/sample.json")[:3],
    "cnndm": lambda: sources.read_stories(
        sorted((DATA_DIR / "cnndm_allennlp_stories/cnn_stories").glob("*.story"))[:2]
    ),
    "squad_qg": lambda: sources.read_squad_qg(DATA_DIR / "squad_v11_allennlp/squad.json")[:3],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded tiny bart_base over the BART dictionary, saved as fairseq-train would.

    64 target positions cap decoding at 63 steps: a random model never ends a sentence itself.
    """
    dictionary = Dictionary.load(str(BPE_DIR / "dict.txt"))
    extra = [*tiny_args(), "--max-target-positions", "64"]
    model, _, args = build_translation_model("bart_base", dictionary, extra=extra, seed=3)
    path = tmp_path_factory.mktemp("model") / "bart_tiny.pt"
    save_checkpoint(model, args, str(path))
    return path


@pytest.mark.parametrize("task", sorted(TASK_SAMPLES))
def test_stock_and_el_agree(task, checkpoint, tmp_path):
    config = load_config(task)
    data, out = tmp_path / "data", tmp_path / "out"
    prepare.prepare({"test": TASK_SAMPLES[task]()}, data, config.max_source_positions, 128)
    if task == "cnndm":  # through the command line, as a user runs it
        with pytest.raises(SystemExit) as exit_:
            cli.run_task_main(
                ["--config", task, "--checkpoint", str(checkpoint), "--data", str(data),
                 "--compare", "--threads", "1", "--out", str(out)]
            )  # fmt: skip
        assert exit_.value.code == 0  # non-zero when any hypothesis differs
        record = json.loads((out / "comparison.json").read_text("utf-8"))
        stock, el, differing = record["stock"], record["el"], record["differing"]
    else:
        result = compare.compare(config, checkpoint, data, out, threads=1)
        stock, el, differing = vars(result.stock), vars(result.el), result.differing
    assert differing == 0 and stock["hypotheses"] == el["hypotheses"]
    assert stock["scores"] == el["scores"]
    assert stock["model_classes"] == ["fairseq.models.bart.model.BARTModel"]
    assert el["model_classes"] == ["fairseq_el.models.el_bart.ELBARTModel"]
    assert len(stock["hypotheses"]) == len(TASK_SAMPLES[task]())
    expected = {"qg_bleu4", "qg_rougeL"} if config.metric == "qg" else set(runner.rouge([""], [""]))
    assert set(stock["scores"]) == expected | {"sacrebleu"}


def test_el_override_names_the_el_arch(checkpoint, tmp_path):
    assert runner.checkpoint_file_arch(checkpoint) == "bart_base"
    argv = runner.generate_argv(load_config("xsum"), checkpoint, tmp_path, tmp_path, el=True)
    overrides = argv[argv.index("--model-overrides") + 1]
    assert overrides == "{'arch': 'el_bart_base', '_name': 'el_bart_base'}"
    assert "--required-batch-size-multiple" in argv
