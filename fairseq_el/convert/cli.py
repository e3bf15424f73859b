"""``fairseq-el-convert-hf``: a Hugging Face ``save_pretrained`` folder -> fairseq checkpoint.

Writes ``model.pt`` (loadable by ``fairseq.checkpoint_utils.load_model_ensemble_and_task``,
``fairseq-generate`` and ``fairseq-interactive``) and the dictionaries next to it.
"""

import argparse
import sys
from typing import Callable, Dict, List, Optional, Tuple

from fairseq_el.convert.common import (
    ConversionError,
    Converted,
    hf_model_type,
    import_transformers,
    read_dict,
    refuse,
)
from fairseq_el.convert.hf_bart import convert_bart
from fairseq_el.convert.hf_gpt2 import convert_gpt2

# model_type in config.json -> (transformers class, converter)
CONVERTERS: Dict[str, Tuple[str, Callable[..., Converted]]] = {
    "gpt2": ("GPT2LMHeadModel", convert_gpt2),
    "bart": ("BartForConditionalGeneration", convert_bart),
}


def convert_dir(hf_dir: str, dict_path: Optional[str] = None) -> Converted:
    """Load the model saved in ``hf_dir`` (no download) and convert it."""
    model_type = hf_model_type(hf_dir)
    if model_type not in CONVERTERS:
        raise refuse("model_type", model_type, f"supported: {sorted(CONVERTERS)}")
    class_name, convert = CONVERTERS[model_type]
    transformers = import_transformers()
    hf_model = getattr(transformers, class_name).from_pretrained(hf_dir, local_files_only=True)
    dictionary = read_dict(dict_path) if dict_path else None
    return convert(hf_model.eval(), dictionary)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-el-convert-hf",
        description="Convert a Hugging Face GPT-2 or BART folder to a fairseq checkpoint.",
    )
    parser.add_argument("--hf-dir", required=True, help="folder written by save_pretrained")
    parser.add_argument("--out-dir", required=True, help="where model.pt and dict.txt go")
    parser.add_argument(
        "--dict",
        help="fairseq GPT-2 dict.txt (symbols are GPT-2 ids); required for BART, optional for "
        "GPT-2 (default: GPT-2 ids in id order)",
    )
    return parser


def cli_main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        converted = convert_dir(args.hf_dir, args.dict)
    except ConversionError as err:
        sys.exit(f"fairseq-el-convert-hf: {err}")
    files = converted.save(args.out_dir)
    for line in converted.summary + [f"wrote {path}" for path in files]:
        print(line)


if __name__ == "__main__":
    cli_main()
