"""``fairseq-el-generate``'s pieces without a CLI: part files (torn lines, resume checks, the
atomic merge), the option rewrites, and ``--batch-size auto`` against the measured state."""

import argparse
import json

import pytest
import torch
from fairseq.data import Dictionary

from fairseq_el.accounting import Attention, Dims
from fairseq_el.bench.state import StateMeter
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.generate.batching import AutoBatch, ModelMemory, weight_bytes
from fairseq_el.generate.options import split_auto, with_shipped_bpe
from fairseq_el.generate.parts import PartsError, PartStore, PartWriter, dumps
from fairseq_el.generate.ranks import from_env
from fairseq_el.generate.runner import load_models
from fairseq_el.paths import DATA_DIR
from fairseq_el.testing import build_translation_model, make_dictionary, tiny_args

from helpers import generation_args, make_batch


def record(i: int) -> str:
    return dumps({"id": i, "hypotheses": [{"text": f"t{i}", "tokens": [i, 2], "score": -1.5}]})


def test_parts_torn_line_resume_and_merge(tmp_path):
    store = PartStore(tmp_path / "out.jsonl")
    plan = store.start({"beam": 4}, resume=False)
    assert plan.attempt == 1 and not plan.done
    writer = PartWriter(store.part(1, 0, 2))
    writer.write([record(0), record(2)])
    writer.close()
    with open(store.part(1, 1, 2), "wb") as f:
        f.write((record(1) + "\n" + record(3)[:20]).encode())  # killed mid-line
    with pytest.raises(PartsError, match="pass --resume"):
        store.start({"beam": 4}, resume=False)
    with pytest.raises(PartsError, match="--beam 4.*5"):
        store.start({"beam": 5}, resume=True)
    plan = store.start({"beam": 4}, resume=True)
    assert plan.attempt == 2 and plan.done == {0, 1, 2} and plan.torn == 1
    with pytest.raises(PartsError, match="1 examples missing .*ids 3"):
        store.merge(range(4))
    assert not store.output.exists()
    PartWriter(store.part(2, 0, 1)).write([record(3), record(1)])  # duplicates: first wins
    assert store.merge(range(4)) == 4
    lines = store.output.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [0, 1, 2, 3]
    assert lines[1] == record(1) and not store.dir.exists()


def test_corrupt_middle_line_is_named(tmp_path):
    store = PartStore(tmp_path / "out.jsonl")
    store.start({}, resume=False)
    store.part(1, 0, 1).write_text(record(0) + "\nnot json\n" + record(1) + "\n")
    with pytest.raises(PartsError, match=r"a001-r00000-of-00001.jsonl: line 2"):
        store.read()


def test_option_rewrites():
    assert split_auto(["--batch-size", "auto", "--beam", "4"]) == (["--beam", "4"], True)
    assert split_auto(["--max-sentences=auto"]) == ([], True)
    assert split_auto(["--batch-size", "8"]) == (["--batch-size", "8"], False)
    argv = with_shipped_bpe(["d", "--input", "x.txt"])
    assert argv[argv.index("--bpe") + 1] == "gpt2" and "--gpt2-encoder-json" in argv
    assert "--bpe" not in with_shipped_bpe(["d"])
    assert "--gpt2-vocab-bpe" in with_shipped_bpe(["d", "--bpe=gpt2"])


def test_ranks_from_torchrun_and_srun_variables():
    assert from_env({}).world == 1
    r = from_env({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    assert (r.rank, r.world, r.launcher, r.owns(5), r.owns(4)) == (2, 3, "torchrun", True, False)
    s = from_env({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
                  "SLURM_STEP_TASKS_PER_NODE": "2(x2)"})  # fmt: skip
    assert (s.rank, s.world, s.local_world, s.launcher) == (1, 4, 2, "slurm")
    assert from_env({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}).world == 1  # sbatch, not srun


def bart(arch: str, extra=(), vocab: int = 0):
    dictionary = (
        make_dictionary(vocab)
        if vocab
        else Dictionary.load(str(DATA_DIR / "cnndm_fastseq_bin" / "dict.source.txt"))
    )
    model, task, _ = build_translation_model(
        arch, dictionary, extra=[*tiny_args(dim=64, heads=4, ffn=128), *extra], seed=1
    )  # fmt: skip
    return model, task


def auto_for(model, budget: int, beam: int = 4, max_len_b: int = 20) -> AutoBatch:
    memory = model if isinstance(model, ModelMemory) else ModelMemory.of(model)
    weights = 0 if isinstance(model, ModelMemory) else weight_bytes([model])
    return AutoBatch([memory], weights, budget, beam, 0.0, max_len_b, 1024)


def test_auto_batch_is_larger_for_el_than_stock_under_one_budget():
    models = {"stock": bart("bart_base", vocab=100)[0], "el": bart("el_bart_base", vocab=100)[0],
              "el-sa": bart("el_bart_base", ["--el-self-attention"], vocab=100)[0]}  # fmt: skip
    budget = weight_bytes([models["stock"]]) + 256 * (1 << 20)
    batches = {name: auto_for(m, budget).batch(1024) for name, m in models.items()}
    assert 0 < batches["stock"] < batches["el"] <= batches["el-sa"], batches
    assert ModelMemory.of(models["stock"]).variant is Attention.STOCK_PER_SENTENCE
    assert auto_for(models["el"], weight_bytes([models["el"]])).batch(512) == 0


def test_auto_batch_bart_large_shapes():
    """bart-large, source 1024, beam 4, 140 steps, fp16, 40 GiB: EL fits several times more."""
    dims = Dims(layers=12, embed_dim=1024, encoder_dim=1024, heads=16, dtype_bytes=2)
    stock = ModelMemory(Attention.STOCK_PER_SENTENCE, dims, 16, 4096, 50265, False)
    el = ModelMemory(Attention.EL, dims, 16, 4096, 50265, False)
    budget = 40 * (1 << 30)
    stock_batch = auto_for(stock, budget, 4, 140).batch(1024)
    el_batch = auto_for(el, budget, 4, 140).batch(1024)
    assert el_batch > 2 * stock_batch > 0, (stock_batch, el_batch)


@pytest.mark.parametrize("arch", ["bart_base", "el_bart_base"])
def test_auto_batch_state_measured_within_the_budget(arch):
    """Generate at the chosen batch; the measured decoding state stays within the modelled one,
    so weights + the larger phase, with the measured state, fit the budget."""
    model, task = bart(arch, vocab=100)
    src_len, beam, max_len_b = 200, 4, 12
    budget = weight_bytes([model]) + 24 * (1 << 20)
    auto = auto_for(model, budget, beam, max_len_b)
    bucket = auto.bucket(src_len)
    batch = auto.batch(bucket)
    assert batch > 1
    if arch.startswith("el"):
        model.encoder.sentences_per_pass = auto.per_pass(auto.models[0], bucket)
    sample = make_batch(task.source_dictionary, [src_len - 1] * batch, seed=0)
    generator = task.build_generator(
        [model], generation_args(["--beam", str(beam), "--max-len-b", str(max_len_b)])
    )
    meter = StateMeter(generator.model)
    with torch.no_grad():
        task.inference_step(generator, [model], sample)
    p = auto.parts(batch, bucket)
    assert meter.peak["total"] <= p["state"], (meter.peak, p)
    decoding = p["decoding"] - p["state"] + meter.peak["total"]
    assert p["weights"] + max(p["encoding"], decoding) <= budget
    assert auto.peak(batch + 1, bucket) > budget  # the largest that fits


def test_scores_name_their_scorer(tmp_path):
    """The summary's scores say which implementation, version and settings made them."""
    from fairseq_el.generate.report import score

    out, refs = tmp_path / "o.jsonl", tmp_path / "refs.txt"
    out.write_text(record(0) + "\n" + dumps({"id": 1, "hypotheses": [], "skipped": "x"}) + "\n")
    refs.write_text("t0 here. Two.\nskipped\n")
    rouge = score(out, str(refs), "rouge")
    assert rouge["scorer"]["implementation"] == "rouge-score" and rouge["scorer"]["version"]
    assert (
        "Porter stemming" in rouge["scorer"]["settings"]
        and "rougeLsum" in rouge["scorer"]["settings"]
    )
    assert 0 < rouge["rouge1"] < 100
    bleu = score(out, str(refs), "bleu")
    assert bleu["scorer"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")


@pytest.mark.parametrize("batch_auto, overrides, policy", [
    (False, "{}", "auto"),  # the models' default
    (True, "{}", "el"),  # batches sized by memory: the smallest state
    (True, "{'el_policy': 'cached'}", "cached"),  # the user's word
])  # fmt: skip
def test_batch_auto_decodes_with_the_smallest_state(tmp_path, batch_auto, overrides, policy):
    """``--batch-size auto`` sizes batches for EL's state, so it decodes with ``--el-policy el``
    unless ``--model-overrides`` names a policy; otherwise the model default (``auto``) holds.
    The checkpoint is a stock one, as users bring it (it records no EL option)."""
    stock, task, args = build_translation_model("bart_base", make_dictionary(20), extra=tiny_args())
    save_checkpoint(stock, args, str(tmp_path / "model.pt"))
    options = argparse.Namespace(
        path=str(tmp_path / "model.pt"), model_overrides=overrides, compile_mode="none",
        stock=False, batch_auto=batch_auto, checkpoint_suffix="", checkpoint_shard_count=1,
    )  # fmt: skip
    (model,), _ = load_models(options, task)
    assert model.decoder.el_policy.mode == policy
