"""``fairseq_el.from_pretrained``: fairseq's hub interface over the EL model.

The checkpoint's architecture is switched to its EL variant through fairseq's own argument
overrides, then the EL model class's inherited ``from_pretrained`` runs: a BART checkpoint gives
fairseq's ``BARTHubInterface``, others ``GeneratorHubInterface``, exactly as the stock call does.
"""

import os
from typing import Any

from fairseq.models import ARCH_MODEL_REGISTRY

from fairseq_el.convert.checkpoint import checkpoint_arch, load_checkpoint
from fairseq_el.models.architectures import el_arch, stock_arch


def from_pretrained(
    model_name_or_path: str,
    checkpoint_file: str = "model.pt",
    data_name_or_path: str = ".",
    stock: bool = False,
    **kwargs: Any,
) -> Any:
    """As ``BARTModel.from_pretrained`` (or the checkpoint's model class), on the EL model.

    ``model_name_or_path``: a local folder holding ``checkpoint_file`` (``:``-separated for an
    ensemble) and the dictionary; ``kwargs`` are fairseq's argument overrides (``beam``,
    ``gpt2_encoder_json``, ...). ``stock=True`` loads the stock model the same way.
    """
    first = os.path.join(model_name_or_path, checkpoint_file.split(os.pathsep)[0])
    arch = kwargs.get("arch") or checkpoint_arch(load_checkpoint(first, mmap=True))
    arch = stock_arch(arch) if stock else el_arch(arch)
    model_class = ARCH_MODEL_REGISTRY[arch]
    return model_class.from_pretrained(
        model_name_or_path,
        checkpoint_file,
        data_name_or_path,
        **{**kwargs, "arch": arch, "_name": arch},
    )
