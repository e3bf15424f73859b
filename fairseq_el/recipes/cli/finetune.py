"""``fairseq-el-finetune``: fine-tune BART on a task with fairseq-train (published or toy scale)."""

import argparse
import shlex
from pathlib import Path
from typing import List, Optional

import yaml

from fairseq_el.recipes import finetune
from fairseq_el.recipes.config import load_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="configs/<task>.yaml, or just the task name")
    p.add_argument("--data", type=Path, required=True, help="fairseq data with a train split")
    p.add_argument("--save-dir", type=Path, required=True)
    p.add_argument("--restore-file", help="the pre-trained bart.large model.pt")
    p.add_argument(
        "--toy",
        type=int,
        metavar="UPDATES",
        help="tiny bart_base from scratch on CPU for UPDATES updates",
    )
    p.add_argument("--toy-max-tokens", type=int, default=2048)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="override a fairseq-train option (YAML value), e.g. --set lr=1e-4",
    )
    p.add_argument("--threads", type=int)
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    return p  # fmt: skip


def cli_main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects OPTION=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    if args.restore_file:
        overrides["restore-file"] = args.restore_file
    config = load_config(args.config)
    argv_ = finetune.finetune_argv(
        config, args.data, args.save_dir, args.toy, args.toy_max_tokens, overrides
    )
    if args.dry_run:
        print("fairseq-train " + shlex.join(argv_))
        return
    print(f"checkpoint: {finetune.train(argv_, args.threads)}")


if __name__ == "__main__":
    cli_main()
