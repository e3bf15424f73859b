"""Every console script answers a bad input with one line naming the option or file (and line),
exit code 2, no traceback, before doing any work. The table is the sweep, by entry point."""

import json
from pathlib import Path

import pytest
import torch
from fairseq.data import Dictionary

from fairseq_el.bench import cli as bench_cli
from fairseq_el.convert import cli as convert_cli
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.recipes import cli as recipes_cli
from fairseq_el.recipes import prepare, sources
from fairseq_el.testing import build_translation_model, tiny_args

from helpers import exit_code

PROGS = {
    recipes_cli.prepare_main: "fairseq-el-prepare",
    recipes_cli.run_task_main: "fairseq-el-run-task",
    recipes_cli.finetune_main: "fairseq-el-finetune",
    recipes_cli.demo_main: "fairseq-el-demo",
    recipes_cli.gqa_study_main: "fairseq-el-gqa-study",
    bench_cli.report_main: "fairseq-el-bench-report",
    bench_cli.roofline_main: "fairseq-el-roofline",
    convert_cli.convert_main: "fairseq-el-convert",
    convert_cli.convert_hf_main: "fairseq-el-convert-hf",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs good and bad: text, JSON lines, a tiny checkpoint, prepared data, broken data."""
    root = tmp_path_factory.mktemp("inputs")
    f = {"root": root, "missing": root / "missing"}
    (root / "src.txt").write_text("one source\ntwo source\nthree source\n", encoding="utf-8")
    (root / "tgt.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (root / "gap.txt").write_text("one\n\nthree\n", encoding="utf-8")
    (root / "latin1.txt").write_bytes("ok\nok\ncaf\xe9\n".encode("latin-1"))
    (root / "broken.jsonl").write_text('{"document": "d", "summary": "s"}\n{"document": \n')
    (root / "list.jsonl").write_text("[1, 2]\n")
    (root / "squad.json").write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "bad.yaml").write_text("name: [unclosed\n")
    (root / "results.jsonl").write_text('{"kind": "run"}\nnot json\n')
    dictionary = Dictionary.load(str(BPE_DIR / "dict.txt"))
    model, _, args = build_translation_model("bart_base", dictionary, extra=tiny_args(), seed=3)
    save_checkpoint(model, args, str(root / "model.pt"))
    pairs = sources.read_line_pairs(root / "src.txt", root / "tgt.txt")
    prepare.prepare({"test": pairs}, root / "data", 64, 64)
    (root / "empty_src.txt").write_text("")
    (root / "empty_tgt.txt").write_text("")
    (root / "hf_noweights").mkdir()
    (root / "hf_noweights" / "config.json").write_text(json.dumps({"model_type": "bart"}))
    (root / "hf_badconfig").mkdir()
    (root / "hf_badconfig" / "config.json").write_text('{"model_type": "bart",\n')
    (root / "hf_badconfig" / "model.safetensors").write_bytes(b"")
    cross, _, cross_args = build_translation_model(
        "transformer", dictionary, extra=[*tiny_args(), "--cross-self-attention"], seed=3
    )
    save_checkpoint(cross, cross_args, str(root / "cross.pt"))
    state = torch.load(root / "model.pt", weights_only=False)
    state["model"]["decoder.layers.0.gate.weight"] = torch.zeros(4)  # not in bart_base
    torch.save(state, root / "extra.pt")
    (root / "half").mkdir()
    (root / "half" / "manifest.json").write_text(json.dumps({"status": "incomplete"}))
    for name in ("dict.source.txt", "dict.target.txt"):
        (root / "half" / name).write_text("")
    return f


def cases(f):
    r, missing = f["root"], str(f["missing"])
    lines = ["--format", "lines", "--source", str(r / "src.txt"), "--target", str(r / "tgt.txt")]
    prep = recipes_cli.prepare_main
    out = ["--out", str(r / "out")]
    task = ["--config", "xsum", "--checkpoint", str(r / "model.pt"), "--data", str(r / "data"),
            "--out", str(r / "run")]  # fmt: skip
    run = recipes_cli.run_task_main
    bench = bench_cli.main
    shape = ["--shape", "tiny-bart", "--src-len", "7", "--batch", "2", "--beam", "2", "--steps",
             "3", "--out", str(r / "b.jsonl")]  # fmt: skip
    return [
        (prep, ["--format", "lines", *out], "--format lines takes --source and --target"),
        (prep, ["--format", "stories", *out], "--format stories takes --input"),
        (prep, ["--format", "lines", "--source", missing, "--target", str(r / "tgt.txt"), *out],
         f"--source {missing}: no such file"),
        (prep, ["--format", "lines", "--source", str(r / "gap.txt"), "--target",
                str(r / "tgt.txt"), *out], "gap.txt: line 2 is empty"),
        (prep, ["--format", "lines", "--source", str(r / "latin1.txt"), "--target",
                str(r / "tgt.txt"), *out], "latin1.txt: line 3: not UTF-8 text"),
        (prep, ["--format", "xsum-jsonl", "--input", str(r / "broken.jsonl"), *out],
         "broken.jsonl: line 2: not JSON"),
        (prep, ["--format", "xsum-jsonl", "--input", str(r / "list.jsonl"), *out],
         "list.jsonl: line 1: not a JSON object"),
        (prep, ["--format", "squad-json", "--input", str(r / "broken.jsonl"), *out],
         "broken.jsonl: line 2: not JSON"),
        (prep, ["--format", "squad-json", "--input", str(r / "squad.json"), *out],
         "not SQuAD JSON"),
        (prep, ["--format", "stories", "--input", missing, *out], "no such file or directory"),
        (prep, [*lines, *out, "--max-source-positions", "-3"],
         "--max-source-positions must be at least 2, not -3"),
        (prep, [*lines, *out, "--max-source-positions", "1"],
         "--max-source-positions must be at least 2, not 1"),
        (prep, [*lines, *out, "--max-target-positions", "0"],
         "--max-target-positions must be at least 2, not 0"),
        (prep, [*lines, *out, "--max-source-positions", "x"], "invalid int value: 'x'"),
        (prep, [*lines, *out, "--splits", "test:99"], "--splits: 'test:99' needs examples"),
        (prep, [*lines, *out, "--splits", "test:two"], "--splits: bad size in 'test:two'"),
        (prep, [*lines, *out, "--workers", "0"], "--workers must be at least 1"),
        (prep, [*lines, *out, "--config", "nope"], "--config nope: task config not found"),
        (prep, [*lines, *out, "--config", str(r / "bad.yaml")], "bad.yaml: line 2: not YAML"),
        (prep, [*lines, *out, "--dict", missing], f"--dict {missing}: no such file"),
        (prep, [*lines, *out, "--bpe-dir", missing], f"--bpe-dir {missing}: no such directory"),
        (prep, [*lines, "--out", str(r / "src.txt")], "exists and is not a directory"),
        (run, [*task[:2], "--checkpoint", missing, *task[4:]],
         f"--checkpoint {missing}: no such file"),
        (run, [*task[:2], "--checkpoint", str(r / "notes.txt"), *task[4:]],
         "not a torch checkpoint file"),
        (run, [*task[:4], "--data", missing, *task[6:]], f"--data {missing}: no such directory"),
        (run, [*task[:4], "--data", str(r / "half"), *task[6:]], "is incomplete"),
        (run, [*task, "--subset", "valid"], "valid.source-target.source.idx: no such file"),
        (run, [*task, "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (run, [*task, "--threads", "-1"], "--threads must be at least 1, not -1"),
        (run, [*task, "--variant", "nucleus"], "--variant nucleus: not in"),
        (run, ["--config", "nope", *task[2:]], "--config nope: task config not found"),
        (run, [*task, "--el", "--compare"], "not allowed with argument"),
        (run, [*task, "--out", str(r / "src.txt")], "exists and is not a directory"),
        (recipes_cli.finetune_main, ["--config", "xsum", "--data", str(r / "data"),
                                     "--save-dir", str(r / "ck"), "--set", "lr"],
         "--set expects OPTION=VALUE, got 'lr'"),
        (recipes_cli.finetune_main, ["--config", "xsum", "--data", str(r / "data"),
                                     "--save-dir", str(r / "ck"), "--toy", "0"],
         "--toy must be at least 1, not 0"),
        (recipes_cli.finetune_main, ["--config", "xsum", "--data", str(r / "data"),
                                     "--save-dir", str(r / "ck"), "--restore-file", missing],
         f"--restore-file {missing}: no such file"),
        (recipes_cli.finetune_main, ["--config", "xsum", "--data", missing, "--save-dir",
                                     str(r / "ck")], f"--data {missing}: no such directory"),
        (recipes_cli.demo_main, ["--threads", "0"], "--threads must be at least 1, not 0"),
        (recipes_cli.demo_main, ["--quick", "--data-root", missing], "--data-root"),
        (recipes_cli.gqa_study_main, ["--max-update", "0"], "--max-update must be at least 1"),
        (recipes_cli.gqa_study_main, ["--variants", "mha,nope"], "unknown variants ['nope']"),
        (bench, [*shape[:-2], "--out", str(r / "no" / "b.jsonl")],
         f"--out {r / 'no' / 'b.jsonl'}: directory {r / 'no'} does not exist"),
        (bench, [*shape, "--threads", "0"], "--threads must be at least 1, not 0"),
        (bench, [*shape, "--repeats", "-1"], "--repeats must be at least 0, not -1"),
        (bench, [*shape, "--batch", "0"], "--batch must be at least 1, not 0"),
        (bench, [*shape, "--sweep", "beam=1,2"], "--sweep takes batch=1,2,4,..."),
        (bench, [*shape, "--sweep", "batch=0,2"], "--sweep: batch sizes must be at least 1"),
        (bench, [*shape, "--variants", "el,fast"], "--variants: unknown ['fast']"),
        (bench, [*shape, "--device", "cuda"], "--device cuda: CUDA is not available here"),
        (bench, [*shape, "--device", "gpu"], "--device gpu: not a device"),
        (bench, [*shape, "--peers", "onnx"], "--peers: unknown ['onnx']"),
        (bench, [*shape, "--plot", str(r / "p.png")], "--plot draws a --sweep"),
        (bench, shape[:4] + shape[-2:], "--shape needs --batch, --beam, --steps"),
        (bench, ["--shape", "nope"], "argument --shape: invalid choice"),
        (bench_cli.report_main, [missing, "--shape", "x", "--src-len", "1", "--batch", "1"],
         f"RESULTS {missing}: no such file"),
        (bench_cli.report_main, [str(r / "results.jsonl"), "--shape", "x", "--src-len", "1",
                                 "--batch", "1"], "results.jsonl: line 2: not JSON"),
        (bench_cli.roofline_main, ["--gpus", "TPU"], "argument --gpus: invalid choice"),
        (convert_cli.convert_hf_main, ["--hf-dir", missing, "--out-dir", str(r / "hf")],
         f"--hf-dir {missing}: no such directory"),
        (convert_cli.convert_main, [missing, str(r / "o.pt")], f"SRC {missing}: no such file"),
        (convert_cli.convert_hf_main, ["--hf-dir", str(r / "hf_noweights"), "--out-dir",
                                       str(r / "hf")], "hf_noweights: no weights file"),
        (convert_cli.convert_hf_main, ["--hf-dir", str(r / "hf_badconfig"), "--out-dir",
                                       str(r / "hf")], "config.json: not a JSON config"),
        (convert_cli.convert_hf_main, ["--hf-model", "acme/absent", "--out-dir", str(r / "hf")],
         "--hf-model acme/absent: not in the local Hugging Face cache"),
        (prep, [*lines, *out, "--splits", "tst:2,test:rest"],
         "--splits: unknown split 'tst' in 'tst:2'"),
        (prep, [*lines, *out, "--splits", "test:1,test:rest"], "split 'test' is given twice"),
        (prep, ["--format", "lines", "--source", str(r / "empty_src.txt"), "--target",
                str(r / "empty_tgt.txt"), *out], "empty_tgt.txt: the input files are empty"),
        (convert_cli.convert_main, [str(r / "cross.pt"), str(r / "o.pt")],
         "a --cross-self-attention model has no EL variant"),
        (convert_cli.convert_main, [str(r / "extra.pt"), str(r / "o.pt")],
         "tensors the architecture does not have: decoder.layers.0.gate.weight"),
    ]  # fmt: skip


def test_every_bad_input_is_one_clear_line(files, capsys):
    tried = 0
    for main, argv, message in cases(files):
        prog = PROGS.get(main, "fairseq-el-benchmark")
        if main is bench_cli.main:  # the console script wraps main and reads sys.argv
            main = bench_cli.entry_point(prog)(bench_cli.main)
        code = exit_code(main, argv)
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip() and not x.startswith("INFO")]
        where = f"{prog} {' '.join(argv)}"
        assert code == 2, f"{where}: exit {code}\n{err}"
        assert "Traceback" not in err, f"{where}:\n{err}"
        assert len(lines) == 1 and lines[0].startswith(prog + ": "), f"{where}:\n{err}"
        assert message in lines[0], f"{where}: {lines[0]!r} does not say {message!r}"
        tried += 1
    print(f"{tried} bad inputs, each one line and exit code 2")
    assert not (files["root"] / "out").exists() and not (files["root"] / "run").exists()
    assert not (files["root"] / "ck").exists() and not (files["root"] / "b.jsonl").exists()
    assert not (files["root"] / "hf").exists() and not (files["root"] / "o.pt").exists()


def test_el_option_on_a_stock_architecture_is_named(files, caplog):
    """``--model-overrides "{'el_self_attention': True}"`` with a stock architecture: fairseq
    builds the stock model (the option is ignored); the plugin's hook says so by name."""
    import fairseq.models

    from fairseq_el.compat import el_options
    from fairseq_el.convert.fairseq_inputs import translation_args

    assert el_options.apply()
    dictionary = Dictionary.load(str(BPE_DIR / "dict.txt"))
    args = translation_args("bart_base", extra=tiny_args())
    args.el_self_attention, args.el_policy = True, "auto"
    task = build_translation_model("bart_base", dictionary, extra=tiny_args())[1]
    with caplog.at_level("WARNING", logger="fairseq_el"):
        fairseq.models.build_model(args, task)
    warned = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert "el_self_attention=True, el_policy='auto' ignored: architecture 'bart_base'" in warned[0]
    assert "'arch': 'el_bart_base'" in warned[0]
    args.arch = args._name = "el_bart_base"
    assert el_options.ignored_el_options(args) == []


def test_shipped_inputs_still_work(files):
    assert Path(DATA_DIR / "gpt2_bpe" / "dict.txt").is_file()
    argv = ["--config", "xsum", "--data", str(files["root"] / "data"), "--save-dir",
            str(files["root"] / "ck"), "--toy", "1", "--dry-run"]  # fmt: skip
    assert exit_code(recipes_cli.finetune_main, argv) == 0
