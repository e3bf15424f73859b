"""Checkpoints: safe reading, stock <-> EL, verification, key/value-head averaging, and
Hugging Face GPT-2/BART converters (``transformers`` is imported only when one runs)."""

from fairseq_el.convert.checkpoint import ConversionError

__all__ = ["ConversionError"]
