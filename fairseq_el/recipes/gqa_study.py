"""Quality and speed of stock, multi-query and grouped-query Transformers, and EL, on SQuAD QG.

The study behind ``fairseq-el-gqa-study``. It trains small ``el_transformer`` models that differ
only in ``--decoder-kv-heads`` for the same number of updates on the Du et al. (2017) SQuAD
question-generation pairs shipped in ``data/squad_qg_du2017``, then decodes the test split with
beam search and reports BLEU, ROUGE-L, decoding speed and decoding-state bytes per token. The stock
model is also decoded with EL attention, which gives the same tokens by construction: what EL and
fewer key/value heads each save, and what the latter costs in quality, side by side.

Every result is appended to ``results.jsonl`` in the output directory as soon as it exists.
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from fairseq import checkpoint_utils, tasks, utils
from fairseq.dataclass.configs import GenerationConfig

import fairseq_el
from fairseq_el import metrics as scoring
from fairseq_el.bench.state import StateMeter
from fairseq_el.files import write_text
from fairseq_el.manifest import RunDir
from fairseq_el.models.architectures import stock_arch
from fairseq_el.paths import DATA_DIR
from fairseq_el.tables import markdown_table

QG_DATA = "squad_qg_du2017"  # under the data root
SRC, TGT = "src", "tgt"


@dataclass(frozen=True)
class Budget:
    """Data sizes, model size and training budget: the same for every trained variant."""

    n_valid: int = 500
    n_test: int = 500
    n_train: int = 0  # 0: every pair not in valid/test
    max_update: int = 294  # 3 epochs of the 10.9k training pairs at max_tokens 4096
    warmup_updates: int = 80
    vocab: int = 8000  # joined source+target words kept (fairseq-preprocess --nwordssrc)
    max_tokens: int = 4096
    embed_dim: int = 128
    ffn_dim: int = 512
    layers: int = 2
    heads: int = 4
    beam: int = 4
    batch_size: int = 32  # sentences per decoding batch
    seed: int = 1

    @staticmethod
    def quick() -> "Budget":
        """A smoke run: a couple of minutes in total on 2 CPU cores."""
        return Budget(n_valid=50, n_test=50, n_train=1000, max_update=30, warmup_updates=10,
                      embed_dim=32, ffn_dim=64, layers=1, batch_size=16)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One trained model: ``kv_heads`` None is stock multi-head attention."""

    name: str
    kv_heads: Optional[int]


@dataclass(frozen=True)
class Decoding:
    """One way of decoding a trained variant (same weights, different attention code)."""

    label: str
    variant: Variant
    el: bool  # True: decode as el_transformer (EL encoder-decoder attention); False: stock code
    overrides: Dict[str, object] = field(default_factory=dict)  # model options, e.g. EL self-attn


def split_pairs(
    src_lines: Sequence[str], tgt_lines: Sequence[str], budget: Budget
) -> Dict[str, List[Tuple[str, str]]]:
    """Seeded train/valid/test split that keeps all questions of a source sentence together.

    SQuAD asks several questions about one sentence; splitting lines at random would put the same
    input sentence in training and test.
    """
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{len(src_lines)} source lines but {len(tgt_lines)} target lines")
    by_source: Dict[str, List[Tuple[str, str]]] = {}
    for src, tgt in zip(src_lines, tgt_lines):
        by_source.setdefault(src.strip(), []).append((src.strip(), tgt.strip()))
    sources = sorted(by_source)
    random.Random(budget.seed).shuffle(sources)
    splits: Dict[str, List[Tuple[str, str]]] = {"test": [], "valid": [], "train": []}
    wanted = {"test": budget.n_test, "valid": budget.n_valid, "train": budget.n_train}
    order = ["test", "valid", "train"]
    for src in sources:
        while order and wanted[order[0]] and len(splits[order[0]]) >= wanted[order[0]]:
            order.pop(0)
        if not order:
            break
        splits[order[0]].extend(by_source[src])
    if any(not pairs for pairs in splits.values()):
        raise ValueError(f"not enough pairs for the split sizes of {budget}")
    return splits


def prepare_data(out_dir: Path, budget: Budget, root: Path = DATA_DIR) -> Path:
    """Split the shipped pairs and binarize them with fairseq-preprocess; returns the data dir."""
    bin_dir = out_dir / "data-bin"
    for stale in (bin_dir, out_dir / "raw"):  # what an interrupted preparation left
        shutil.rmtree(stale, ignore_errors=True)
    src_lines = (root / QG_DATA / "src-test.txt").read_text(encoding="utf-8").splitlines()
    tgt_lines = (root / QG_DATA / "tgt-test.txt").read_text(encoding="utf-8").splitlines()
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, pairs in split_pairs(src_lines, tgt_lines, budget).items():
        for i, lang in enumerate((SRC, TGT)):
            text = "".join(pair[i] + "\n" for pair in pairs)
            write_text(raw / f"{split}.{lang}", text)
    run([
        sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", SRC, "--target-lang", TGT,
        "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
        "--testpref", str(raw / "test"), "--destdir", str(bin_dir), "--joined-dictionary",
        "--nwordssrc", str(budget.vocab), "--workers", "2",
    ], out_dir / "preprocess.log")  # fmt: skip
    return bin_dir


def train(variant: Variant, bin_dir: Path, out_dir: Path, budget: Budget) -> Path:
    """fairseq-train one variant; returns its last checkpoint (the same budget for all)."""
    save_dir = out_dir / "checkpoints" / variant.name
    checkpoint = save_dir / "checkpoint_last.pt"
    shutil.rmtree(save_dir, ignore_errors=True)  # never continue an interrupted training
    dims = [
        "--encoder-layers", str(budget.layers), "--decoder-layers", str(budget.layers),
        "--encoder-embed-dim", str(budget.embed_dim), "--decoder-embed-dim", str(budget.embed_dim),
        "--encoder-ffn-embed-dim", str(budget.ffn_dim),
        "--decoder-ffn-embed-dim", str(budget.ffn_dim),
        "--encoder-attention-heads", str(budget.heads),
        "--decoder-attention-heads", str(budget.heads),
    ]  # fmt: skip
    kv = [] if variant.kv_heads is None else ["--decoder-kv-heads", str(variant.kv_heads)]
    run([
        sys.executable, "-m", "fairseq_cli.train", str(bin_dir), "--user-dir", fairseq_el.USER_DIR,
        "--task", "translation", "-s", SRC, "-t", TGT, "--arch", "el_transformer", *dims, *kv,
        "--share-all-embeddings", "--dropout", "0.1", "--attention-dropout", "0.1",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "1.0",
        "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", str(budget.warmup_updates), "--max-tokens", str(budget.max_tokens),
        "--max-update", str(budget.max_update), "--seed", str(budget.seed),
        *([] if torch.cuda.is_available() else ["--cpu"]),
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--no-save-optimizer-state",
        "--log-format", "simple", "--log-interval", "50", "--num-workers", "0",
    ], out_dir / f"train-{variant.name}.log")  # fmt: skip
    return checkpoint


def run(cmd: List[str], log: Path) -> None:
    """Run ``cmd`` with its output in ``log``; on failure, raise with the log's tail."""
    with open(log, "w", encoding="utf-8") as f:
        env = dict(os.environ, OMP_NUM_THREADS="1")  # see run_study
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(True)[-30:])
        raise RuntimeError(f"{cmd[2]} failed ({log}):\n{tail}")


def train_time_and_valid_loss(log: Path) -> Tuple[Optional[float], Optional[float]]:
    """Training wall time and last validation loss, read from a fairseq-train log."""
    text = log.read_text(encoding="utf-8")
    losses = re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", text)
    done = re.findall(r"done training in ([\d.]+) seconds", text)
    return (float(done[-1]) if done else None, float(losses[-1]) if losses else None)


def load_model(
    checkpoint: Path, bin_dir: Path, decoding: Decoding
) -> Tuple[torch.nn.Module, object]:
    """The checkpoint's model as ``el_transformer`` (``decoding.el``) or stock ``transformer``.

    Both hold the same state dict; only the attention code that runs differs.
    """
    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
    cfg = state["cfg"]
    cfg.task.data = str(bin_dir)
    arch = cfg.model.arch if decoding.el else stock_arch(cfg.model.arch)
    cfg.model.arch = cfg.model._name = arch
    for name, value in decoding.overrides.items():
        setattr(cfg.model, name, value)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model.load_state_dict(state["model"], strict=True)
    return model.eval(), task


def decode(
    model: torch.nn.Module, task, budget: Budget, measure_state: bool
) -> Tuple[Dict[int, str], float, Optional[StateMeter]]:
    """Beam-search the test split; returns hypotheses by id, decoding seconds, state meter.

    The first batch is decoded once more before timing starts (warm-up); timing covers
    ``inference_step`` only, and is taken without the state meter, which slows decoding.
    """
    task.load_dataset("test")
    generator = task.build_generator(
        [model], GenerationConfig(beam=budget.beam, max_len_a=0, max_len_b=40)
    )
    meter = StateMeter(generator.model) if measure_state else None
    itr = task.get_batch_iterator(
        dataset=task.dataset("test"), max_sentences=budget.batch_size, seed=budget.seed,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
    ).next_epoch_itr(shuffle=False)  # fmt: skip
    hyps: Dict[int, str] = {}
    seconds = 0.0
    with torch.no_grad():
        for i, sample in enumerate(itr):
            if i == 0 and not measure_state:
                task.inference_step(generator, [model], sample)  # warm-up
            start = time.perf_counter()
            out = task.inference_step(generator, [model], sample)
            seconds += time.perf_counter() - start
            for sid, hypos in zip(sample["id"].tolist(), out):
                hyps[sid] = task.target_dictionary.string(hypos[0]["tokens"])
    return hyps, seconds, meter


def score(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU on the data's own tokenization and mean ROUGE-L F1 (no stemming), x100."""
    rouge_l = scoring.rouge(hyps, refs, types=("rougeL",), stem=False)["rougeL"]
    return {"bleu": scoring.bleu(hyps, refs, tokenize="none"), "rougeL": rouge_l}


KV_LAYOUTS = (Variant("mha", None), Variant("mqa", 1), Variant("gqa2", 2))


def decodings(variants: Iterable[Variant]) -> List[Decoding]:
    """Stock attention code for the stock model, then EL on it; grouped models as el_transformer.

    Grouped models exist only as ``el_transformer`` (stock fairseq has no ``--decoder-kv-heads``).
    """
    out = []
    for variant in variants:
        if variant.kv_heads is None:
            out.append(Decoding(f"{variant.name} (stock fairseq)", variant, el=False))
            out.append(Decoding(f"{variant.name} + EL", variant, el=True))
            out.append(Decoding(f"{variant.name} + EL, EL self-attn", variant, el=True,
                                overrides={"el_self_attention": True}))  # fmt: skip
        else:
            out.append(Decoding(f"{variant.name} (kv heads {variant.kv_heads})", variant, el=True))
    return out


def run_study(
    out_dir: Path,
    budget: Budget,
    variants: Sequence[Variant],
    root: Path = DATA_DIR,
    overwrite: bool = False,
) -> List[Dict]:
    """Train every variant, decode and score; ``results.jsonl`` is rewritten after each row.

    ``out_dir`` holds one budget's study (its manifest): data, trainings and rows already done
    are reused, an interrupted step is redone from scratch, another budget is refused unless
    ``overwrite``.
    """
    torch.set_num_threads(1)  # 2 shared cores: one thread gives far steadier timings
    run = RunDir(out_dir, "gqa-study", asdict(budget), {"data": root / QG_DATA}, overwrite,
                 option="--out-dir")  # fmt: skip
    bin_dir = out_dir / "data-bin"
    if not run.is_done("data"):
        prepare_data(out_dir, budget, root)
        run.done("data")
    refs = (out_dir / "raw" / "test.tgt").read_text(encoding="utf-8").splitlines()
    rows: List[Dict] = []
    first_hyps: Dict[str, List[str]] = {}
    for decoding in decodings(variants):
        step = f"row/{decoding.label}"
        if not run.is_done(step):
            run.done(step, decode_row(run, decoding, bin_dir, budget, refs))
        row, texts = run.record(step)["row"], run.record(step)["texts"]
        same = first_hyps.setdefault(decoding.variant.name, texts)
        row["same_tokens_as_first"] = sum(a == b for a, b in zip(texts, same)) / len(texts)
        rows.append(row)
        write_text(
            out_dir / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        )
        print(f"done: {decoding.label}: BLEU {row['bleu']:.2f}", flush=True)
    run.finish(["results.jsonl"])
    return rows


def decode_row(
    run: RunDir, decoding: Decoding, bin_dir: Path, budget: Budget, refs: List[str]
) -> Dict:
    """Train the variant (once per study), decode, meter and score: the row and its texts."""
    out_dir = run.path
    trained = f"train/{decoding.variant.name}"
    if not run.is_done(trained):
        run.done(trained, str(train(decoding.variant, bin_dir, out_dir, budget)))
    checkpoint = Path(run.record(trained))
    train_s, valid_loss = train_time_and_valid_loss(out_dir / f"train-{decoding.variant.name}.log")
    model, task = load_model(checkpoint, bin_dir, decoding)
    hyps, seconds, _ = decode(model, task, budget, measure_state=False)
    _, _, meter = decode(model, task, budget, measure_state=True)
    assert meter is not None
    texts = [hyps[i] for i in range(len(refs))]
    row = {
        "model": decoding.label, "kv_heads": decoding.variant.kv_heads or budget.heads,
        "heads": budget.heads, "el": decoding.el, "updates": budget.max_update,
        "train_s": train_s, "valid_loss": valid_loss, **score(texts, refs),
        "sent_per_s": len(texts) / seconds, "decode_s": seconds,
        "tok_per_s": sum(len(t.split()) + 1 for t in texts) / seconds,  # + eos
        "cache_bytes_per_token": sum(meter.per_token) / len(meter.per_token),
        "peak_state_mib": meter.peak["total"] / 2**20,
        "budget": asdict(budget),
    }  # fmt: skip
    return {"row": row, "texts": texts}


def format_table(rows: Sequence[Dict]) -> str:
    """The rows as a Markdown table."""
    headers = (
        "model | kv heads / heads | EL | valid loss | BLEU | ROUGE-L | sent/s | tok/s "
        "| cache B/token | peak state MiB | same tokens"
    ).split(" | ")
    body = []
    for r in rows:
        loss = "n/a" if r["valid_loss"] is None else f"{r['valid_loss']:.3f}"
        body.append(
            [
                r["model"],
                f"{r['kv_heads']}/{r['heads']}",
                "yes" if r["el"] else "no",
                loss,
                f"{r['bleu']:.2f}",
                f"{r['rougeL']:.2f}",
                f"{r['sent_per_s']:.1f}",
                f"{r['tok_per_s']:.0f}",
                f"{r['cache_bytes_per_token']:.0f}",
                f"{r['peak_state_mib']:.2f}",
                f"{100 * r['same_tokens_as_first']:.0f}%",
            ]
        )
    return markdown_table(headers, body)
