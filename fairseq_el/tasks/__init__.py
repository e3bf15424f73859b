"""Tasks registered on import: ``el_language_modeling``."""

from fairseq_el.tasks.el_language_modeling import ELLanguageModelingTask

__all__ = ["ELLanguageModelingTask"]
