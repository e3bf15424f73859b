"""An encoder whose output stays at one row per sentence while generators work per hypothesis."""

from typing import Dict, List, Optional

import torch
from fairseq.models.transformer import TransformerEncoderBase
from torch import Tensor

from fairseq_el.attention import cache

# Encoder-output key holding, for every hypothesis row the generator works with, the index of its
# sentence in the (compact) encoder output. Absent until the first reorder: rows are sentences.
ROW_SENTENCE = "el_row_sentence"


class ELTransformerEncoder(TransformerEncoderBase):
    """Stock encoder; only ``reorder_encoder_out`` differs.

    fairseq's generators expand the encoder output to one row per hypothesis and reorder it at
    every step. Here the output is kept once per sentence: a reorder only maps hypothesis rows to
    sentences, and the sentence tensors are index-selected only when the set of sentences changes
    (finished sentences leave the batch). It reads nothing on the host: the layout is fairseq's
    generators' (the first reorder expands each sentence to k contiguous rows, later ones keep
    blocks of k rows within a sentence and drop sentences in order), told by the shapes alone and
    checked in debug mode (:data:`~fairseq_el.attention.cache.CHECK_ORDERS`).

    With ``sentences_per_pass`` set (``--el-encoder-batch``), the batch is encoded in sub-batches
    of that many sentences: each sentence is encoded on its own anyway (same padded length, same
    positions), so this only bounds the transient activations, which at long sources outweigh
    everything EL keeps.
    """

    sentences_per_pass: Optional[int] = None

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        return_all_hiddens: bool = False,
        token_embeddings: Optional[Tensor] = None,
    ) -> Dict[str, List[Tensor]]:
        step = self.sentences_per_pass
        if not step or src_tokens.size(0) <= step:
            return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        parts = [
            super(ELTransformerEncoder, self).forward(
                src_tokens[i : i + step],
                None if src_lengths is None else src_lengths[i : i + step],
                return_all_hiddens,
                None if token_embeddings is None else token_embeddings[i : i + step],
            )
            for i in range(0, src_tokens.size(0), step)
        ]
        return {key: _concat_batches(key, [p[key] for p in parts]) for key in parts[0]}

    @torch.jit.export
    def reorder_encoder_out(
        self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor
    ) -> Dict[str, List[Tensor]]:
        sentences = _num_sentences(encoder_out)
        row_sentence = encoder_out.get(ROW_SENTENCE, [])
        old_hyps = row_sentence[0].numel() // sentences if len(row_sentence) > 0 else 1
        # the first reorder expands each sentence to its k hypothesis rows; k stays for the run
        hyps = new_order.numel() // sentences if len(row_sentence) == 0 else old_hyps
        if cache.CHECK_ORDERS:
            cache.check_order(new_order, sentences * old_hyps, old_hyps, hyps)
        kept = new_order.numel() // hyps  # sentences that stay
        if kept == sentences:  # the same sentences (they only leave, in order)
            reordered = dict(encoder_out)
        else:
            kept_sentences = new_order.view(kept, hyps)[:, 0] // old_hyps  # (B',)
            reordered = super().reorder_encoder_out(encoder_out, kept_sentences)
        # The scaled source embeddings: as large as the encoder output, and no decoder here ever
        # reads them during generation. Held for the whole run, they would double EL's state.
        reordered["encoder_embedding"] = []
        if kept != sentences or len(row_sentence) == 0:
            rows = torch.arange(kept, device=new_order.device)  # (B',)
            row_sentence = [rows[:, None].expand(-1, hyps).reshape(-1)]  # (R,)
        reordered[ROW_SENTENCE] = row_sentence
        return reordered


def _concat_batches(key: str, parts: List[List[Optional[Tensor]]]) -> List[Optional[Tensor]]:
    """Join per-sub-batch encoder outputs; time-major tensors have the batch on dim 1."""
    dim = 1 if key in ("encoder_out", "encoder_states") else 0  # (S, B, C) vs (B, ...)
    return [None if t[0] is None else torch.cat(t, dim=dim) for t in zip(*parts)]


def _num_sentences(encoder_out: Dict[str, List[Tensor]]) -> int:
    if len(encoder_out["encoder_out"]) > 0:
        return encoder_out["encoder_out"][0].size(1)  # (S, B, C)
    return encoder_out["src_tokens"][0].size(0)  # (B, S)
