"""Console scripts of the converters.

fairseq-el-convert checkpoint_best.pt checkpoint_el.pt            # stock -> EL, verified
fairseq-el-convert checkpoint_el.pt checkpoint_stock.pt --to stock
fairseq-el-convert-hf --hf-dir gpt2 --out-dir gpt2-fs             # Hugging Face -> fairseq
fairseq-el-convert-hf --hf-model facebook/bart-large-cnn --out-dir cnn-fs --dict dict.txt

``fairseq-el-convert-hf`` writes ``model.pt`` (loadable by
``fairseq.checkpoint_utils.load_model_ensemble_and_task``, ``fairseq-generate`` and
``fairseq-interactive``) and the dictionaries next to it.
"""

import argparse
import logging
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from fairseq_el.convert.checkpoint import ConversionError
from fairseq_el.convert.hf_bart import convert_bart
from fairseq_el.convert.hf_common import (
    Converted,
    hf_model_type,
    import_transformers,
    read_dict,
    refuse,
)
from fairseq_el.convert.hf_gpt2 import convert_gpt2
from fairseq_el.convert.hf_hub import require_weights, resolve
from fairseq_el.files import same_file
from fairseq_el.usage import (
    Parser,
    UsageError,
    at_least,
    entry_point,
    input_dir,
    input_file,
    output_dir,
    output_path,
)

# model_type in config.json -> (transformers class, converter)
CONVERTERS: Dict[str, Tuple[str, Callable[..., Converted]]] = {
    "gpt2": ("GPT2LMHeadModel", convert_gpt2),
    "bart": ("BartForConditionalGeneration", convert_bart),
}


def convert_dir(
    hf_dir: str, dict_path: Optional[str] = None, option: str = "--hf-dir"
) -> Converted:
    """Load the model saved in ``hf_dir`` (no download) and convert it."""
    model_type = hf_model_type(hf_dir)
    if model_type not in CONVERTERS:
        raise refuse("model_type", model_type, f"supported: {sorted(CONVERTERS)}")
    require_weights(Path(hf_dir), option)
    class_name, convert = CONVERTERS[model_type]
    transformers = import_transformers()
    hf_model = getattr(transformers, class_name).from_pretrained(hf_dir, local_files_only=True)
    dictionary = read_dict(dict_path) if dict_path else None
    return convert(hf_model.eval(), dictionary)


def convert_hf_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fairseq-el-convert-hf",
        description="Convert a Hugging Face GPT-2 or BART folder to a fairseq checkpoint.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf-dir", help="folder written by save_pretrained")
    source.add_argument(
        "--hf-model",
        metavar="DIR_OR_HUB_ID",
        help="a save_pretrained folder, or a hub id (org/name[@revision]) from the local "
        "Hugging Face cache (HF_HUB_CACHE, HF_HOME; never downloaded)",
    )
    parser.add_argument("--out-dir", required=True, help="where model.pt and dict.txt go")
    parser.add_argument(
        "--dict",
        help="fairseq GPT-2 dict.txt (symbols are GPT-2 ids); required for BART, optional for "
        "GPT-2 (default: GPT-2 ids in id order)",
    )
    return parser


@entry_point("fairseq-el-convert-hf")
def convert_hf_main(argv: Optional[List[str]] = None) -> None:
    args = convert_hf_parser().parse_args(argv)
    if args.hf_model:
        folder = str(resolve(args.hf_model).folder)
    else:
        folder = str(input_dir("--hf-dir", args.hf_dir))
    input_file("--dict", args.dict)
    output_dir("--out-dir", args.out_dir)
    converted = convert_dir(folder, args.dict, "--hf-model" if args.hf_model else "--hf-dir")
    files = converted.save(args.out_dir)
    for line in converted.summary + [f"wrote {path}" for path in files]:
        print(line)


def named_tensors(error: Optional[BaseException]) -> Optional[str]:
    """torch's ``load_state_dict`` error as one line naming the tensors (unexpected, missing,
    of another shape), or None for other errors."""
    if not isinstance(error, RuntimeError) or "state_dict" not in str(error):
        return None
    text = str(error)
    found = []
    for header, what in (
        ("Unexpected key(s) in state_dict:", "tensors the architecture does not have"),
        ("Missing key(s) in state_dict:", "tensors missing from the checkpoint"),
    ):
        if header in text:
            names = re.findall(r'"([^"]+)"', text.split(header, 1)[1].split("\n", 1)[0])
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            found.append(f"{what}: {shown}")
    for name, rest in re.findall(r"size mismatch for ([^:]+): (.*)", text)[:3]:
        found.append(f"tensor {name}: {rest.strip()}")
    return "; ".join(found) or None


def convert_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fairseq-el-convert",
        description="Convert a stock fairseq checkpoint into an EL one, or back.",
    )
    parser.add_argument("src", help="fairseq checkpoint to read")
    parser.add_argument("dst", help="checkpoint to write (written atomically)")
    parser.add_argument(
        "--to",
        choices=["el", "stock"],
        default="el",
        help="target: EL architecture (default) or back to the stock one",
    )
    parser.add_argument(
        "--kv-heads",
        type=int,
        metavar="N",
        help="grouped-query (N > 1) or multi-query (N = 1) decoder attention by averaging the "
        "key/value heads of each group: outputs change, the model needs uptraining",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip building both models and comparing their decoders",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="allow DST to be SRC (still written through a temporary file, then renamed)",
    )
    return parser


@entry_point("fairseq-el-convert")
def convert_main(argv: Optional[List[str]] = None) -> int:
    args = convert_parser().parse_args(argv)
    input_file("SRC", args.src)
    output_path("DST", args.dst)
    at_least("--kv-heads", args.kv_heads, 1)
    if same_file(args.src, args.dst) and not args.in_place:
        raise UsageError(
            f"DST {args.dst} is SRC: converting in place replaces the only copy; write another "
            "file, or pass --in-place"
        )
    logging.basicConfig(level=logging.WARNING)
    import fairseq_el  # noqa: F401  (registers the EL architectures, allow-lists checkpoints)
    from fairseq_el.convert.checkpoint import load_checkpoint
    from fairseq_el.convert.el_checkpoint import convert_checkpoint, unsupported_option

    if args.to == "el":
        why = unsupported_option(load_checkpoint(args.src, mmap=True))
        if why:
            raise UsageError(f"SRC {args.src}: {why}")
    try:
        arch, new_arch, diff = convert_checkpoint(
            args.src, args.dst, args.to, not args.no_verify, args.kv_heads
        )
    except ConversionError as err:
        named = named_tensors(err.__cause__)
        if named is None:
            raise
        raise ConversionError(f"SRC {args.src}: {named}") from None
    if args.kv_heads is not None:
        done = f"key/value heads averaged to {args.kv_heads} per layer: uptrain before use"
    else:
        check = "not verified" if diff is None else f"verified: max log-prob diff {diff:.2e}"
        done = f"weights unchanged; {check}"
    print(f"{args.src} ({arch}) -> {args.dst} ({new_arch}); {done}")
    return 0
