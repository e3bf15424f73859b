"""``el_transformer_lm``: fairseq's decoder-only Transformer LM with the EL decoder.

Without an encoder, EL matters here through ``--el-self-attention`` (C cached numbers per position
instead of 2C) and ``--decoder-kv-heads``.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.models import register_model
from fairseq.models.transformer import TransformerConfig
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

from fairseq_el.models.decoder import ELTransformerDecoder
from fairseq_el.models.mixin import describe_self_attention
from fairseq_el.models.options import (
    COMPILE_HELP,
    EL_SELF_ATTENTION_HELP,
    KV_HEADS_HELP,
    el_options,
)

logger = logging.getLogger(__name__)


@dataclass
class ELTransformerLanguageModelConfig(TransformerLanguageModelConfig):
    el_self_attention: bool = field(default=False, metadata={"help": EL_SELF_ATTENTION_HELP})
    decoder_kv_heads: Optional[int] = field(default=None, metadata={"help": KV_HEADS_HELP})
    el_compile: str = field(default="none", metadata={"help": COMPILE_HELP})


@register_model("el_transformer_lm", dataclass=ELTransformerLanguageModelConfig)
class ELTransformerLanguageModel(TransformerLanguageModel):
    """Same parameters, arguments and outputs as ``transformer_lm``."""

    @classmethod
    def build_model(cls, args, task):
        # The stock build_model has no hook for its decoder class, and it alone knows every
        # embedding option (adaptive input, character embeddings): build it, keep its embedding,
        # and build the EL decoder around that. The stock layers are built once and dropped.
        stock = super().build_model(args, task)
        options = el_options(args)
        # The random-number stream after building must be the stock one: fairseq-generate seeds
        # before loading the model, so a seeded --sampling run would otherwise sample differently.
        with torch.random.fork_rng(devices=[]):
            decoder = ELTransformerDecoder(
                TransformerConfig.from_namespace(args),
                task.target_dictionary,
                stock.decoder.embed_tokens,
                no_encoder_attn=True,
                el_options=options,
            )
        if options.kv_heads is None:  # same shapes: start from the stock initialisation too
            decoder.load_state_dict(stock.decoder.state_dict())
        logger.info(
            f"fairseq-el: built {cls.__name__} "
            f"({getattr(args, '_name', None) or getattr(args, 'arch', None)}), "
            f"self-attention: {describe_self_attention(options)}"
        )
        return cls(decoder)
