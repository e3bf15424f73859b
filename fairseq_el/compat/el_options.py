"""EL model options on a stock architecture: a warning naming them, instead of silence.

fairseq applies ``--model-overrides`` to a checkpoint's arguments and builds whatever
architecture they name; a stock architecture ignores keys it does not read, so
``--model-overrides "{'el_self_attention': True}"`` without ``'arch': 'el_...'`` runs stock
attention without a word. fairseq has no hook between the overrides and the model's build but
``fairseq.models.build_model`` itself (``FairseqTask.build_model`` calls it through the module),
so this wraps it: after the build, a stock model whose arguments hold EL options logs one
warning naming them and the EL architecture to name. The model and its outputs are untouched.

Version-guarded (fairseq 0.12, where ``FairseqTask.build_model`` calls
``models.build_model``); installed once by :func:`apply`.
"""

import logging
from typing import Any, List

import fairseq
import fairseq.models

logger = logging.getLogger("fairseq_el")
AFFECTED_PREFIX = "0.12"


def _value(cfg: Any, name: str) -> Any:
    try:
        return getattr(cfg, name, None) if not hasattr(cfg, "get") else cfg.get(name)
    except Exception:  # an omegaconf node that does not hold the key
        return None


def ignored_el_options(cfg: Any) -> List[str]:
    """``name=value`` of the EL options ``cfg`` holds when its architecture is a stock one."""
    from fairseq_el.models.architectures import is_el_arch
    from fairseq_el.models.options import OVERRIDE_KEYS

    arch = _value(cfg, "arch") or _value(cfg, "_name")
    if not isinstance(arch, str) or is_el_arch(arch):
        return []
    given = [(name, _value(cfg, name)) for name in OVERRIDE_KEYS]
    return [f"{name}={value!r}" for name, value in given if value not in (None, False)]


def warn_if_ignored(cfg: Any) -> List[str]:
    """Log the warning for ``cfg`` (see the module); returns the options it named."""
    ignored = ignored_el_options(cfg)
    if ignored:
        arch = _value(cfg, "arch") or _value(cfg, "_name")
        logger.warning(
            f"fairseq-el: {', '.join(ignored)} ignored: architecture {arch!r} is stock fairseq; "
            f"to run EL name its EL architecture too (--model-overrides \"{{'_name': "
            f"'el_{arch}', 'arch': 'el_{arch}', ...}}\")"
        )
    return ignored


def apply() -> bool:
    """Wrap ``fairseq.models.build_model`` (once); returns whether it is installed."""
    if not fairseq.__version__.startswith(AFFECTED_PREFIX):
        return False
    build = fairseq.models.build_model
    if getattr(build, "_fairseq_el_checks_el_options", False):
        return True

    def build_model(cfg, task, from_checkpoint=False):
        model = build(cfg, task, from_checkpoint)
        warn_if_ignored(cfg)
        return model

    build_model._fairseq_el_checks_el_options = True  # type: ignore[attr-defined]
    fairseq.models.build_model = build_model
    return True
