"""Where the shipped data is: package data, so commands work from any install."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # fairseq_el/
DATA_DIR = PACKAGE_DIR / "data"  # the shipped samples (data/SOURCES.md says where from)
BPE_DIR = DATA_DIR / "gpt2_bpe"  # GPT-2's BPE (encoder.json, vocab.bpe), as BART uses it
