"""The command line: fairseq-generate's own parser, plus this tool's options.

Every fairseq-generate argument is parsed by fairseq (``options.get_generation_parser``), so
search options, tasks, ``--user-dir`` and model overrides mean what they mean there. Errors are
:class:`fairseq_el.usage.UsageError`: one line naming the option, exit status 2.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq import options
from fairseq.dataclass.configs import GenerationConfig

from fairseq_el.files import file_sha256
from fairseq_el.models.options import COMPILE_MODES
from fairseq_el.paths import BPE_DIR
from fairseq_el.usage import UsageError
from fairseq_el.version import __version__

PROG = "fairseq-el-generate"
BATCH_OPTIONS = ("--batch-size", "--max-sentences")
SAMPLING_SEEDS = ("per-example", "global")
NO_BPE = "none"  # --bpe none: no BPE on --input, as fairseq-interactive without --bpe
# What decides the outputs, beside the generation options: a resumed run must agree on these.
FINGERPRINT = (
    "data",
    "gen_subset",
    "source_lang",
    "target_lang",
    "task",
    "path",
    "model_overrides",
    "checkpoint_suffix",
    "stock",
    "fp16",
    "bf16",
    "seed",
    "truncate_source",
    "max_source_positions",
    "max_target_positions",
    "skip_invalid_size_inputs_valid_test",
    "sampling_seed",
    "skip_empty",
    "bpe",
    "tokenizer",
    "post_process",
    "gpt2_encoder_json",
    "gpt2_vocab_bpe",
    "input_format",
    "text_field",
    "id_field",
    "hf_model",
)
NOT_SUPPORTED = {
    "lm_path": "--lm-path (shallow fusion): use fairseq-generate",
    "constraints": "--constraints: use fairseq-interactive",
    "print_alignment": "--print-alignment: use fairseq-generate",
    "retain_iter_history": "--retain-iter-history: use fairseq-generate",
    "replace_unk": "--replace-unk: use fairseq-generate",
}


def _fail(message: str) -> None:
    raise UsageError(message)


def get_parser() -> argparse.ArgumentParser:
    parser = options.get_generation_parser()
    parser.prog = PROG
    parser.error = _fail  # one line, not fairseq's page-long usage
    # as fairseq-generate's cli_main, for tasks that read model args
    parser.add_argument(
        "--arch",
        "-a",
        metavar="ARCH",
        default="wav2vec2",
        help="model architecture, for tasks that read model args",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    group = parser.add_argument_group("fairseq-el-generate")
    group.add_argument(
        "--output",
        required=True,
        metavar="OUT.jsonl",
        help="one JSON record per example, in input order; written when all "
        "examples are done (parts in OUT.jsonl.parts/ until then)",
    )
    group.add_argument(
        "--input",
        dest="raw_input",
        metavar="FILE",
        help="raw sources, encoded as fairseq-interactive does (GPT-2 BPE from the shipped "
        "files unless --bpe is given): one per line, or JSON lines (*.jsonl, OpenAI Batch "
        "lines included); '-' reads standard input; DATA is then the folder of the dictionaries",
    )
    group.add_argument(
        "--input-format",
        choices=("auto", "lines", "jsonl"),
        default="auto",  # jsonl for *.jsonl / *.ndjson or a first line that is a JSON object
        help="how --input is read (default: auto)",
    )
    group.add_argument(
        "--text-field",
        metavar="NAME",
        help="JSON lines: the source field, a.b for nested ones (default: the first of "
        "document, article, text, source; body.prompt or body.messages for OpenAI Batch lines)",
    )
    group.add_argument(
        "--id-field",
        metavar="NAME",
        help="JSON lines: the id field, echoed as user_id in every record (default: the first "
        "of id, custom_id; 'none': no ids)",
    )
    group.add_argument(
        "--compile",
        dest="compile_mode",
        choices=COMPILE_MODES,
        default="none",
        help="the EL decoder's incremental step through torch.compile (the model option "
        "el_compile, docs/compile.md): same tokens; compile time reported apart (default: none)",
    )
    group.add_argument(
        "--hf-model",
        metavar="DIR_OR_HUB_ID",
        help="a Hugging Face BART or GPT-2 (save_pretrained folder, or hub id from the local "
        "cache, never downloaded) instead of DATA and --path: converted once into "
        "$FAIRSEQ_EL_CACHE (~/.cache/fairseq_el), then generated with EL",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="keep the examples in OUT.jsonl.parts and generate the rest",
    )
    group.add_argument(
        "--stock",
        action="store_true",
        help="stock fairseq attention (default: EL, by the architecture override)",
    )
    group.add_argument(
        "--skip-empty",
        action="store_true",
        help="skip empty --input lines (listed in the summary) instead of refusing them",
    )
    group.add_argument(
        "--sampling-seed",
        choices=SAMPLING_SEEDS,
        default="per-example",
        help="--sampling: per-example reseeds torch from (--seed, id) and decodes "
        "each example alone (independent of sharding, batching, resume); "
        "global seeds once and batches as fairseq-generate does (its exact "
        "samples; one process, no --resume)",
    )
    group.add_argument(
        "--max-memory",
        type=float,
        metavar="GB",
        help="budget for --batch-size auto (default: 90%% of the device's free "
        "memory, shared by the ranks of a host on CPU)",
    )
    group.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="N",
        help="after the run, generate the first N examples again with stock fairseq and "
        "compare (summary: identical N/N, largest score difference); exit status 3 on a "
        "difference (default: 0, off: it loads the model a second time)",
    )
    group.add_argument(
        "--verify-sample",
        action="store_true",
        help="--verify N examples drawn with --seed instead of the first N",
    )
    group.add_argument(
        "--references",
        metavar="FILE",
        help="one reference per example, in input order: score the best "
        "hypotheses (--metric) into OUT.jsonl.summary.json",
    )
    group.add_argument(
        "--metric",
        choices=("rouge", "bleu"),
        default="rouge",
        help="with --references: ROUGE (rouge-score) or sacreBLEU",
    )
    return parser


def split_auto(argv: Sequence[str]) -> Tuple[List[str], bool]:
    """Remove ``--batch-size auto`` (fairseq's option takes integers); whether it was there."""
    out: List[str] = []
    auto = False
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in BATCH_OPTIONS and i + 1 < len(argv) and argv[i + 1] == "auto":
            auto, skip = True, True
        elif any(arg == f"{name}=auto" for name in BATCH_OPTIONS):
            auto = True
        else:
            out.append(arg)
    return out, auto


def _value(argv: Sequence[str], name: str) -> Optional[str]:
    """The value given to option ``name`` (last one wins), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg[len(name) + 1 :]
    return found


def split_bpe_none(argv: Sequence[str]) -> Tuple[List[str], bool]:
    """Remove ``--bpe none`` (fairseq has no such choice); whether it was there."""
    out: List[str] = []
    none = skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--bpe" and i + 1 < len(argv) and argv[i + 1] == NO_BPE:
            none = skip = True
        elif arg == f"--bpe={NO_BPE}":
            none = True
        else:
            out.append(arg)
    return out, none


def with_shipped_bpe(argv: List[str], no_bpe: bool = False) -> List[str]:
    """``--input`` defaults to ``--bpe gpt2`` (not with ``--bpe none``); GPT-2 BPE reads the
    shipped files unless told otherwise (fairseq would download the very same files)."""
    given = any(a == "--input" or a.startswith("--input=") for a in argv)
    if given and not no_bpe and _value(argv, "--bpe") is None:
        argv = [*argv, "--bpe", "gpt2"]
    if _value(argv, "--bpe") == "gpt2":
        if _value(argv, "--gpt2-encoder-json") is None:
            argv = [*argv, "--gpt2-encoder-json", str(BPE_DIR / "encoder.json")]
        if _value(argv, "--gpt2-vocab-bpe") is None:
            argv = [*argv, "--gpt2-vocab-bpe", str(BPE_DIR / "vocab.bpe")]
    return argv


def parse(argv: Optional[Sequence[str]] = None, distributed: bool = False) -> argparse.Namespace:
    """fairseq's parse (task and architecture arguments included), then our checks; ``--input -``
    is read from standard input into a temporary file (one process only)."""
    argv, auto = split_auto(sys.argv[1:] if argv is None else list(argv))
    argv = with_hf_model(argv)
    argv, no_bpe = split_bpe_none(argv)
    implicit = _value(argv, "--bpe") is None and not no_bpe
    argv = with_shipped_bpe(argv, no_bpe)
    args = options.parse_args_and_arch(get_parser(), argv)
    args.batch_auto = auto
    # --input without --bpe: GPT-2 BPE, checked against the dictionary (Generation)
    args.bpe_implicit = implicit and bool(args.raw_input)
    args.input_name = args.raw_input
    if args.raw_input == "-":
        if distributed:
            raise UsageError(
                "--input -: standard input reaches one process; with several "
                "ranks give a file on a filesystem they share"
            )
        args.raw_input = spool_stdin()
    check(args)
    return args


def with_hf_model(argv: List[str]) -> List[str]:
    """``--hf-model``: DATA and ``--path`` become the converted model's cache folder and
    checkpoint (converted later, by :func:`fairseq_el.convert.hf_hub.ensure_converted`); BART
    generates as fairseq's translation task (``-s source -t target``), GPT-2 as a language
    model. Resolved here, so a model missing from the cache is refused before anything."""
    spec = _value(argv, "--hf-model")
    if spec is None:
        return argv
    if _value(argv, "--path") is not None:
        raise UsageError(
            "--hf-model and --path: give one of them (--hf-model is converted into "
            "the checkpoint it generates with)"
        )
    from fairseq_el.convert.hf_common import hf_model_type
    from fairseq_el.convert.hf_hub import converted_dir, resolve

    model = resolve(spec)
    target = converted_dir(model)
    extra = ["--path", str(target / "model.pt")]
    if hf_model_type(str(model.folder)) == "bart":
        if _value(argv, "-s") is None and _value(argv, "--source-lang") is None:
            extra += ["-s", "source", "-t", "target"]
    elif _value(argv, "--task") is None:
        extra += ["--task", "language_modeling"]
    return [str(target), *argv, *extra]


def spool_stdin() -> str:
    """Standard input copied to a temporary file (removed at exit): read, hashed, sharded like
    a file."""
    fd, path = tempfile.mkstemp(prefix="fairseq-el-generate-stdin-", suffix=".txt")
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    with os.fdopen(fd, "wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f)
    return path


def _require_file(path: Optional[str], option: str) -> None:
    if path is not None and not Path(path).is_file():
        raise UsageError(f"{option} {path}: no such file")


def check(args: argparse.Namespace) -> None:
    """Everything that can be refused before loading anything."""
    for name, message in NOT_SUPPORTED.items():
        if getattr(args, name, None):
            raise UsageError(f"not supported: {message}")
    if not args.path:
        raise UsageError("--path is required (the checkpoint to generate with)")
    if not args.hf_model:  # else both are made by the conversion
        for path in args.path.split(":"):
            _require_file(path, "--path")
        if not Path(args.data).is_dir():
            raise UsageError(f"DATA {args.data}: no such folder")
    _require_file(args.raw_input, "--input")
    jsonl_only = [
        f"--{n.replace('_', '-')}" for n in ("text_field", "id_field") if getattr(args, n)
    ]
    if jsonl_only and args.input_format == "lines":
        raise UsageError(f"{jsonl_only[0]} reads JSON lines, not --input-format lines")
    if jsonl_only and not args.raw_input:
        raise UsageError(f"{jsonl_only[0]} reads --input JSON lines; binarized data has no fields")
    _require_file(args.references, "--references")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise UsageError(f"--output {out}: folder {out.parent} does not exist")
    if args.nbest > args.beam:
        raise UsageError(
            f"--nbest {args.nbest} is more than --beam {args.beam}: fairseq keeps --beam hypotheses"
        )
    if args.raw_input and args.prefix_size > 0:
        raise UsageError("--prefix-size reads the targets of binarized data; --input has none")
    if args.batch_auto and args.max_tokens is not None:
        raise UsageError("--batch-size auto and --max-tokens: give one of them")
    if args.max_memory is not None and args.max_memory <= 0:
        raise UsageError(f"--max-memory {args.max_memory}: must be > 0 GB")
    if args.verify < 0:
        raise UsageError(f"--verify {args.verify}: must be >= 0")
    if args.verify and args.stock:
        raise UsageError("--verify compares EL with stock fairseq; this run is --stock")
    if args.verify and args.sampling and args.sampling_seed == "global":
        raise UsageError(
            "--verify with --sampling-seed global: its draws depend on the whole "
            "batch, so N examples alone cannot be drawn again"
        )
    if args.fp16 and args.bf16:
        raise UsageError("--fp16 and --bf16: give one of them")
    global_sampling = args.sampling and args.sampling_seed == "global"
    if global_sampling and (args.resume or args.batch_auto):
        what = "--resume" if args.resume else "--batch-size auto"
        raise UsageError(
            f"--sampling-seed global follows fairseq-generate's batches and random stream; "
            f"{what} changes them (use --sampling-seed per-example)"
        )
    if args.batch_size is None and args.max_tokens is None and not args.batch_auto:
        args.max_tokens = 12000  # fairseq-generate's default


def fingerprint(args: argparse.Namespace) -> Dict[str, Any]:
    """The options that decide the outputs (generation options included), and the input's hash."""
    names = [f.name for f in fields(GenerationConfig)] + list(FINGERPRINT)
    found = {name: getattr(args, name, None) for name in names}
    found["data"] = str(Path(args.data).resolve())
    found["path"] = [str(Path(p).resolve()) for p in args.path.split(":")]
    if args.raw_input:
        found["input"] = f"sha256:{file_sha256(args.raw_input)}"
    return found
