"""Converters from Hugging Face checkpoints to fairseq checkpoints (``pip install fairseq-el[hf]``).

``transformers`` is an optional extra: nothing here imports it until a conversion runs.
"""

from fairseq_el.convert.common import ConversionError

__all__ = ["ConversionError"]
