"""Build hooks shared by the EL encoder-decoder models."""

import logging

from fairseq.models.transformer import TransformerConfig

from fairseq_el.models.decoder import ELTransformerDecoder
from fairseq_el.models.encoder import ELTransformerEncoder
from fairseq_el.models.options import add_el_args, el_options

logger = logging.getLogger(__name__)


def describe_self_attention(options) -> str:
    if options.kv_heads is not None:
        return f"grouped-query ({options.kv_heads} key/value heads)"
    return "EL" if options.self_attention else "stock"


class ELEncoderDecoderMixin:
    """Swap in the EL encoder and decoder; everything else is the stock model."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_el_args(parser)

    @classmethod
    def build_model(cls, args, task):
        model = super().build_model(args, task)
        options = el_options(args)
        logger.info(
            f"fairseq-el: built {cls.__name__} ({args.arch}), encoder-decoder attention: "
            f"--el-policy {options.policy}, self-attention: {describe_self_attention(options)}"
        )
        return model

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens) -> ELTransformerEncoder:
        encoder = ELTransformerEncoder(
            TransformerConfig.from_namespace(args), src_dict, embed_tokens
        )
        encoder.sentences_per_pass = el_options(args).encoder_batch
        return encoder

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens) -> ELTransformerDecoder:
        cfg = TransformerConfig.from_namespace(args)
        return ELTransformerDecoder(
            cfg,
            tgt_dict,
            embed_tokens,
            no_encoder_attn=cfg.no_cross_attention,
            el_options=el_options(args),
        )

    def set_beam_size(self, beam: int) -> None:
        """Called by ``SequenceGenerator`` for beam > 1; EL needs nothing from it.

        Stock BART uses this hook to cache projected source keys/values once per sentence and to
        stop reordering the encoder output. EL keeps the encoder output once per sentence itself
        (:class:`~fairseq_el.models.encoder.ELTransformerEncoder`) and caches no projection.
        """
