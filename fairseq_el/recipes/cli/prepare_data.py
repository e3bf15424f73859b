"""``fairseq-el-prepare``: raw XSum / CNN/DM / SQuAD QG text to fairseq binaries."""

import argparse
from pathlib import Path
from typing import List, Optional

from fairseq_el.recipes import prepare, sources
from fairseq_el.recipes.config import load_config
from fairseq_el.recipes.paths import BPE_DIR

FORMATS = {
    "lines": "parallel line files: --source F --target F (XSum, CNN/DM, Du et al. QG)",
    "xsum-jsonl": 'JSON lines {"document", "summary"}: --input F',
    "stories": "CNN/DM .story files or directories of them: --input P [P ...]",
    "squad-json": "SQuAD JSON, answer-aware QG 'answer [SEP] paragraph': --input F",
}


def read_pairs(args: argparse.Namespace) -> List[sources.Pair]:
    if args.format == "lines":
        if not (args.source and args.target):
            raise SystemExit("--format lines needs --source and --target")
        return sources.read_line_pairs(args.source, args.target)
    if not args.input:
        raise SystemExit(f"--format {args.format} needs --input")
    if args.format == "stories":
        return sources.read_stories(args.input)
    if len(args.input) != 1:
        raise SystemExit(f"--format {args.format} takes one --input file")
    if args.format == "xsum-jsonl":
        return sources.read_xsum_jsonl(args.input[0])
    return sources.read_squad_qg(args.input[0])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="\n".join(f"{k}: {v}" for k, v in FORMATS.items()),
    )
    p.add_argument("--source", type=Path)
    p.add_argument("--target", type=Path)
    p.add_argument("--input", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output (fairseq data) directory")
    p.add_argument("--config", help="task config (name or path) giving the position limits")
    p.add_argument(
        "--splits",
        default="test",
        help="split names and sizes in order, e.g. 'test' or 'test:10,train:rest'",
    )
    p.add_argument("--max-source-positions", type=int)
    p.add_argument("--max-target-positions", type=int)
    p.add_argument("--bpe-dir", type=Path, default=BPE_DIR, help="encoder.json and vocab.bpe")
    p.add_argument("--dict", type=Path, default=BPE_DIR / "dict.txt", help="fairseq dict.txt")
    p.add_argument("--workers", type=int, default=1)
    return p  # fmt: skip


def cli_main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    limits = {"source": 1024, "target": 1024}
    if args.config:
        config = load_config(args.config)
        limits = {"source": config.max_source_positions, "target": config.max_target_positions}
    limits["source"] = args.max_source_positions or limits["source"]
    limits["target"] = args.max_target_positions or limits["target"]
    pairs = read_pairs(args)
    print(f"read {len(pairs)} {args.format} pairs; position limits {limits}", flush=True)
    prepare.prepare(
        prepare.split_pairs(pairs, args.splits),
        args.out,
        limits["source"],
        limits["target"],
        args.bpe_dir,
        args.dict,
        args.workers,
    )


if __name__ == "__main__":
    cli_main()
