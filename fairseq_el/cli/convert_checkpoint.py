"""``fairseq-el-convert``: a stock fairseq checkpoint into an EL one, or back.

fairseq-el-convert checkpoint_best.pt checkpoint_el.pt            # stock -> EL, verified
fairseq-el-convert checkpoint_el.pt checkpoint_stock.pt --to stock
"""

import argparse
import logging
import sys
from typing import List, Optional

from fairseq_el.convert.common import ConversionError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fairseq-el-convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="fairseq checkpoint to read")
    parser.add_argument("dst", help="checkpoint to write")
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
    return parser.parse_args(argv)


def cli_main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import fairseq_el  # noqa: F401  (registers the EL architectures, allow-lists checkpoints)
    from fairseq_el.convert.el_checkpoint import convert_checkpoint

    try:
        arch, new_arch, diff = convert_checkpoint(
            args.src, args.dst, args.to, not args.no_verify, args.kv_heads
        )
    except ConversionError as err:
        print(f"fairseq-el-convert: {err}", file=sys.stderr)
        return 2
    if args.kv_heads is not None:
        done = f"key/value heads averaged to {args.kv_heads} per layer: uptrain before use"
    else:
        check = "not verified" if diff is None else f"verified: max log-prob diff {diff:.2e}"
        done = f"weights unchanged; {check}"
    print(f"{args.src} ({arch}) -> {args.dst} ({new_arch}); {done}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
