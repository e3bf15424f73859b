"""One ``el_<arch>`` for every stock architecture, and the only code that spells the prefix.

Every other module maps names through :func:`el_arch`, :func:`stock_arch` and :func:`is_el_arch`.
"""

from typing import List

from fairseq.models import (
    ARCH_CONFIG_REGISTRY,
    ARCH_MODEL_NAME_REGISTRY,
    register_model_architecture,
)

from fairseq_el.errors import UserError

EL_PREFIX = "el_"


class ArchitectureError(UserError, ValueError):
    """An architecture name without the asked-for stock or EL counterpart."""


def register_el_architectures(stock_model: str, el_model: str) -> List[str]:
    """Register ``el_<arch>`` on ``el_model`` for each architecture of ``stock_model``."""
    registered = []
    for arch, model_name in list(ARCH_MODEL_NAME_REGISTRY.items()):
        if model_name != stock_model:
            continue
        name = EL_PREFIX + arch
        if name not in ARCH_MODEL_NAME_REGISTRY:
            register_model_architecture(el_model, name)(ARCH_CONFIG_REGISTRY[arch])
        registered.append(name)
    return registered


def is_el_arch(arch: str) -> bool:
    """Whether ``arch`` is a registered EL architecture."""
    return arch.startswith(EL_PREFIX) and arch[len(EL_PREFIX) :] in ARCH_MODEL_NAME_REGISTRY


def el_arch(arch: str) -> str:
    """``bart_large`` -> ``el_bart_large``; an EL architecture is returned as it is.

    Raises :class:`ArchitectureError` when no EL variant is registered.
    """
    if is_el_arch(arch):
        return arch
    if EL_PREFIX + arch not in ARCH_MODEL_NAME_REGISTRY:
        known = sorted(a for a in ARCH_MODEL_NAME_REGISTRY if is_el_arch(a))
        raise ArchitectureError(
            f"no EL variant of architecture {arch!r}; known EL architectures: {known}"
        )
    return EL_PREFIX + arch


def stock_arch(arch: str) -> str:
    """``el_bart_large`` -> ``bart_large``; a stock architecture is returned as it is."""
    return arch[len(EL_PREFIX) :] if is_el_arch(arch) else arch
