"""--task el_language_modeling: the shared prompt in one pass, the same tokens and scores, on
every device of the ``device`` fixture."""

import pytest
import torch
from fairseq import options

from fairseq_el.tasks.el_language_modeling import ELLanguageModelingTask, PromptSequenceGenerator
from fairseq_el.testing import build_language_model, make_dictionary, tiny_lm_args

from helpers import LM_SEARCHES, assert_hypos_equal, to_device

ARCH = "transformer_lm_gpt2_tiny"
SEARCH = LM_SEARCHES
VARIANTS = {
    "stock": (ARCH, []),
    "el": ("el_" + ARCH, []),
    "el_self_attention": ("el_" + ARCH, ["--el-self-attention"]),
    "grouped_query": ("el_" + ARCH, ["--decoder-kv-heads", "2"]),
}


def lm_sample(dictionary, lengths, seed=0):
    """Prompts of different lengths, right-padded as fairseq's LM datasets pad them."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [
        torch.randint(dictionary.nspecial, len(dictionary), (n,), generator=gen) for n in lengths
    ]
    tokens = torch.full((len(lengths), max(lengths)), dictionary.pad())
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    return {
        "id": torch.arange(len(lengths)),
        "net_input": {"src_tokens": tokens, "src_lengths": torch.tensor(lengths)},
        "target": tokens,
        "nsentences": len(lengths),
        "ntokens": int(sum(lengths)),
    }


def run(task, model, sample, argv, seq_gen_cls):
    parser = options.get_generation_parser(default_task="language_modeling")
    args = options.parse_args_and_arch(
        parser, ["<none>", "--max-len-a", "1", "--max-len-b", "5", *argv]
    )
    generator = task.build_generator([model], args, seq_gen_cls=seq_gen_cls)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        return task.inference_step(generator, [model], sample)


@pytest.mark.parametrize("search", list(SEARCH))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_pass_prompt_equals_token_by_token(variant, search, device):
    dictionary = make_dictionary(30)
    arch, extra = VARIANTS[variant]
    model, task, _ = build_language_model(
        arch, dictionary, extra=[*tiny_lm_args(dim=24, heads=4), *extra], seed=1
    )
    model = model.to(device)
    sample = to_device(lm_sample(dictionary, [7, 3, 5, 9], seed=2), device)
    reference = run(task, model, sample, SEARCH[search], None)  # stock SequenceGenerator
    one_pass = run(task, model, sample, SEARCH[search], PromptSequenceGenerator)
    diff = assert_hypos_equal(reference, one_pass)
    print(f"{variant} {search}: prompt in one pass == token by token, max score diff {diff:.2e}")


def test_the_shared_prompt_skips_the_decoder(monkeypatch, device):
    dictionary = make_dictionary(30)
    model, task, _ = build_language_model("el_" + ARCH, dictionary, extra=tiny_lm_args(), seed=1)
    model = model.to(device)
    calls = []
    original = model.decoder.forward
    monkeypatch.setattr(
        model.decoder, "forward", lambda *a, **k: calls.append(a[0].size(1)) or original(*a, **k)
    )
    sample = to_device(lm_sample(dictionary, [6, 4], seed=3), device)
    run(task, model, sample, ["--beam", "2"], PromptSequenceGenerator)
    # one pass over BOS + the 3 prompt tokens the shorter prompt shares with the longer one
    # (steps 0-3), then incremental steps from step 4 (5 tokens) on: none for steps 1-3
    assert calls[:2] == [4, 5] and calls == sorted(set(calls))


def test_task_is_registered_for_the_command_line():
    from fairseq.tasks import TASK_REGISTRY

    assert TASK_REGISTRY["el_language_modeling"] is ELLanguageModelingTask
