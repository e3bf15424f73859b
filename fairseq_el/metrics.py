"""ROUGE (rouge-score, Porter stemming) and BLEU (sacrebleu), in the summarization conventions.

ROUGE-Lsum needs one sentence per line. rouge-score splits with nltk's punkt model, which is a
download, so both hypotheses and references go through :func:`split_sentences` instead, the usual
practice for CNN/DM (highlights are sentences). Scores are F-measures times 100, averaged.
"""

import re
from typing import Dict, List, Sequence

import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def split_sentences(text: str) -> List[str]:
    """Sentences of ``text``: break after . ! ? before a capital, digit, quote or bracket."""
    parts = re.split(r"(?<=[.!?])\s+(?=[\"'`(\[A-Z0-9])", text.strip())
    return [part for part in parts if part]


def check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("nothing to score")


def rouge(
    hypotheses: Sequence[str],
    references: Sequence[str],
    types: Sequence[str] = ROUGE_TYPES,
    stem: bool = True,
) -> Dict[str, float]:
    """Mean ROUGE F1 (x100) of ``types``, stemmed by default; Lsum on sentence-split texts."""
    check_lengths(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=stem)
    totals = dict.fromkeys(types, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(
            "\n".join(split_sentences(reference)), "\n".join(split_sentences(hypothesis))
        )
        for name in types:
            totals[name] += scores[name].fmeasure
    # a plain mean: rouge-score's BootstrapAggregator resamples without a seed
    return {name: 100 * total / len(hypotheses) for name, total in totals.items()}


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU, sacrebleu defaults: detokenized text, 13a tokenization, no lowercasing
    (``tokenize="none"`` for text already tokenized, as the SQuAD QG data is)."""
    check_lengths(hypotheses, references)
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score
