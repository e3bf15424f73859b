"""Shared builders for the parity tests: tiny models, batches and generation; the tolerances."""

import argparse
import copy
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from fairseq import utils
from fairseq.data import Dictionary, LanguagePairDataset
from fairseq.models import FairseqModel
from fairseq.tasks import FairseqTask
from fairseq.tasks.translation import TranslationTask

from fairseq_el.testing import (
    build_translation_model,
    generation_args,  # noqa: F401  (re-exported for the tests)
    make_dictionary,
    tiny_args,
)

# fp32 parity, stock vs EL on the same weights: hypothesis scores and log-probabilities (as
# fairseq's test_sequence_generator), and module outputs and attention weights
SCORE_TOL = 1e-4
OUTPUT_TOL = 1e-5


def el_twin(
    stock: FairseqModel,
    arch: str,
    dictionary: Dictionary,
    extra: Sequence[str] = (),
    seed: int = 0,
    build: Callable[..., Tuple] = build_translation_model,
) -> Tuple[FairseqModel, FairseqTask, argparse.Namespace]:
    """``build``'s EL model of the stock ``arch`` (``extra``: its options, EL ones included)
    holding ``stock``'s very state dict; (model, task, args) as ``build`` returns them."""
    el, task, args = build("el_" + arch, dictionary, extra=extra, seed=seed)
    el.load_state_dict(stock.state_dict())  # strict: stock parameter names load unchanged
    return el, task, args


def stock_and_el(
    arch: str,
    dictionary: Dictionary,
    extra: Sequence[str] = (),
    seed: int = 0,
    el_extra: Sequence[str] = (),
) -> Tuple[FairseqModel, FairseqModel, TranslationTask]:
    """A seeded stock model and its EL twin (with ``el_extra`` too) holding the same state dict."""
    stock, task, _ = build_translation_model(arch, dictionary, extra=extra, seed=seed)
    el, _, _ = el_twin(stock, arch, dictionary, [*extra, *el_extra], seed=seed + 1)
    return stock, el, task


def make_batch(dictionary: Dictionary, lengths: Sequence[int], seed: int = 0) -> Dict:
    """A collated translation batch with sources of the given lengths (left-padded, as fairseq)."""
    gen = torch.Generator().manual_seed(seed)
    low, high = dictionary.nspecial, len(dictionary)  # any symbol but the specials
    words = [torch.randint(low, high, (n,), generator=gen) for n in lengths]
    srcs = [torch.cat([w, torch.tensor([dictionary.eos()])]) for w in words]
    tgts = [s.flip(0)[1:].tolist() + [dictionary.eos()] for s in srcs]
    tgts = [torch.tensor(t) for t in tgts]
    dataset = LanguagePairDataset(
        srcs, [len(s) for s in srcs], dictionary, tgts, [len(t) for t in tgts], dictionary
    )
    return dataset.collater([dataset[i] for i in range(len(srcs))])


def to_device(sample: Dict, device: str) -> Dict:
    """``sample`` with every tensor in it moved to ``device``."""
    return utils.apply_to_sample(lambda t: t.to(device), sample)


def copy_to(model: FairseqModel, device: str) -> FairseqModel:
    """A copy of ``model`` on ``device``: a session or module fixture stays where it is."""
    return copy.deepcopy(model).to(device)


def train_step(
    model: FairseqModel, optimizer: torch.optim.Optimizer, sample: Dict, pad: int
) -> torch.Tensor:
    """One teacher-forced cross-entropy update of ``model`` on ``sample``; returns the loss."""
    logits, _ = model(**sample["net_input"])
    loss = torch.nn.functional.cross_entropy(
        logits.view(-1, logits.size(-1)), sample["target"].view(-1), ignore_index=pad
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def generate(task: TranslationTask, model: FairseqModel, sample: Dict, argv: Sequence[str]):
    """Run ``task``'s generator for ``argv`` (fairseq-generate options) as fairseq-generate does."""
    args = generation_args(argv)
    generator = task.build_generator([model], args)
    prefix_tokens = None
    if args.prefix_size > 0:
        prefix_tokens = sample["target"][:, : args.prefix_size]
    torch.manual_seed(args.seed)
    with torch.no_grad():
        return task.inference_step(generator, [model], sample, prefix_tokens=prefix_tokens)


def assert_hypos_equal(stock: List, el: List) -> float:
    """Identical tokens, scores within SCORE_TOL; returns the max score difference."""
    max_diff = 0.0
    assert len(stock) == len(el) and stock, f"{len(stock)} vs {len(el)} sentences"
    for i, (hs, he) in enumerate(zip(stock, el)):
        assert len(hs) == len(he) and hs, f"sentence {i}: {len(hs)} vs {len(he)} hypotheses"
        for j, (a, b) in enumerate(zip(hs, he)):
            assert torch.equal(a["tokens"], b["tokens"]), (
                f"sentence {i} hypothesis {j}: stock {a['tokens'].tolist()} "
                f"!= EL {b['tokens'].tolist()}"
            )
            for key in ("score", "positional_scores"):
                diff = float((a[key] - b[key]).abs().max())
                assert diff <= SCORE_TOL, f"sentence {i} hypothesis {j}: {key} differs by {diff}"
                max_diff = max(max_diff, diff)
            alignments = [h.get("alignment") for h in (a, b)]
            if isinstance(alignments[0], list):  # --print-alignment: (source, target) pairs
                assert alignments[0] == alignments[1], f"sentence {i}: alignment differs"
            if a.get("attention") is not None and a["attention"].numel() > 0:
                att_a, att_b = a["attention"], b["attention"]  # (S, T), sources left-padded
                src = min(att_a.size(0), att_b.size(0))
                for att in (att_a, att_b):
                    assert float(att[:-src].abs().sum()) == 0.0, "attention on padding"
                diff = float((att_a[-src:] - att_b[-src:]).abs().max())
                assert diff <= OUTPUT_TOL, f"sentence {i}: attention differs by {diff}"
    return max_diff


__all__ = [
    "OUTPUT_TOL",
    "SCORE_TOL",
    "assert_hypos_equal",
    "copy_to",
    "el_twin",
    "generate",
    "make_batch",
    "make_dictionary",
    "stock_and_el",
    "tiny_args",
    "to_device",
    "train_step",
]


def exit_code(main, argv: Sequence[str]) -> int:
    """The exit code of a console script's ``main`` called in-process (0 if it returns)."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return code or 0


# fairseq-generate output: H- and P- lines of stock and EL runs
def parse(stdout: str, prefix: str) -> Dict[str, List[Tuple[List[float], str]]]:
    """``H-12\\t-1.23\\ttext`` -> {"12": [([-1.23], "text")]}; P- lines: ([scores], "")."""
    lines: Dict[str, List[Tuple[List[float], str]]] = {}
    for line in stdout.splitlines():
        if not line.startswith(prefix + "-"):
            continue
        fields = line.split("\t")
        sid = fields[0][len(prefix) + 1 :]
        if prefix == "H":
            lines.setdefault(sid, []).append(([float(fields[1])], fields[2]))
        else:
            lines.setdefault(sid, []).append(([float(x) for x in fields[1].split()], ""))
    return lines


def assert_same_output(stock_out: str, el_out: str) -> int:
    count = 0
    for prefix in ("H", "P"):
        stock, el = parse(stock_out, prefix), parse(el_out, prefix)
        assert stock.keys() == el.keys() and stock, f"{prefix}- lines: different sentence ids"
        for sid in stock:
            for (s_nums, s_text), (e_nums, e_text) in zip(stock[sid], el[sid], strict=True):
                assert s_text == e_text, f"{prefix}-{sid}: {s_text!r} != {e_text!r}"
                assert len(s_nums) == len(e_nums)
                # H- scores are printed at full precision; P- scores at 4 decimals, so two
                # rounded values of nearly equal numbers may differ by one printed unit
                tolerance = SCORE_TOL if prefix == "H" else SCORE_TOL + 1e-9
                assert max(abs(a - b) for a, b in zip(s_nums, e_nums)) <= tolerance, (
                    f"{prefix}-{sid}"
                )
                count += 1
    return count


# search options of the decoder-only parity cases (beam with nbest, greedy, sampling, diverse)
LM_SEARCHES = {
    "beam": ["--beam", "4", "--nbest", "2"],
    "greedy": ["--beam", "1"],
    "sampling": ["--sampling", "--sampling-topk", "5", "--beam", "2", "--nbest", "2"],
    "diverse_beam": ["--beam", "4", "--diverse-beam-groups", "2"],
}
