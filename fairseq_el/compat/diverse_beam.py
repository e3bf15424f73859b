"""Fix for fairseq 0.12's ``DiverseBeamSearch`` on any batch but the first.

Upstream indexes ``group_overlap`` (one row per sentence of the *current batch*) with
``original_batch_idxs``, which ``SequenceGenerator`` fills with dataset ids (``sample["id"]``).
On a batch whose ids are not ``0..bsz-1`` that raises an index error or, worse, applies another
sentence's penalty. The fix translates ids into positions in the batch, then runs the stock step.
Applied on import of ``fairseq_el`` for fairseq 0.12.x only; stock and EL models both use it.
"""

from typing import Optional

import fairseq
import fairseq.search
from torch import Tensor

AFFECTED_PREFIX = "0.12."


class PositionIndexedDiverseBeamSearch(fairseq.search.DiverseBeamSearch):
    """``DiverseBeamSearch`` whose overlap rows are batch positions, not dataset ids."""

    def step(
        self,
        step: int,
        lprobs: Tensor,
        scores: Optional[Tensor],
        prev_output_tokens: Optional[Tensor] = None,
        original_batch_idxs: Optional[Tensor] = None,
    ):
        if original_batch_idxs is not None:
            if step == 0:
                self.batch_ids = original_batch_idxs.clone()  # (bsz,) ids at step 0
            # position of every live sentence among the step-0 ids (ids are unique in a batch)
            original_batch_idxs = (
                (original_batch_idxs.unsqueeze(1) == self.batch_ids.unsqueeze(0)).long().argmax(1)
            )  # (live bsz,)
        return super().step(step, lprobs, scores, prev_output_tokens, original_batch_idxs)


def apply() -> bool:
    """Install the fix where it is needed; returns whether it was installed."""
    if not fairseq.__version__.startswith(AFFECTED_PREFIX):
        return False
    if not issubclass(fairseq.search.DiverseBeamSearch, PositionIndexedDiverseBeamSearch):
        fairseq.search.DiverseBeamSearch = PositionIndexedDiverseBeamSearch
    return True
