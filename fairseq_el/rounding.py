"""Half an ulp: the rounding slack of the project's low-precision rule (docs/precision.md), used by
``fairseq-el-generate --verify`` and by the tests' oracle (``fairseq_el.testing.precision``)."""

import math

import torch


def half_ulp(dtype: torch.dtype, magnitude: float) -> float:
    """Half the spacing of ``dtype`` numbers at ``|magnitude|``: the most that rounding a value of
    that size to ``dtype`` changes it (normal numbers); 0 at 0."""
    if magnitude == 0:
        return 0.0
    return torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(abs(magnitude))) / 2
