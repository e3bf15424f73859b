"""Decoder layer and decoder that build EL attention through fairseq's factory hooks."""

import weakref
from typing import Any, Dict, List, Optional

import torch
from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerDecoderBase
from fairseq.modules import MultiheadAttention
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
from torch import Tensor

from fairseq_el.attention.base import IncrementalState
from fairseq_el.attention.cache import (
    DecodingCache,
    hypotheses,
    is_static,
    mark_static,
    set_hypotheses,
)
from fairseq_el.attention.cross import (
    ELCrossAttention,
    ELGroupedCrossAttention,
    ELGroupedQueryAttention,  # noqa: F401 (its former home)
)
from fairseq_el.attention.grouped import GroupedQueryAttention
from fairseq_el.attention.kv_self_attention import KVSelfAttention
from fairseq_el.attention.policy import ELPolicy
from fairseq_el.attention.self_attention import ELSelfAttention
from fairseq_el.models.compiled_step import CompiledStep, log_run
from fairseq_el.models.options import ELOptions


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

    def build_encoder_attention(self, embed_dim, cfg) -> ELCrossAttention:
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
            attention = ELGroupedCrossAttention(
                embed_dim, heads, self.el_options.kv_heads, **common
            )
        else:
            attention = ELCrossAttention(
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
        self.el_policy = ELPolicy.from_options(self.el_options)  # shared by the layers
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)
        self.compiled_step: Optional[CompiledStep] = None  # --el-compile: the incremental step
        if self.el_options.compile != "none":
            self.compiled_step = CompiledStep(self.el_options.compile)
            unsupported = self._compile_unsupported(cfg)
            if unsupported:
                self.compiled_step.give_up(unsupported)

    @property
    def compile_stats(self):
        """:class:`~fairseq_el.models.compiled_step.CompileStats` (None without --el-compile)."""
        return None if self.compiled_step is None else self.compiled_step.stats

    def _compile_unsupported(self, cfg) -> Optional[str]:
        """Why the compiled step cannot serve this decoder (None: it can)."""
        if cfg.checkpoint_activations:
            return "the compiled step does not cover --checkpoint-activations"
        for layer in self.layers:
            attention = getattr(layer, "self_attn", None)
            if not getattr(attention, "in_place_cache", False):
                return (
                    "the compiled step needs the in-place self-attention cache (not with "
                    "extra key slots, add_bias_kv/add_zero_attn, or xformers)"
                )
        return None

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: IncrementalState = None,
        features_only: bool = False,
        full_context_alignment: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
        src_lengths: Optional[Any] = None,
        return_all_hiddens: bool = False,
    ):
        """The stock method; a compiled step (``--el-compile``) applies the output layer in its
        graph."""
        if self._begin(prev_output_tokens, encoder_out, incremental_state, full_context_alignment):
            assert self.compiled_step is not None and incremental_state is not None
            return self._compiled_features(
                self.compiled_step,
                prev_output_tokens,
                encoder_out,
                incremental_state,
                alignment_layer,
                alignment_heads,
                project=not features_only,
            )
        return super().forward(
            prev_output_tokens,
            encoder_out=encoder_out,
            incremental_state=incremental_state,
            features_only=features_only,
            full_context_alignment=full_context_alignment,
            alignment_layer=alignment_layer,
            alignment_heads=alignment_heads,
            src_lengths=src_lengths,
            return_all_hiddens=return_all_hiddens,
        )

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: IncrementalState = None,
        full_context_alignment: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
    ):
        """The stock method; at a run's first incremental step it records the hypotheses per
        sentence (rows / encoder sentences, from shapes) for the caches of the run."""
        if self._begin(prev_output_tokens, encoder_out, incremental_state, full_context_alignment):
            assert self.compiled_step is not None and incremental_state is not None
            return self._compiled_features(
                self.compiled_step,
                prev_output_tokens,
                encoder_out,
                incremental_state,
                alignment_layer,
                alignment_heads,
            )
        return super().extract_features(
            prev_output_tokens,
            encoder_out,
            incremental_state,
            full_context_alignment,
            alignment_layer,
            alignment_heads,
        )

    def _begin(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]],
        incremental_state: IncrementalState,
        full_context_alignment: bool,
    ) -> bool:
        """Before a call: record the run's hypotheses per sentence at its first incremental
        step (and, compiled, start the run); whether the compiled step serves this call. Once
        per call or twice (``forward`` then ``extract_features``): the same either way."""
        step = self.compiled_step
        if step is not None and incremental_state is not None and not incremental_state:
            self._start_run(step, incremental_state)  # the run's first step
        if incremental_state is not None and hypotheses(incremental_state) is None:
            sentences = _sentences(encoder_out)
            rows = prev_output_tokens.size(0)
            if sentences and rows % sentences == 0:
                set_hypotheses(incremental_state, rows // sentences)
        if step is None:
            return False
        return self._compiled_applies(incremental_state, full_context_alignment)

    def _start_run(self, step: CompiledStep, incremental_state: IncrementalState) -> None:
        """Static caches for this run (step 0 runs eagerly and allocates them); its stats are
        logged once, when the run's state is freed (after the generator's call, or at the next
        run's start). A step that cannot compile keeps the eager decoder as without the option."""
        assert incremental_state is not None
        stats = step.new_run(self)
        if step.eager_reason is None:
            marker = torch.empty(0, device="meta")  # holds nothing: a lifetime token
            mark_static(incremental_state, marker)
            weakref.finalize(marker, log_run, stats).atexit = False

    def _compiled_applies(
        self, incremental_state: IncrementalState, full_context_alignment: bool
    ) -> bool:
        """Incremental steps after the first of a run whose caches are static."""
        if not is_static(incremental_state) or full_context_alignment or not self.layers:
            return False
        assert incremental_state is not None
        buffer = self.layers[0].self_attn._get_input_buffer(incremental_state)
        return DecodingCache(buffer).static

    def _compiled_features(
        self,
        step: CompiledStep,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]],
        incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
        alignment_layer: Optional[int],
        alignment_heads: Optional[int],
        project: bool = False,
    ):
        """``extract_features`` for one step (``forward`` with ``project``: the output layer
        too): the positions here (fairseq computes them from the step number), the rest in
        :func:`~fairseq_el.models.compiled_step.decoder_step`."""
        positions = None
        if self.embed_positions is not None:
            positions = self.embed_positions(
                prev_output_tokens, incremental_state=incremental_state
            )
            positions = positions[:, -1:]
        for layer in self.layers:  # room for this step, outside the compiled code
            DecodingCache.of(layer.self_attn, incremental_state).reserve(prev_output_tokens.size(1))
        enc = padding_mask = None
        if encoder_out is not None and len(encoder_out["encoder_out"]) > 0:
            enc = encoder_out["encoder_out"][0]
        if encoder_out is not None and len(encoder_out["encoder_padding_mask"]) > 0:
            padding_mask = encoder_out["encoder_padding_mask"][0]
        x, attn, inner_states = step(
            self,
            prev_output_tokens[:, -1:].contiguous(),
            positions,
            enc,
            padding_mask,
            incremental_state,
            self.num_layers - 1 if alignment_layer is None else alignment_layer,
            alignment_heads,
            project,
        )
        return x, {"attn": [attn], "inner_states": inner_states}

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        layer = ELDecoderLayer(
            cfg, no_encoder_attn, el_options=self.el_options, policy=self.el_policy
        )
        # as the stock hook: activation checkpointing and FSDP wrapping
        if cfg.checkpoint_activations:
            layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
        min_params_to_wrap = cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0
        return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


def _sentences(encoder_out: Optional[Dict[str, List[Tensor]]]) -> int:
    """Sentences in an EL encoder output (kept once per sentence); 0 without one."""
    if not encoder_out or len(encoder_out.get("encoder_out", [])) == 0:
        return 0
    return encoder_out["encoder_out"][0].size(1)  # (S, B, C)
