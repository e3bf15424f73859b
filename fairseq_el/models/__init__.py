"""EL variants of fairseq's models, registered on import (``--user-dir``)."""

from fairseq_el.models.architectures import register_el_architectures
from fairseq_el.models.el_bart import ELBARTModel
from fairseq_el.models.el_transformer import ELTransformerModel
from fairseq_el.models.el_transformer_lm import ELTransformerLanguageModel

register_el_architectures("transformer", "el_transformer")
register_el_architectures("bart", "el_bart")
register_el_architectures("transformer_lm", "el_transformer_lm")

__all__ = ["ELBARTModel", "ELTransformerLanguageModel", "ELTransformerModel"]
