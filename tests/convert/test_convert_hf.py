"""Hugging Face -> fairseq conversion: same logits and greedy tokens as HF, refusals named.

Every model is a tiny seeded random Hugging Face model (nothing is downloaded), with all
weights, layer norms included, drawn at random so that a misplaced tensor shows.
"""

import json
import random
import subprocess
import sys

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

from fairseq_el import USER_DIR
from fairseq_el.convert.cli import convert_hf_main as cli_main
from fairseq_el.convert.hf_common import ConversionError, import_transformers

try:
    transformers = import_transformers()
except ConversionError as err:  # the optional "hf" extra; CI installs it
    pytest.skip(f"transformers (the 'hf' extra) is not installed: {err}", allow_module_level=True)

from fairseq_el.convert.hf_bart import convert_bart  # noqa: E402
from fairseq_el.convert.hf_gpt2 import convert_gpt2  # noqa: E402

from helpers import SCORE_TOL, exit_code  # noqa: E402

VOCAB, EOS = 60, 59  # GPT-2: the last id plays <|endoftext|>, as 50256 does in GPT-2
NEW_TOKENS = 12
GPT2_PROMPTS = [[5, 17, 3, 40], [0, 58, 58, 21]]
BART_SOURCES = [[0, 5, 17, 9, 40, 33, 2], [0, 60, 4, 4, 12, 2]]


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (HF's init leaves layer norms at 1/0, hiding mix-ups)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm_weight = ("ln" in name or "norm" in name) and name.endswith("weight")
            p.copy_(1 + 0.2 * noise if is_norm_weight else 0.3 * noise)
    return model.eval()


def gpt2_model(seed: int = 0, **overrides) -> torch.nn.Module:
    config = dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                  bos_token_id=EOS, eos_token_id=EOS)  # fmt: skip
    config.update(overrides)
    return randomize(transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)), seed)


def gpt2_dict() -> Dictionary:
    """Like fairseq's GPT-2 dict.txt: ids as strings in frequency order, eos id and padding."""
    symbols = [str(i) for i in range(VOCAB)]
    random.Random(0).shuffle(symbols)
    dictionary = Dictionary()
    for count, symbol in enumerate(symbols + ["madeupword0000"]):
        dictionary.add_symbol(symbol, n=VOCAB - count)
    return dictionary


def bart_model(seed: int = 0, **overrides) -> torch.nn.Module:
    config = dict(vocab_size=61, max_position_embeddings=32, d_model=32, encoder_layers=2,
                  decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=48, decoder_ffn_dim=48, scale_embedding=True)  # fmt: skip
    config.update(overrides)
    return randomize(
        transformers.BartForConditionalGeneration(transformers.BartConfig(**config)), seed
    )


def bart_dict(size: int = 56) -> Dictionary:
    """A fairseq BART-style dictionary: 4 specials + ``size`` symbols (+ <mask> added later)."""
    dictionary = Dictionary()
    for i in range(size):
        dictionary.add_symbol(str(i), n=size - i)
    return dictionary


def fs_index(dictionary: Dictionary, token: int) -> int:
    """fairseq index of a GPT-2 id: its dict.txt symbol, or </s> for <|endoftext|>."""
    return dictionary.eos() if token == EOS else dictionary.index(str(token))


def assert_same_greedy(fs_tokens, hf_tokens, eos: int) -> None:
    """fairseq ends with eos, forced after the last step if HF's output did not end on it."""
    fs_tokens, hf_tokens = list(fs_tokens), list(hf_tokens)
    assert hf_tokens, "HF generated nothing"
    expected = hf_tokens if hf_tokens[-1] == eos else hf_tokens + [eos]
    assert fs_tokens == expected


def hf_gpt2_greedy(hf, prompt):
    """HF's greedy continuation (GPT-2 ids) of <|endoftext|> + ``prompt``, as fairseq sees it."""
    hf_in = torch.tensor([[EOS] + prompt])
    out = hf.generate(hf_in, attention_mask=torch.ones_like(hf_in), do_sample=False, num_beams=1,
                      max_new_tokens=NEW_TOKENS, min_new_tokens=1, eos_token_id=EOS,
                      pad_token_id=EOS)  # fmt: skip
    return out[0, hf_in.size(1) :].tolist()


def hf_bart_greedy(hf, source):
    """HF's greedy output ids after the decoder start, with fairseq's pad ban and no extras."""
    src = torch.tensor([source])
    out = hf.generate(src, attention_mask=torch.ones_like(src), do_sample=False, num_beams=1,
                      max_new_tokens=NEW_TOKENS, min_new_tokens=1, decoder_start_token_id=2,
                      eos_token_id=2, pad_token_id=1, forced_bos_token_id=None,
                      forced_eos_token_id=None, no_repeat_ngram_size=0,
                      suppress_tokens=[1])  # fmt: skip
    return out[0, 1:].tolist()


@pytest.fixture(scope="module")
def gpt2():
    hf = gpt2_model()
    return hf, convert_gpt2(hf, gpt2_dict())


@pytest.fixture(scope="module")
def bart():
    hf = bart_model()
    return hf, convert_bart(hf, bart_dict())


def test_gelu_variants_match_fairseq():
    from fairseq.modules.gelu import gelu, gelu_accurate
    from transformers.activations import ACT2FN

    x = torch.linspace(-8, 8, 2001)
    assert torch.allclose(ACT2FN["gelu_new"](x), gelu_accurate(x), atol=1e-6)
    assert torch.allclose(ACT2FN["gelu"](x), gelu(x), atol=1e-6)


def test_gpt2_logits_match(gpt2):
    hf, converted = gpt2
    d = converted.dictionary
    hf_tokens = torch.tensor([[EOS] + p for p in GPT2_PROMPTS])  # fairseq's LM starts with </s>
    fs_tokens = torch.tensor([[fs_index(d, t) for t in row] for row in hf_tokens.tolist()])
    with torch.no_grad():
        hf_logits = hf(hf_tokens).logits
        fs_logits, _ = converted.model(fs_tokens)
    columns = [fs_index(d, t) for t in range(VOCAB)]
    diff = (fs_logits[..., columns] - hf_logits).abs().max().item()
    print(f"GPT-2 max |logit diff| {diff:.2e}")
    assert diff < SCORE_TOL
    # the rows GPT-2 has no token for never compete: same log-probabilities over GPT-2's tokens
    lprob_diff = fs_logits.log_softmax(-1)[..., columns] - hf_logits.log_softmax(-1)
    assert lprob_diff.abs().max() < SCORE_TOL
    extras = [i for i in range(len(d)) if i not in set(columns)]
    assert [d[i] for i in extras] == ["<s>", "<pad>", "<unk>", str(EOS), "madeupword0000"]
    assert fs_logits[..., extras].max() < hf_logits.min() - 50


def test_gpt2_default_dictionary_is_id_order():
    hf = gpt2_model(seed=1)
    converted = convert_gpt2(hf)
    d = converted.dictionary
    assert [d[i] for i in range(4, len(d))] == [str(i) for i in range(VOCAB - 1)]
    tokens = [EOS] + GPT2_PROMPTS[0]
    with torch.no_grad():
        hf_logits = hf(torch.tensor([tokens])).logits
        fs_logits, _ = converted.model(torch.tensor([[fs_index(d, t) for t in tokens]]))
    columns = [fs_index(d, t) for t in range(VOCAB)]
    assert (fs_logits[..., columns] - hf_logits).abs().max() < SCORE_TOL


def test_gpt2_greedy_matches(gpt2):
    hf, converted = gpt2
    d, task = converted.dictionary, converted.task
    for prompt in GPT2_PROMPTS:
        generator = SequenceGenerator(
            [converted.model], d, beam_size=1, max_len_b=len(prompt) + NEW_TOKENS
        )
        src = torch.tensor([[fs_index(d, t) for t in prompt]])
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(prompt)])}}
        fs_out = task.inference_step(generator, [converted.model], sample)[0][0]["tokens"]
        assert fs_out[: len(prompt)].tolist() == src[0].tolist()
        hf_new = [fs_index(d, t) for t in hf_gpt2_greedy(hf, prompt)]
        assert_same_greedy(fs_out[len(prompt) :].tolist(), hf_new, d.eos())


def bart_logits(hf, model, source):
    src = torch.tensor([source])
    prev = torch.tensor([[2, 0, 7, 8, 30, 60]])
    with torch.no_grad():
        hf_logits = hf(input_ids=src, decoder_input_ids=prev).logits
        fs_logits, _ = model(src, torch.tensor([src.size(1)]), prev)
    return fs_logits, hf_logits


def test_bart_logits_match(bart):
    hf, converted = bart
    assert converted.dictionary[60] == "<mask>" and len(converted.dictionary) == 61
    diff = max(
        (fs - hf_).abs().max().item()
        for fs, hf_ in (bart_logits(hf, converted.model, s) for s in BART_SOURCES)
    )
    print(f"BART max |logit diff| {diff:.2e}")
    assert diff < SCORE_TOL


def test_bart_greedy_matches(bart):
    hf, converted = bart
    d = converted.dictionary
    generator = SequenceGenerator([converted.model], d, beam_size=1, max_len_b=NEW_TOKENS)
    for source in BART_SOURCES:
        src = torch.tensor([source])
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(source)])}}
        fs_out = converted.task.inference_step(generator, [converted.model], sample)[0][0]
        assert_same_greedy(fs_out["tokens"].tolist(), hf_bart_greedy(hf, source), d.eos())


@pytest.mark.parametrize("kind", ["gpt2", "bart"])
def test_cli_checkpoint_loads_in_fairseq(kind, tmp_path, capsys):
    hf = gpt2_model(seed=2) if kind == "gpt2" else bart_model(seed=2, scale_embedding=False)
    hf.save_pretrained(tmp_path / "hf")
    d = gpt2_dict() if kind == "gpt2" else bart_dict()
    d.save(str(tmp_path / "dict.txt"))
    out = tmp_path / "out"
    cli_main(["--hf-dir", str(tmp_path / "hf"), "--out-dir", str(out),
              "--dict", str(tmp_path / "dict.txt")])  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(out / "model.pt")])
    model = models[0].eval()
    assert task.source_dictionary.symbols == Dictionary.load(str(out / "dict.txt")).symbols
    if kind == "gpt2":
        tokens = [EOS] + GPT2_PROMPTS[0]
        fs_d = task.source_dictionary
        with torch.no_grad():
            hf_logits = hf(torch.tensor([tokens])).logits
            fs_logits, _ = model(torch.tensor([[fs_index(fs_d, t) for t in tokens]]))
        fs_logits = fs_logits[..., [fs_index(fs_d, t) for t in range(VOCAB)]]
    else:
        fs_logits, hf_logits = bart_logits(hf, model, BART_SOURCES[0])
    assert (fs_logits - hf_logits).abs().max() < SCORE_TOL


@pytest.mark.slow  # runs the real CLI in a subprocess
@pytest.mark.parametrize("kind", ["gpt2", "bart"])
def test_fairseq_interactive_generates_hf_greedy_tokens(kind, tmp_path):
    """What a user runs: fairseq-interactive on the converted folder (input as dict symbols)."""
    gpt2 = kind == "gpt2"
    hf = gpt2_model() if gpt2 else bart_model()
    hf.save_pretrained(tmp_path / "hf")
    d = gpt2_dict() if gpt2 else bart_dict()
    d.save(str(tmp_path / "dict.txt"))
    out = tmp_path / "out"
    cli_main(["--hf-dir", str(tmp_path / "hf"), "--out-dir", str(out),
              "--dict", str(tmp_path / "dict.txt")])  # fmt: skip
    if gpt2:
        prompt = GPT2_PROMPTS[1]
        line = " ".join(map(str, prompt))  # dict symbols are GPT-2 ids
        expected = prompt + [t for t in hf_gpt2_greedy(hf, prompt) if t != EOS]
        task = ["--task", "language_modeling", "--max-len-b", str(len(prompt) + NEW_TOKENS)]
    else:
        line = "5 17 9 40"
        source = [d.index(s) for s in line.split()] + [d.eos()]  # fairseq appends </s>
        expected = [d[t] for t in hf_bart_greedy(hf, source) if t != d.eos()]
        task = ["-s", "source", "-t", "target", "--max-len-b", str(NEW_TOKENS)]
    run = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.interactive", str(out), "--path",
         str(out / "model.pt"), "--user-dir", USER_DIR, "--cpu", "--beam", "1", *task],
        input=line + "\n", capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    hypo = next(x for x in run.stdout.splitlines() if x.startswith("H-0")).split("\t")[2]
    assert hypo.split() == [str(t) for t in expected]


GPT2_REFUSED = [
    ("activation_function", "silu"),
    ("scale_attn_weights", False),
    ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True),
    ("add_cross_attention", True),
    ("tie_word_embeddings", False),
    ("layer_norm_epsilon", 1e-6),
]


@pytest.mark.parametrize("field,value", GPT2_REFUSED)
def test_gpt2_refuses(field, value):
    with pytest.raises(ConversionError, match=field):
        convert_gpt2(gpt2_model(**{field: value}), gpt2_dict())


def test_gpt2_refuses_a_dictionary_of_another_model():
    small = Dictionary()
    for i in range(VOCAB - 2):
        small.add_symbol(str(i))
    with pytest.raises(ConversionError, match="lacks 1 GPT-2 ids"):
        convert_gpt2(gpt2_model(), small)
    small.add_symbol("50256")
    with pytest.raises(ConversionError, match="not a GPT-2 id below vocab_size"):
        convert_gpt2(gpt2_model(), small)


def test_gpt2_refuses_untrained_final_norm():
    hf = gpt2_model()
    with torch.no_grad():
        hf.transformer.ln_f.bias.zero_()
    with pytest.raises(ConversionError, match="transformer.ln_f.bias"):
        convert_gpt2(hf, gpt2_dict())


BART_REFUSED = [
    ("activation_function", "silu"),
    ("normalize_before", True),
    ("add_final_layer_norm", True),
    ("tie_word_embeddings", False),
    ("pad_token_id", 0),
    ("decoder_start_token_id", 0),
]


@pytest.mark.parametrize("field,value", BART_REFUSED)
def test_bart_refuses(field, value):
    with pytest.raises(ConversionError, match=field):
        convert_bart(bart_model(**{field: value}), bart_dict())


def test_bart_refuses_logits_bias_vocab_mismatch_mbart_and_missing_dict():
    hf = bart_model()
    with torch.no_grad():
        hf.final_logits_bias.fill_(0.5)
    with pytest.raises(ConversionError, match="final_logits_bias"):
        convert_bart(hf, bart_dict())
    with pytest.raises(ConversionError, match="vocab_size"):
        convert_bart(bart_model(), bart_dict(50))
    with pytest.raises(ConversionError, match="--dict"):
        convert_bart(bart_model(), None)
    mbart = transformers.MBartForConditionalGeneration(
        transformers.MBartConfig(vocab_size=61, d_model=32, encoder_layers=1, decoder_layers=1,
                                 encoder_ffn_dim=48, decoder_ffn_dim=48,
                                 encoder_attention_heads=4, decoder_attention_heads=4)
    )  # fmt: skip
    with pytest.raises(ConversionError, match="model_type='mbart'"):
        convert_bart(mbart, bart_dict())


def test_non_hf_directory_is_refused(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"not a Hugging Face folder")
    argv = ["--hf-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    assert exit_code(cli_main, argv) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert exit_code(cli_main, argv) == 2
    assert "model_type='t5'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
