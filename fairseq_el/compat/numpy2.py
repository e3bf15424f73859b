"""Fix for fairseq 0.12's datasets on numpy >= 2.

numpy 2 removed ``numpy.compat`` and ``percentile``'s ``interpolation=`` keyword (now
``method=``). fairseq 0.12 still uses both: ``np.compat.long`` in ``TokenBlockDataset`` (language
modeling, ``--sample-break-mode eos``) and ``LanguagePairDataset`` (``--num-batch-buckets``), and
``np.percentile(..., interpolation="lower")`` in ``data_utils.get_buckets`` (batch buckets).
numpy itself is left alone: those fairseq modules get, as their ``np``, a view of numpy that adds
``compat.long`` (numpy 1.x defined it as ``int``) and passes ``interpolation`` on as ``method``.
Applied on import of ``fairseq_el`` for fairseq 0.12.x with numpy >= 2 only.
"""

import types
from typing import Any

import fairseq
import fairseq.data.data_utils
import fairseq.data.language_pair_dataset
import fairseq.data.token_block_dataset
import numpy

AFFECTED_PREFIX = "0.12."
PATCHED_MODULES = (
    fairseq.data.token_block_dataset,
    fairseq.data.language_pair_dataset,
    fairseq.data.data_utils,
)


class NumpyWithCompat(types.ModuleType):
    """numpy plus what numpy 1.x had and fairseq 0.12 uses; every other name is numpy's."""

    compat = types.SimpleNamespace(long=int)

    def __getattr__(self, name: str) -> Any:
        return getattr(numpy, name)

    @staticmethod
    def percentile(*args: Any, **kwargs: Any) -> Any:
        if "interpolation" in kwargs:
            kwargs["method"] = kwargs.pop("interpolation")
        return numpy.percentile(*args, **kwargs)


def apply() -> bool:
    """Install the fix where it is needed; returns whether it was installed."""
    numpy_major = int(numpy.__version__.split(".")[0])
    if numpy_major < 2 or not fairseq.__version__.startswith(AFFECTED_PREFIX):
        return False
    view = NumpyWithCompat("numpy")
    for module in PATCHED_MODULES:
        module.np = view
    return True
