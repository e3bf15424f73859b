"""fairseq-el: EL-attention (Yan et al., ICML 2021) as a fairseq ``--user-dir`` plugin.

Importing the package (what ``--user-dir`` does) registers the EL models and architectures and
applies the version-guarded fixes and the EL-options warning in :mod:`fairseq_el.compat`.
"""

import os

from fairseq_el.compat import checkpoints, diverse_beam, el_options, ngram_repeat, numpy2

checkpoints.apply()
diverse_beam.apply()
el_options.apply()
ngram_repeat.apply()
numpy2.apply()

from fairseq_el import models, tasks  # noqa: E402  (registration needs the fixes above first)
from fairseq_el.hub import from_pretrained  # noqa: E402, F401  (fairseq's hub interface, EL)
from fairseq_el.version import __version__  # noqa: E402, F401  (the one source: version.py)

USER_DIR = os.path.dirname(os.path.abspath(__file__))

__all__ = ["USER_DIR", "__version__", "models", "tasks"]
