"""Language-model prompts in one full-sequence pass, then incremental decoding.

fairseq's ``SequenceGenerator`` feeds an LM prompt one token per step, running the decoder
incrementally for every prompt position. ``--task el_language_modeling`` generates the same
tokens and scores but runs the positions every prompt of the batch shares in one causal,
full-sequence pass, once per sentence: it keeps the log-probabilities the generator will ask for
at those steps (each hypothesis row reads its sentence's, through a row -> sentence map that is
all a reorder touches), and fills each self-attention's incremental cache by calling that module
once on the whole block, repeated for the hypotheses (so each attention, stock, EL or
grouped-query, writes its cache in its own layout). It also records the run's hypotheses per
sentence for the caches (a decoder-only model cannot read them off an encoder), so they reorder
by ancestry instead of copying as under ``--task language_modeling``. Prompts of different
lengths: the shortest one sets the shared block; the rest is forced step by step, as upstream does.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask
from torch import Tensor

from fairseq_el.attention.cache import set_hypotheses

IncrementalStates = List[Dict[str, Dict[str, Optional[Tensor]]]]


class PromptEnsembleModel(EnsembleModel):
    """``EnsembleModel`` that answers the shared prompt steps from one full-sequence pass."""

    def __init__(self, models) -> None:
        super().__init__(models)
        self.prompt: Optional[Tensor] = None  # (B, L) prefix tokens, right-padded
        self.shared = 0  # prompt tokens every sentence of the batch forces (read once per batch)
        self.prefilled: Optional[Tensor] = None  # (B, P, V) log-probs of steps 0 .. P-1
        self.row_sentence: Optional[Tensor] = None  # (rows,) sentence of every hypothesis row
        self.sentences = 0  # sentences of the batch being generated (0: not known)

    def forward_decoder(self, tokens, encoder_outs, incremental_states, temperature: float = 1.0):
        step = tokens.size(1) - 1
        if step == 0:
            if self.sentences and tokens.size(0) % self.sentences == 0:
                # k hypotheses per sentence, for the caches: reordered by ancestry, not copied
                for state in incremental_states:
                    set_hypotheses(state, tokens.size(0) // self.sentences)
            self._prefill(tokens, incremental_states, temperature)
        if self.prefilled is not None and step < self.prefilled.size(1):
            assert self.row_sentence is not None
            return self.prefilled[self.row_sentence, step], None  # (rows, V)
        self.prefilled = self.row_sentence = None  # past the shared prompt
        return super().forward_decoder(tokens, encoder_outs, incremental_states, temperature)

    def reorder_incremental_state(self, incremental_states, new_order: Tensor) -> None:
        super().reorder_incremental_state(incremental_states, new_order)
        if self.row_sentence is not None:
            self.row_sentence = self.row_sentence.index_select(0, new_order)  # (rows,)

    def _prefill(
        self, tokens: Tensor, incremental_states: IncrementalStates, temperature: float
    ) -> None:
        """One pass per sentence over BOS + the shared prompt; its log-probs answer those steps
        for every hypothesis row, and each row's caches are filled as incremental decoding would."""
        if self.prompt is None or self.shared < 1 or not self.has_incremental_states():
            return
        shared = self.shared
        sentences = self.prompt.size(0)
        hyps = tokens.size(0) // sentences  # rows per sentence, contiguous
        bos = tokens.view(sentences, hyps, -1)[:, 0, :1]  # (B, 1)
        block = torch.cat([bos, self.prompt[:, : shared - 1]], dim=1)  # (B, P): BOS + prompt
        log_probs = [
            self._prefill_model(model, block, state, temperature, hyps)
            for model, state in zip(self.models, incremental_states)
        ]
        self.row_sentence = torch.arange(sentences, device=tokens.device).repeat_interleave(hyps)
        if len(log_probs) == 1:
            self.prefilled = log_probs[0]
        else:
            stacked = torch.stack(log_probs)  # (models, B, P, V)
            self.prefilled = torch.logsumexp(stacked, dim=0) - math.log(self.models_size)

    @staticmethod
    def _prefill_model(model, block: Tensor, state, temperature: float, hyps: int) -> Tensor:
        """Log-probs (B, P, V) of every block position; fills ``state`` for ``hyps`` rows per
        sentence as incremental decoding would."""
        inputs: Dict[int, Tensor] = {}

        def keep_input(index):
            def hook(module, args, kwargs):
                inputs[index] = kwargs["query"] if "query" in kwargs else args[0]  # (P, B, C)

            return hook

        layers = model.decoder.layers
        hooks = [
            layer.self_attn.register_forward_pre_hook(keep_input(i), with_kwargs=True)
            for i, layer in enumerate(layers)
        ]
        try:
            logits, extra = model.decoder(block)  # causal full-sequence pass
        finally:
            for hook in hooks:
                hook.remove()
        causal = torch.full(
            (block.size(1),) * 2, float("-inf"), device=logits.device, dtype=logits.dtype
        ).triu(1)  # (P, P)
        for i, layer in enumerate(layers):
            x = inputs[i].repeat_interleave(hyps, dim=1)  # (P, B*k, C)
            layer.self_attn(x, x, x, incremental_state=state, need_weights=False, attn_mask=causal)
        return model.get_normalized_probs((logits.div_(temperature), extra), log_probs=True)


class PromptSequenceGenerator(SequenceGenerator):
    """``SequenceGenerator`` whose LM prompts are decoded in one pass (see module docstring)."""

    def __init__(self, models, tgt_dict, **kwargs) -> None:
        if not isinstance(models, EnsembleModel):
            models = PromptEnsembleModel(models)
        super().__init__(models, tgt_dict, **kwargs)

    @torch.no_grad()
    def generate(self, models, sample, **kwargs):
        prompt = kwargs.get("prefix_tokens")
        self.model.prompt, self.model.shared = prompt, 0
        self.model.sentences = sample["net_input"]["src_tokens"].size(0)
        if prompt is not None and not self.model.has_encoder():
            # the shared prompt length sets the shapes of the one-pass block: one host read per
            # batch, here, before decoding; the steps themselves read nothing from the device
            pad = self.model.single_model.decoder.padding_idx
            self.model.shared = int(prompt.ne(pad).sum(1).min())
        try:
            return super().generate(models, sample, **kwargs)
        finally:
            self.model.prompt = self.model.prefilled = self.model.row_sentence = None
            self.model.shared = self.model.sentences = 0


@dataclass
class ELLanguageModelingConfig(LanguageModelingConfig):
    pass


@register_task("el_language_modeling", dataclass=ELLanguageModelingConfig)
class ELLanguageModelingTask(LanguageModelingTask):
    """``language_modeling`` whose generator decodes prompts in one full-sequence pass."""

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        if seq_gen_cls is None and not getattr(args, "print_alignment", False):
            seq_gen_cls = PromptSequenceGenerator
        return super().build_generator(
            models,
            args,
            seq_gen_cls=seq_gen_cls,
            extra_gen_cls_kwargs=extra_gen_cls_kwargs,
            **kwargs,
        )
