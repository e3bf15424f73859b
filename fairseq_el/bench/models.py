"""Build the model of one benchmark variant: stock fairseq (two caching regimes) or EL.

Variants, all with the same weights:

* ``stock-per-beam``: stock fairseq as ``transformer`` decodes: the encoder output and the
  encoder-decoder keys/values are held per hypothesis and reordered every step.
* ``stock-per-sentence``: stock fairseq as ``bart`` decodes: ``BARTModel.set_beam_size`` makes
  the encoder-decoder attention project and cache keys/values once per sentence.
* ``el``: EL encoder-decoder attention (nothing cached for the encoder side): ``--el-policy el``
  unless a model option names another (``el_policy=auto``, the package's default, is the
  configuration a user gets without options).
* ``el-sa``: ``el`` plus ``--el-self-attention`` (decoder layer inputs cached instead of K/V).

Both stock regimes are stock fairseq code: the per-sentence one is BART's own hook bound to the
model, the per-beam one is the model without that hook.
"""

import argparse
import types
from typing import Dict, Sequence, Tuple

import torch
from fairseq import tasks
from fairseq.models.bart import BARTModel
from fairseq.tasks.language_modeling import LanguageModelingTask
from fairseq.tasks.translation import TranslationTask

import fairseq_el  # noqa: F401  (registers the EL architectures)
from fairseq_el.bench.precision import DTYPES
from fairseq_el.bench.shapes import SHAPES, Config
from fairseq_el.models.architectures import el_arch, stock_arch
from fairseq_el.testing import lm_args, make_dictionary, translation_args

VARIANTS = ("stock-per-beam", "stock-per-sentence", "el", "el-sa")


def parse_model_options(items: Sequence[str]) -> Dict[str, object]:
    """``["el_policy=auto", "x=3"]`` -> ``{"el_policy": "auto", "x": 3}`` (ints/bools parsed)."""
    parsed: Dict[str, object] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"model option {item!r} is not name=value")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif raw.lstrip("-").isdigit():
            value = int(raw)
        parsed[name.replace("-", "_")] = value
    return parsed


def variant_arch(arch: str, variant: str) -> str:
    """The architecture ``variant`` runs for a model of ``arch`` (stock or EL)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return el_arch(arch) if variant.startswith("el") else stock_arch(arch)


def _random_model(config: Config, variant: str) -> Tuple[torch.nn.Module, object]:
    shape = SHAPES[config.shape]
    arch = variant_arch(shape.arch, variant)
    dictionary = make_dictionary(shape.vocab - 4)  # 4 specials: len == vocab
    if shape.is_lm:
        args = lm_args(arch, extra=shape.extra)
        task = LanguageModelingTask(args, dictionary, dictionary)
    else:
        args = translation_args(arch, extra=shape.extra)
        task = TranslationTask(args, dictionary, dictionary)
    _apply_options(args, config, variant)
    # EL models create the stock parameters in the stock order, so one seed gives every variant
    # the same weights (tests/test_benchmark.py checks it) without building a second model
    torch.manual_seed(config.seed)
    return task.build_model(args), task


def _checkpoint_model(config: Config, variant: str) -> Tuple[torch.nn.Module, object]:
    from fairseq_el.convert.checkpoint import checkpoint_arch, load_checkpoint, with_arch

    state = load_checkpoint(config.checkpoint)
    if state.get("args") is None:
        raise ValueError(f"{config.checkpoint}: only checkpoints with 'args' are supported here")
    args = with_arch(state, variant_arch(checkpoint_arch(state), variant))["args"]
    _apply_options(args, config, variant)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    model.load_state_dict(state["model"])
    return model, task


def _apply_options(args: argparse.Namespace, config: Config, variant: str) -> None:
    if variant.startswith("el"):
        args.el_policy = "el"  # the variant's meaning (see above), unless an option says otherwise
    for name, value in parse_model_options(config.model_options).items():
        setattr(args, name, value)
    if variant == "el-sa":
        args.el_self_attention = True


def build_variant(config: Config, variant: str) -> Tuple[torch.nn.Module, object]:
    """The model (eval mode, on device, in dtype) and task of ``variant`` for ``config``."""
    model, task = (_checkpoint_model if config.checkpoint else _random_model)(config, variant)
    if variant == "stock-per-sentence":
        model.set_beam_size = types.MethodType(BARTModel.set_beam_size, model)
    elif variant == "stock-per-beam":
        model.set_beam_size = types.MethodType(lambda self, beam: None, model)
    model = model.to(device=config.device, dtype=DTYPES[config.dtype])
    return model.eval(), task


def synthetic_sample(config: Config, vocab: int, eos: int, lm: bool) -> Dict:
    """``batch`` seeded random sources of exactly ``src_len`` tokens.

    A translation source ends with eos, as fairseq's datasets make it; a language-model prompt
    does not (the model continues it).
    """
    gen = torch.Generator().manual_seed(config.seed)
    body_len = config.src_len if lm else config.src_len - 1
    src = torch.randint(4, vocab, (config.batch, body_len), generator=gen)
    if not lm:
        src = torch.cat([src, torch.full((config.batch, 1), eos)], dim=1)
    lengths = torch.full((config.batch,), config.src_len, device=config.device)
    return {
        "id": torch.arange(config.batch),
        "nsentences": config.batch,
        "ntokens": int(src.numel()),
        "net_input": {"src_tokens": src.to(config.device), "src_lengths": lengths},
    }
