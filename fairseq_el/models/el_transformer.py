"""``el_transformer``: fairseq's Transformer with EL encoder-decoder attention."""

from fairseq.models import register_model
from fairseq.models.transformer import TransformerModel

from fairseq_el.models.mixin import ELEncoderDecoderMixin


@register_model("el_transformer")
class ELTransformerModel(ELEncoderDecoderMixin, TransformerModel):
    """Same parameters, arguments and outputs as ``transformer``; less decoding memory."""
