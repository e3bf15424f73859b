"""Fix for fairseq 0.12's ``--no-repeat-ngram-size`` without the CUDA extension (e.g. on CPU).

``SequenceGenerator`` hands the blocker its whole token buffer, padded beyond the current step,
and the Python fallback compares each hypothesis' *last* n-1 buffer entries (padding) with its
n-grams: nothing ever matches, so nothing is blocked (upstream issues #4709, #5206). The CUDA
kernel reads up to ``step`` and is right. The fix gives the fallback only the tokens decoded so
far. Applied on import of ``fairseq_el`` for fairseq 0.12.x; stock and EL models both use it.
"""

import fairseq
import fairseq.sequence_generator
from fairseq.ngram_repeat_block import NGramRepeatBlock
from torch import Tensor

AFFECTED_PREFIX = "0.12."


class StepLimitedNGramRepeatBlock(NGramRepeatBlock):
    """``NGramRepeatBlock`` whose Python fallback sees the decoded tokens only."""

    def forward(self, tokens: Tensor, lprobs: Tensor, bsz: int, beam_size: int, step: int):
        if not self.use_extension:
            tokens = tokens[:, : step + 1]  # (bsz*beam, step+1): the buffer holds padding beyond
        return super().forward(tokens, lprobs, bsz, beam_size, step)


def apply() -> bool:
    """Install the fix where it is needed; returns whether it was installed."""
    if not fairseq.__version__.startswith(AFFECTED_PREFIX):
        return False
    fairseq.sequence_generator.NGramRepeatBlock = StepLimitedNGramRepeatBlock
    return True
