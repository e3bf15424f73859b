"""Decoder layer and decoder that build EL attention through fairseq's factory hooks."""

from typing import Optional

from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerDecoderBase
from fairseq.modules import MultiheadAttention
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase

from fairseq_el.attention.cross import ELMultiheadAttention
from fairseq_el.attention.grouped import GroupedQueryAttention
from fairseq_el.attention.kv_self_attention import KVSelfAttention
from fairseq_el.attention.policy import ELPolicy
from fairseq_el.attention.self_attention import ELSelfAttention
from fairseq_el.models.options import ELOptions


class ELGroupedQueryAttention(ELMultiheadAttention, GroupedQueryAttention):
    """Grouped-query encoder-decoder attention computed with EL (the identity holds per group)."""


class ELDecoderLayer(TransformerDecoderLayerBase):
    """Stock decoder layer whose encoder-decoder attention is EL attention.

    Its self-attention is stock with the in-place cache (:class:`KVSelfAttention`), EL
    (``--el-self-attention``) or grouped-query (``--decoder-kv-heads``).
    """

    def __init__(
        self,
        cfg,
        no_encoder_attn=False,
        add_bias_kv=False,
        add_zero_attn=False,
        el_options: Optional[ELOptions] = None,
        policy: Optional[ELPolicy] = None,
    ):
        self.el_options = el_options or ELOptions()  # read by the build hooks of the base __init__
        self.el_policy = policy or ELPolicy.from_options(self.el_options)
        super().__init__(cfg, no_encoder_attn, add_bias_kv, add_zero_attn)

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        common = dict(
            dropout=cfg.attention_dropout,
            self_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
        )
        heads = cfg.decoder.attention_heads
        if self.el_options.kv_heads is not None and not (add_bias_kv or add_zero_attn):
            return GroupedQueryAttention(embed_dim, heads, self.el_options.kv_heads, **common)
        if self.el_options.self_attention:
            return ELSelfAttention(
                embed_dim, heads, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, **common
            )
        if add_bias_kv or add_zero_attn:  # extra key slots: the stock module, stock cache
            return MultiheadAttention(
                embed_dim, heads, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, **common
            )
        return KVSelfAttention(embed_dim, heads, **common)

    def build_encoder_attention(self, embed_dim, cfg) -> ELMultiheadAttention:
        common = dict(
            kdim=cfg.encoder.embed_dim,
            vdim=cfg.encoder.embed_dim,
            dropout=cfg.attention_dropout,
            encoder_decoder_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
        )
        heads = cfg.decoder.attention_heads
        if self.el_options.kv_heads is not None:
            attention = ELGroupedQueryAttention(
                embed_dim, heads, self.el_options.kv_heads, **common
            )
        else:
            attention = ELMultiheadAttention(
                embed_dim, heads, xformers_att_config=cfg.encoder.xformers_att_config, **common
            )
        attention.set_policy(self.el_policy)
        return attention


class ELTransformerDecoder(TransformerDecoderBase):
    """Stock Transformer decoder built from :class:`ELDecoderLayer`."""

    def __init__(
        self,
        cfg,
        dictionary,
        embed_tokens,
        no_encoder_attn=False,
        output_projection=None,
        el_options: Optional[ELOptions] = None,
    ):
        if cfg.cross_self_attention:
            raise ValueError(
                "EL attention does not support --cross-self-attention: its self-attention "
                "concatenates the encoder output to every hypothesis, which EL keeps per sentence"
            )
        self.el_options = el_options or ELOptions()  # read by build_decoder_layer (base __init__)
        self.el_policy = ELPolicy.from_options(
            self.el_options
        )  # one per decoder, shared by its layers
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        layer = ELDecoderLayer(
            cfg, no_encoder_attn, el_options=self.el_options, policy=self.el_policy
        )
        # as the stock hook: activation checkpointing and FSDP wrapping
        if cfg.checkpoint_activations:
            layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
        min_params_to_wrap = cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0
        return fsdp_wrap(layer, min_num_params=min_params_to_wrap)
