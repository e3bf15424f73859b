"""Task configuration files (``configs/<task>.yaml``): generation settings, scoring, fine-tuning.

A config maps fairseq option names (without ``--``) to values; ``true`` stands for a flag.
``variants`` override ``generate`` (e.g. greedy, diverse beam); ``finetune`` holds fairseq-train
options. Keeping the options as fairseq spells them means a config reads like the command it runs.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from fairseq_el.recipes.paths import CONFIG_DIR, require_file

METRICS = ("rouge", "qg")


@dataclass
class TaskConfig:
    name: str
    metric: str
    max_source_positions: int
    max_target_positions: int
    generate: Dict[str, Any]
    variants: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    finetune: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    def generation_options(self, variant: Optional[str] = None) -> Dict[str, Any]:
        """``generate`` with ``variant``'s overrides applied."""
        if variant is None:
            return dict(self.generate)
        if variant not in self.variants:
            known = ", ".join(sorted(self.variants)) or "none"
            raise KeyError(f"{self.path}: no variant {variant!r} (known: {known})")
        return {**self.generate, **self.variants[variant]}


def option_args(options: Dict[str, Any]) -> List[str]:
    """``{"beam": 4, "fp16": true, "x": false}`` -> ``["--beam", "4", "--fp16"]``."""
    argv: List[str] = []
    for name, value in options.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is not False and value is not None:
            argv += [f"--{name}", str(value)]
    return argv


def resolve(config: str) -> Path:
    """A config path, or a bare task name looked up in the repository's ``configs/``."""
    path = Path(config)
    if not path.suffix and not path.is_file():
        path = CONFIG_DIR / f"{config}.yaml"
    return require_file(path, "task config")


def load_config(config: str) -> TaskConfig:
    """Read and check a task config (unknown keys and metrics are errors, not ignored)."""
    path = resolve(config)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ValueError(f"{path}: {where}not YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a task config (a YAML mapping)")
    try:
        task = TaskConfig(**raw, path=path)
    except TypeError as error:
        raise ValueError(f"{path}: {error}") from None
    if task.metric not in METRICS:
        raise ValueError(f"{path}: metric must be one of {METRICS}, not {task.metric!r}")
    return task
