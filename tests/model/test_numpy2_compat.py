"""fairseq 0.12's datasets that use numpy 1.x-only names run on numpy 1.x and 2.x alike."""

import fairseq.data.token_block_dataset
import numpy
import torch
from fairseq.data import LanguagePairDataset, TokenBlockDataset

from fairseq_el.compat import numpy2

from helpers import make_dictionary

NUMPY_2 = int(numpy.__version__.split(".")[0]) >= 2


def test_installed_exactly_on_numpy_2():
    assert numpy2.apply() == NUMPY_2  # idempotent: importing fairseq_el already applied it
    module_np = fairseq.data.token_block_dataset.np
    assert isinstance(module_np, numpy2.NumpyWithCompat) == NUMPY_2
    assert module_np.compat.long is int
    assert not NUMPY_2 or not hasattr(numpy, "compat"), "numpy itself must stay untouched"


def test_view_is_numpy_plus_compat_long():
    view = numpy2.NumpyWithCompat("numpy")
    assert view.zeros is numpy.zeros and view.int64 is numpy.int64
    assert view.zeros(3, dtype=view.compat.long).dtype == numpy.zeros(3, dtype=int).dtype
    sizes = numpy.array([3, 9, 4, 7, 5])
    assert view.percentile(sizes, [0, 50, 100], interpolation="lower").tolist() == [3, 5, 9]


def test_token_block_dataset_eos_break_mode():
    """Language modeling's default ``--sample-break-mode eos`` path (``np.compat.long``)."""
    docs = [torch.tensor([5, 6, 2]), torch.tensor([7, 2]), torch.tensor([8, 9, 10, 2])]
    dataset = TokenBlockDataset(docs, [len(d) for d in docs], block_size=None, pad=1, eos=2,
                                break_mode="eos")  # fmt: skip
    assert [dataset[i].tolist() for i in range(len(dataset))] == [d.tolist() for d in docs]


def test_language_pair_dataset_batch_buckets():
    """``--num-batch-buckets``: ``np.percentile(..., interpolation=)`` and ``np.compat.long``."""
    dictionary = make_dictionary(8)
    srcs = [torch.tensor([4, 5, 2]), torch.tensor([6, 7, 8, 9, 2]), torch.tensor([5, 2])]
    dataset = LanguagePairDataset(srcs, [len(s) for s in srcs], dictionary, srcs,
                                  [len(s) for s in srcs], dictionary, num_buckets=2)  # fmt: skip
    assert dataset.buckets is not None and len(dataset.bucketed_num_tokens) == 3
