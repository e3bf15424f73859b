"""What a conversion builds a fairseq model from: training arguments as fairseq's parser fills
them (so every architecture default applies), and a placeholder dictionary of a given size."""

import argparse
from typing import Sequence

from fairseq import options
from fairseq.data import Dictionary


def make_dictionary(num_words: int) -> Dictionary:
    """A dictionary of ``num_words`` symbols ``w0 .. w{n-1}`` after fairseq's 4 specials."""
    dictionary = Dictionary()
    for i in range(num_words):
        dictionary.add_symbol(f"w{i}")
    return dictionary


def translation_args(
    arch: str, data: str = "<none>", extra: Sequence[str] = ()
) -> argparse.Namespace:
    """Training arguments for ``--task translation`` as fairseq's parser fills them."""
    parser = options.get_training_parser(default_task="translation")
    argv = [data, "--arch", arch, "--task", "translation", "-s", "source", "-t", "target"]
    return options.parse_args_and_arch(parser, argv + list(extra))


def lm_args(arch: str, data: str = "<none>", extra: Sequence[str] = ()) -> argparse.Namespace:
    """Training arguments for ``--task language_modeling`` as fairseq's parser fills them."""
    parser = options.get_training_parser(default_task="language_modeling")
    argv = [data, "--arch", arch, "--task", "language_modeling"]
    return options.parse_args_and_arch(parser, argv + list(extra))
