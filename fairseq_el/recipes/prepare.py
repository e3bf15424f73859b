"""Text pairs to fairseq binaries: GPT-2 BPE, explicit truncation, ``fairseq-preprocess``.

Per split ``S`` the output directory gets ``S.bpe.{source,target}`` (what was binarized),
``S.raw.{source,target}`` (the untruncated text; the runner scores against ``S.raw.target``) and
fairseq's ``S.source-target.{source,target}.{bin,idx}`` plus ``dict.{source,target}.txt``.
fairseq-translation sources end in ``</s>``, so a limit of N positions keeps N - 1 BPE tokens.
"""

import dataclasses
import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from fairseq import options
from fairseq_cli import preprocess

from fairseq_el import manifest
from fairseq_el.errors import UserError
from fairseq_el.files import sha256, write_text
from fairseq_el.paths import BPE_DIR
from fairseq_el.recipes.bpe import GPT2BPE
from fairseq_el.recipes.paths import require_file
from fairseq_el.recipes.sources import Pair
from fairseq_el.usage import UsageError

SIDES = ("source", "target")
SPLITS = ("train", "valid", "test")  # the splits fairseq-preprocess binarizes


@dataclass
class SplitReport:
    """What happened to one split; ``truncated`` counts examples cut to fit the positions."""

    split: str
    examples: int
    truncated: Dict[str, int]
    longest: Dict[str, int]  # BPE tokens before truncation

    def summary(self) -> str:
        cuts = ", ".join(
            f"{self.truncated[s]} {s}s truncated (longest {self.longest[s]} BPE tokens)"
            for s in SIDES
        )
        return f"{self.split}: {self.examples} examples; {cuts}"


class DictionaryMismatchError(UserError, ValueError):
    """BPE symbols missing from the dictionary: the wrong dict.txt for GPT-2 BPE."""


def dictionary_symbols(dict_path: Path) -> set:
    """The symbols of a fairseq ``dict.txt`` (first column)."""
    lines = require_file(Path(dict_path), "fairseq dictionary").read_text(encoding="utf-8")
    return {line.split(" ", 1)[0] for line in lines.splitlines() if line}


def encode_side(
    texts: Sequence[str], bpe: GPT2BPE, max_positions: int
) -> Tuple[List[List[str]], int, int]:
    """BPE-encode texts and cut each to ``max_positions - 1`` tokens (room for ``</s>``)."""
    keep, encoded, truncated, longest = max_positions - 1, [], 0, 0
    for text in texts:
        tokens = bpe.encode(text)
        longest = max(longest, len(tokens))
        if len(tokens) > keep:
            tokens, truncated = tokens[:keep], truncated + 1
        encoded.append(tokens)
    return encoded, truncated, longest


def check_dictionary(encoded: List[List[str]], symbols: set, dict_path: Path, where: str) -> None:
    """Refuse BPE output the dictionary does not know (it would silently become ``<unk>``)."""
    for number, tokens in enumerate(encoded, start=1):
        missing = [t for t in tokens if t not in symbols]
        if missing:
            raise DictionaryMismatchError(
                f"{where} line {number}: BPE symbols {missing[:5]} are not in {dict_path}; "
                "use the GPT-2/BART dict.txt that matches encoder.json"
            )


def write_split(
    out_dir: Path,
    split: str,
    pairs: Sequence[Pair],
    bpe: GPT2BPE,
    symbols: set,
    dict_path: Path,
    max_positions: Dict[str, int],
) -> SplitReport:
    """Write the BPE and raw text files of one split; return its truncation report."""
    if not pairs:
        raise ValueError(f"split {split!r} has no examples")
    truncated, longest = {}, {}
    for side in SIDES:
        texts = [getattr(p, side) for p in pairs]
        encoded, truncated[side], longest[side] = encode_side(texts, bpe, max_positions[side])
        check_dictionary(encoded, symbols, dict_path, f"{split}.{side}")
        bpe_lines = "".join(" ".join(tokens) + "\n" for tokens in encoded)
        write_text(out_dir / f"{split}.bpe.{side}", bpe_lines)
        raw_lines = "".join(text + "\n" for text in texts)
        write_text(out_dir / f"{split}.raw.{side}", raw_lines)
    return SplitReport(split, len(pairs), truncated, longest)


def preprocess_argv(
    out_dir: Path, splits: Sequence[str], dict_path: Path, workers: int
) -> List[str]:
    """The ``fairseq-preprocess`` arguments that binarize the BPE files with a fixed dictionary."""
    argv = ["--source-lang", "source", "--target-lang", "target", "--destdir", str(out_dir)]
    argv += ["--srcdict", str(dict_path), "--tgtdict", str(dict_path), "--workers", str(workers)]
    prefix_option = dict(zip(SPLITS, ("--trainpref", "--validpref", "--testpref")))
    for split in splits:
        if split not in prefix_option:
            raise ValueError(f"split must be train, valid or test, not {split!r}")
        argv += [prefix_option[split], str(out_dir / f"{split}.bpe")]
    return argv


def binarize(argv: List[str]) -> None:
    """Run fairseq-preprocess in this process (saves a 5 s interpreter start per call)."""
    logger = logging.getLogger(preprocess.__name__)
    handlers = list(logger.handlers)
    try:
        preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    finally:  # preprocess.main adds a log-file handler per call; do not let them pile up
        for handler in logger.handlers[len(handlers) :]:
            logger.removeHandler(handler)
            handler.close()


MIN_POSITIONS = 2  # a source of N positions keeps N - 1 BPE tokens: 1 would leave it empty


def prepare(
    splits: Dict[str, Sequence[Pair]],
    out_dir: Path,
    max_source_positions: int = 1024,
    max_target_positions: int = 1024,
    bpe_dir: Path = BPE_DIR,
    dict_path: Path = BPE_DIR / "dict.txt",
    workers: int = 1,
    overwrite: bool = False,
) -> List[SplitReport]:
    """Encode, truncate (reported) and binarize every split into ``out_dir``.

    The directory appears complete or not at all: it is built beside ``out_dir`` and renamed
    into place with its manifest. The same preparation again returns the recorded reports; a
    different one into a used directory is refused unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    limits = {"source": max_source_positions, "target": max_target_positions}
    for side, limit in limits.items():
        if limit < MIN_POSITIONS:
            raise UsageError(
                f"--max-{side}-positions must be at least {MIN_POSITIONS}, not {limit}: a "
                f"{side} of N positions keeps N - 1 BPE tokens and the end-of-sentence"
            )
    config = {
        "limits": limits,
        "splits": {name: [len(pairs), pairs_digest(pairs)] for name, pairs in splits.items()},
    }
    ident = manifest.identity("prepare", config, {"bpe": Path(bpe_dir), "dict": Path(dict_path)})
    old = manifest.claim(out_dir, ident, overwrite, "--out")
    if old is not None and old.get("status") == manifest.COMPLETE:
        print(f"{out_dir}: already prepared from the same pairs and settings", flush=True)
        return [SplitReport(**r) for r in old["completed"]["splits"]]
    building = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(building, ignore_errors=True)  # what an interrupted preparation left
    building.mkdir(parents=True)
    bpe, symbols = GPT2BPE(bpe_dir), dictionary_symbols(dict_path)
    reports = [
        write_split(building, split, pairs, bpe, symbols, dict_path, limits)
        for split, pairs in splits.items()
    ]
    argv = preprocess_argv(building, list(splits), dict_path, workers)
    print("fairseq-preprocess " + shlex.join(argv), flush=True)
    binarize(argv)
    record = {"splits": [dataclasses.asdict(r) for r in reports]}
    manifest.write_manifest(building, ident, manifest.COMPLETE, record)
    shutil.rmtree(out_dir, ignore_errors=True)  # empty, or an incomplete run of this identity
    os.replace(building, out_dir)
    for report in reports:
        print("prepared " + report.summary(), flush=True)
    return reports


def pairs_digest(pairs: Sequence[Pair]) -> str:
    """SHA-256 of the pairs' text: the same pairs prepare the same data."""
    return sha256(f"{pair.source}\t{pair.target}\n".encode() for pair in pairs)


def split_by_spec(pairs: Sequence[Pair], spec: str) -> Dict[str, List[Pair]]:
    """Cut ``pairs`` in order by a spec like ``"test"`` or ``"valid:10,test:10,train:rest"``;
    every name and size is checked before anything is cut or written."""
    names = [part.partition(":")[0].strip() for part in spec.split(",")]
    for name, part in zip(names, spec.split(",")):
        if name not in SPLITS:
            known = ", ".join(SPLITS)
            raise UsageError(
                f"--splits: unknown split {name!r} in {part!r}: use {known} (fairseq-preprocess's "
                "names)"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--splits {spec}: split {repeated[0]!r} is given twice")
    if not pairs:
        raise UsageError("the input files (--source/--target or --input) are empty: no examples")
    out: Dict[str, List[Pair]] = {}
    start = 0
    for part in spec.split(","):
        name, _, size = part.partition(":")
        if not size or size == "rest":
            end = len(pairs)
        elif size.isdigit():
            end = start + int(size)
        else:
            raise UsageError(f"--splits: bad size in {part!r}: use a number or 'rest'")
        if end > len(pairs) or end <= start:
            raise UsageError(
                f"--splits: {part!r} needs examples {start + 1}..{end}; have {len(pairs)}"
            )
        out[name.strip()] = list(pairs[start:end])
        start = end
    return out
