"""An encoder whose output stays at one row per sentence while generators work per hypothesis."""

from typing import Dict, List, Optional, Tuple

import torch
from fairseq.models.transformer import TransformerEncoderBase
from torch import Tensor

# Encoder-output key holding, for every hypothesis row the generator works with, the index of its
# sentence in the (compact) encoder output. Absent until the first reorder: rows are sentences.
ROW_SENTENCE = "el_row_sentence"


class ELTransformerEncoder(TransformerEncoderBase):
    """Stock encoder; only ``reorder_encoder_out`` differs.

    fairseq's generators expand the encoder output to one row per hypothesis and reorder it at
    every step. Here the output is kept once per sentence: a reorder only maps hypothesis rows to
    sentences, and the sentence tensors are index-selected only when the set of sentences changes
    (finished sentences leave the batch). Rows must stay grouped by sentence, in equal numbers, as
    fairseq's generators keep them; any other order expands the output to one row per hypothesis,
    which is still exact.

    With ``sentences_per_pass`` set (``--el-encoder-batch``), the batch is encoded in sub-batches
    of that many sentences: each sentence is encoded on its own anyway (same padded length, same
    positions), so this only bounds the transient activations, which at long sources outweigh
    everything EL keeps.
    """

    sentences_per_pass: Optional[int] = None

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None,
                return_all_hiddens: bool = False,
                token_embeddings: Optional[Tensor] = None) -> Dict[str, List[Tensor]]:  # fmt: skip
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
        num_sentences = _num_sentences(encoder_out)
        rows = encoder_out.get(ROW_SENTENCE, [])
        row_sentence = (
            rows[0] if len(rows) > 0 else torch.arange(num_sentences, device=new_order.device)
        )
        wanted = row_sentence.index_select(0, new_order)  # (N,) sentence of every new row
        kept, row_to_kept = _sentences_in_blocks(wanted, row_sentence.numel(), num_sentences)
        if kept.numel() == num_sentences and bool(
            (kept == torch.arange(num_sentences, device=kept.device)).all()
        ):
            reordered = dict(encoder_out)
        else:
            reordered = super().reorder_encoder_out(encoder_out, kept)
        # The scaled source embeddings: as large as the encoder output, and no decoder here ever
        # reads them during generation. Held for the whole run, they would double EL's state.
        reordered["encoder_embedding"] = []
        reordered[ROW_SENTENCE] = [row_to_kept]
        return reordered


def _concat_batches(key: str, parts: List[List[Optional[Tensor]]]) -> List[Optional[Tensor]]:
    """Join per-sub-batch encoder outputs; time-major tensors have the batch on dim 1."""
    dim = 1 if key in ("encoder_out", "encoder_states") else 0  # (S, B, C) vs (B, ...)
    return [None if t[0] is None else torch.cat(t, dim=dim) for t in zip(*parts)]


def _num_sentences(encoder_out: Dict[str, List[Tensor]]) -> int:
    if len(encoder_out["encoder_out"]) > 0:
        return encoder_out["encoder_out"][0].size(1)  # (S, B, C)
    return encoder_out["src_tokens"][0].size(0)  # (B, S)


def _sentences_in_blocks(wanted: Tensor, rows: int, num_sentences: int) -> Tuple[Tensor, Tensor]:
    """The sentences kept (sorted) and the kept sentence of every row, when rows come in equal
    blocks of increasing sentences; else every row its own entry (one row per hypothesis).

    fairseq's generators keep ``rows / sentences`` rows per sentence (the first reorder sets it,
    sentences then only leave), so one comparison checks that size without ``torch.unique``.
    """
    for size in dict.fromkeys((rows // num_sentences, wanted.numel() // num_sentences)):
        if size < 1 or wanted.numel() % size != 0:
            continue
        blocks = wanted.view(-1, size)  # (B', size)
        kept = blocks[:, 0]  # (B',)
        if bool((blocks == kept[:, None]).all() and (kept[1:] > kept[:-1]).all()):
            row_to_kept = torch.arange(kept.numel(), device=kept.device)
            return kept, row_to_kept.repeat_interleave(size)  # (B',), (N,)
    kept, row_to_kept = torch.unique(wanted, sorted=True, return_inverse=True)
    if not _is_grouped(row_to_kept, kept.numel()):
        kept, row_to_kept = wanted, torch.arange(wanted.numel(), device=wanted.device)
    return kept, row_to_kept


def _is_grouped(row_to_kept: Tensor, num_kept: int) -> bool:
    """True if rows are [0]*g + [1]*g + ... + [num_kept-1]*g for one g."""
    num_rows = row_to_kept.numel()
    if num_rows % num_kept != 0:
        return False
    expected = torch.arange(num_kept, device=row_to_kept.device)
    expected = expected.repeat_interleave(num_rows // num_kept)  # (N,)
    return bool((row_to_kept == expected).all())
