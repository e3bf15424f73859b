"""One ``el_<arch>`` for every stock architecture, calling the stock architecture function."""

from typing import List

from fairseq.models import (
    ARCH_CONFIG_REGISTRY,
    ARCH_MODEL_NAME_REGISTRY,
    register_model_architecture,
)

EL_PREFIX = "el_"


def register_el_architectures(stock_model: str, el_model: str) -> List[str]:
    """Register ``el_<arch>`` on ``el_model`` for each architecture of ``stock_model``."""
    registered = []
    for arch, model_name in list(ARCH_MODEL_NAME_REGISTRY.items()):
        if model_name != stock_model:
            continue
        el_arch = EL_PREFIX + arch
        if el_arch not in ARCH_MODEL_NAME_REGISTRY:
            register_model_architecture(el_model, el_arch)(ARCH_CONFIG_REGISTRY[arch])
        registered.append(el_arch)
    return registered


def stock_arch(el_arch: str) -> str:
    """``el_bart_large`` -> ``bart_large``; raises on a name that is not an EL architecture."""
    if (
        not el_arch.startswith(EL_PREFIX)
        or el_arch[len(EL_PREFIX) :] not in ARCH_MODEL_NAME_REGISTRY
    ):
        raise KeyError(f"not an EL architecture: {el_arch!r}")
    return el_arch[len(EL_PREFIX) :]
