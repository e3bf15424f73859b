"""BLEU-4 and ROUGE-L as the question-generation literature reports them.

Du et al. (2017), and UniLM / ProphetNet after them, score with the MS-COCO caption evaluation
code (pycocoevalcap): corpus BLEU-4 with the closest reference length and no smoothing beyond a
1e-15 / 1e-9 guard, and sentence-level ROUGE-L with beta = 1.2, averaged. Both are re-implemented
here (pycocoevalcap needs Java for its tokenizer) on lowercased word/punctuation tokens, so numbers
are comparable in kind to published ones, not guaranteed equal to the last digit.
"""

import math
import re
from collections import Counter
from typing import Dict, List, Sequence

TINY, SMALL = 1e-15, 1e-9  # pycocoevalcap bleu_scorer.py guards
ROUGE_BETA = 1.2  # pycocoevalcap rouge.py


def qg_tokens(text: str) -> List[str]:
    """Lowercased words (keeping apostrophes, so PTB ``n't`` and ``'s`` survive) and punctuation."""
    return re.findall(r"[\w']+|[^\w\s]", text.lower())


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def coco_bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 x 100; ``references[i]`` lists the gold questions of example ``i``."""
    correct, guess = [0] * 4, [0] * 4
    test_length = ref_length = 0
    for hypothesis, golds in zip(hypotheses, references):
        hyp, refs = qg_tokens(hypothesis), [qg_tokens(g) for g in golds]
        test_length += len(hyp)
        ref_length += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]  # closest
        for n in range(1, 5):
            max_ref = Counter()
            for ref in refs:
                max_ref |= ngrams(ref, n)
            counts = ngrams(hyp, n)
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            guess[n - 1] += max(0, len(hyp) - n + 1)
    score = 1.0
    for n in range(4):
        score *= (correct[n] + TINY) / (guess[n] + SMALL)
    score **= 1 / 4
    ratio = (test_length + TINY) / (ref_length + SMALL)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return 100 * score


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def coco_rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean sentence ROUGE-L (beta 1.2, best precision and recall over references) x 100."""
    total = 0.0
    for hypothesis, golds in zip(hypotheses, references):
        hyp = qg_tokens(hypothesis)
        precision = recall = 0.0
        for ref in map(qg_tokens, golds):
            lcs = lcs_length(hyp, ref)
            precision = max(precision, lcs / len(hyp) if hyp else 0.0)
            recall = max(recall, lcs / len(ref) if ref else 0.0)
        if precision and recall:
            beta2 = ROUGE_BETA**2
            total += (1 + beta2) * precision * recall / (recall + beta2 * precision)
    return 100 * total / len(hypotheses)


def qg_scores(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """QG BLEU-4 and ROUGE-L with one gold question per example."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    golds = [[r] for r in references]
    return {"qg_bleu4": coco_bleu4(hypotheses, golds), "qg_rougeL": coco_rouge_l(hypotheses, golds)}
