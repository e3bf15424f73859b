"""``el_bart``: fairseq's BART with EL encoder-decoder attention."""

from fairseq.models import register_model
from fairseq.models.bart import BARTModel

from fairseq_el.models.mixin import ELEncoderDecoderMixin


@register_model("el_bart")
class ELBARTModel(ELEncoderDecoderMixin, BARTModel):
    """Same parameters, arguments and outputs as ``bart``; less decoding memory."""
