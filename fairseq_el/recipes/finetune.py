"""Fine-tuning BART on a task with fairseq-train: the config's published settings, or a toy run.

The published settings (``finetune`` in ``configs/<task>.yaml``) need bart.large and GPUs. The toy
run keeps the recipe (task, criterion, optimizer, scheduler, shared embeddings) but trains a tiny
``bart_base`` from scratch on CPU for a few updates, so the whole pipeline runs anywhere.
"""

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import fairseq_el
from fairseq_el.recipes.config import TaskConfig, option_args
from fairseq_el.recipes.runner import thread_env


def toy_options(
    max_update: int, max_tokens: int = 2048, dim: int = 64, layers: int = 2
) -> Dict[str, Any]:
    """Overrides that turn the bart.large recipe into a small from-scratch run of ``max_update``
    (on CPU where torch sees no CUDA device)."""
    return {
        "restore-file": None,  # no bart.large here: random initialisation
        "reset-optimizer": False,
        "reset-dataloader": False,
        "reset-meters": False,
        "fp16": False,
        "find-unused-parameters": False,
        "cpu": not torch.cuda.is_available(),
        "arch": "bart_base",
        "encoder-layers": layers,
        "decoder-layers": layers,
        "encoder-embed-dim": dim,
        "decoder-embed-dim": dim,
        "encoder-ffn-embed-dim": 2 * dim,
        "decoder-ffn-embed-dim": 2 * dim,
        "encoder-attention-heads": 4,
        "decoder-attention-heads": 4,
        "lr": 1e-3,
        "warmup-updates": max(1, max_update // 10),
        "total-num-update": max_update,
        "max-update": max_update,
        "max-tokens": max_tokens,
        "update-freq": 1,
        "seed": 1,
        "no-epoch-checkpoints": True,
        "log-interval": 10,
        "disable-validation": True,
    }


def finetune_argv(
    config: TaskConfig,
    data_dir: Path,
    save_dir: Path,
    toy_updates: Optional[int] = None,
    toy_max_tokens: int = 2048,
    overrides: Optional[Dict[str, Any]] = None,
) -> List[str]:
    """fairseq-train arguments: ``config.finetune``, then toy overrides, then ``overrides``."""
    if not config.finetune:
        raise ValueError(f"{config.path}: no 'finetune' section")
    options = dict(config.finetune)
    if toy_updates is not None:
        options.update(toy_options(toy_updates, toy_max_tokens))
    options.update(overrides or {})
    options.update({"save-dir": str(save_dir), "user-dir": fairseq_el.USER_DIR})
    return [str(data_dir), *option_args(options)]


def train(argv: List[str], threads: Optional[int] = None) -> Path:
    """Run fairseq-train in a child process; return the last checkpoint it wrote."""
    print("fairseq-train " + shlex.join(argv), flush=True)
    command = [sys.executable, "-m", "fairseq_cli.train", *argv]
    subprocess.run(command, check=True, env=thread_env(threads))
    save_dir = Path(argv[argv.index("--save-dir") + 1])
    checkpoint = save_dir / "checkpoint_last.pt"
    if not checkpoint.is_file():
        raise RuntimeError(f"fairseq-train wrote no {checkpoint}")
    return checkpoint
