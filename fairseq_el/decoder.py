"""Decoder layer and decoder that build EL attention through fairseq's factory hooks."""

from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerDecoderBase
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase

from fairseq_el.el_attention import ELMultiheadAttention


class ELDecoderLayer(TransformerDecoderLayerBase):
    """Stock decoder layer whose encoder-decoder attention is EL attention."""

    def build_encoder_attention(self, embed_dim, cfg) -> ELMultiheadAttention:
        return ELMultiheadAttention(
            embed_dim,
            cfg.decoder.attention_heads,
            kdim=cfg.encoder.embed_dim,
            vdim=cfg.encoder.embed_dim,
            dropout=cfg.attention_dropout,
            encoder_decoder_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
            xformers_att_config=cfg.encoder.xformers_att_config,
        )


class ELTransformerDecoder(TransformerDecoderBase):
    """Stock Transformer decoder built from :class:`ELDecoderLayer`."""

    def __init__(
        self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None
    ):
        if cfg.cross_self_attention:
            raise ValueError(
                "EL attention does not support --cross-self-attention: its self-attention "
                "concatenates the encoder output to every hypothesis, which EL keeps per sentence"
            )
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        layer = ELDecoderLayer(cfg, no_encoder_attn)
        # as the stock hook: activation checkpointing and FSDP wrapping
        if cfg.checkpoint_activations:
            layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
        min_params_to_wrap = cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0
        return fsdp_wrap(layer, min_num_params=min_params_to_wrap)
