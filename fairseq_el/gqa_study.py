"""Quality and speed of stock, multi-query and grouped-query Transformers, and EL, on SQuAD QG.

The study behind ``scripts/gqa_study.py``. It trains small ``el_transformer`` models that differ
only in ``--decoder-kv-heads`` for the same number of updates on the Du et al. (2017) SQuAD
question-generation pairs shipped in ``data/squad_qg_du2017``, then decodes the test split with
beam search and reports BLEU, ROUGE-L, decoding speed and decoding-state bytes per token. The stock
model is also decoded with EL attention, which gives the same tokens by construction: what EL and
fewer key/value heads each save, and what the latter costs in quality, side by side.

Every result is appended to ``results.jsonl`` in the output directory as soon as it exists.
"""

import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import fairseq_el

REPO = Path(fairseq_el.USER_DIR).parent
QG_DATA = REPO / "data" / "squad_qg_du2017"
SRC, TGT = "src", "tgt"


@dataclass(frozen=True)
class Budget:
    """Data sizes, model size and training budget: the same for every trained variant."""

    n_valid: int = 500
    n_test: int = 500
    n_train: int = 0  # 0: every pair not in valid/test
    max_update: int = 1500
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
        return Budget(n_valid=50, n_test=50, n_train=1000, max_update=30, embed_dim=32,
                      ffn_dim=64, layers=1, batch_size=16)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One trained model: ``kv_heads`` None is stock multi-head attention."""

    name: str
    kv_heads: Optional[int]


@dataclass(frozen=True)
class Decoding:
    """One way of decoding a trained variant: the model class is chosen by ``arch``."""

    label: str
    variant: Variant
    el: bool  # True: decode as el_transformer (EL encoder-decoder attention); False: stock code
    overrides: Dict[str, object] = field(default_factory=dict)


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


def prepare_data(out_dir: Path, budget: Budget) -> Path:
    """Split the shipped pairs and binarize them with fairseq-preprocess; returns the data dir."""
    bin_dir = out_dir / "data-bin"
    if (bin_dir / "dict.src.txt").exists():
        return bin_dir
    src_lines = (QG_DATA / "src-test.txt").read_text(encoding="utf-8").splitlines()
    tgt_lines = (QG_DATA / "tgt-test.txt").read_text(encoding="utf-8").splitlines()
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, pairs in split_pairs(src_lines, tgt_lines, budget).items():
        for i, lang in enumerate((SRC, TGT)):
            text = "".join(pair[i] + "\n" for pair in pairs)
            (raw / f"{split}.{lang}").write_text(text, encoding="utf-8")
    run([
        sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", SRC, "--target-lang", TGT,
        "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
        "--testpref", str(raw / "test"), "--destdir", str(bin_dir), "--joined-dictionary",
        "--thresholdsrc", "2", "--workers", "2",
    ], out_dir / "preprocess.log")  # fmt: skip
    return bin_dir


def train(variant: Variant, bin_dir: Path, out_dir: Path, budget: Budget) -> Path:
    """fairseq-train one variant; returns its last checkpoint (the same budget for all)."""
    save_dir = out_dir / "checkpoints" / variant.name
    checkpoint = save_dir / "checkpoint_last.pt"
    if checkpoint.exists():
        return checkpoint
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
        "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates",
        str(max(1, budget.max_update // 10)), "--max-tokens", str(budget.max_tokens),
        "--max-update", str(budget.max_update), "--seed", str(budget.seed), "--cpu",
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--no-save-optimizer-state",
        "--log-format", "simple", "--log-interval", "50", "--num-workers", "0",
    ], out_dir / f"train-{variant.name}.log")  # fmt: skip
    return checkpoint


def run(cmd: List[str], log: Path) -> None:
    """Run ``cmd`` with its output in ``log``; on failure, raise with the log's tail."""
    with open(log, "w", encoding="utf-8") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(True)[-30:])
        raise RuntimeError(f"{cmd[2]} failed ({log}):\n{tail}")
