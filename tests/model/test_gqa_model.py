"""Grouped/multi-query decoders in the EL models: stock parity, beam search, converter, training.

A grouped-query model computes the same function as a stock model whose key/value heads are the
grouped ones repeated for the query heads of their group (:func:`repeat_kv_heads`), so stock
fairseq's beam search on that twin is the reference for the grouped model's beam search. Parity
runs on every device of the ``device`` fixture.
"""

import re
from typing import Dict, List

import pytest
import torch
from fairseq import checkpoint_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.tasks.language_modeling import LanguageModelingTask
from fairseq_cli import preprocess
from fairseq_cli import train as fairseq_train

from fairseq_el import USER_DIR
from fairseq_el.convert.checkpoint import save_checkpoint
from fairseq_el.convert.kv_heads import average_kv_heads, repeat_kv_heads
from fairseq_el.paths import DATA_DIR
from fairseq_el.testing import build_translation_model

from helpers import (
    OUTPUT_TOL,
    assert_hypos_equal,
    copy_to,
    generate,
    make_batch,
    make_dictionary,
    tiny_args,
    to_device,
)

HEADS, DIM = 4, 16
QG_DATA = DATA_DIR / "squad_qg_du2017"
BEAM = ["--beam", "4", "--max-len-a", "0", "--max-len-b", "8"]


def kv_args(kv_heads: int) -> List[str]:
    return [*tiny_args(dim=DIM, heads=HEADS), "--decoder-kv-heads", str(kv_heads)]


def gqa_and_stock_twin(arch: str, kv_heads: int, seed: int = 0):
    """A seeded ``el_<arch>`` with ``kv_heads`` and the stock ``arch`` computing the same."""
    dictionary = make_dictionary(20)
    gqa, task, _ = build_translation_model(
        "el_" + arch, dictionary, extra=kv_args(kv_heads), seed=seed
    )
    stock, _, _ = build_translation_model(arch, dictionary, extra=tiny_args(dim=DIM, heads=HEADS))
    stock.load_state_dict(repeat_kv_heads(gqa.state_dict(), HEADS, kv_heads))
    return gqa, stock, task, dictionary


def test_all_kv_heads_is_the_stock_model(device):
    dictionary = make_dictionary(20)
    plain, task, _ = build_translation_model(
        "el_transformer", dictionary, extra=tiny_args(), seed=3
    )
    full, _, _ = build_translation_model("el_transformer", dictionary, extra=kv_args(HEADS), seed=3)
    plain_state, full_state = plain.state_dict(), full.state_dict()
    assert list(plain_state) == list(full_state)
    assert all(torch.equal(plain_state[k], full_state[k]) for k in plain_state)
    plain, full = plain.to(device), full.to(device)
    sample = to_device(make_batch(dictionary, [6, 3, 8], seed=1), device)
    with torch.no_grad():
        assert torch.equal(plain(**sample["net_input"])[0], full(**sample["net_input"])[0])
    for a, b in zip(generate(task, plain, sample, BEAM), generate(task, full, sample, BEAM)):
        for ha, hb in zip(a, b):
            assert torch.equal(ha["tokens"], hb["tokens"]) and torch.equal(ha["score"], hb["score"])


@pytest.fixture(scope="module")
def trained_gqa():
    """Grouped models (kv_heads 1 and 2) trained to reverse their input, so beams differ."""
    models = {}
    for kv_heads in (1, 2):
        gqa, _, task, dictionary = gqa_and_stock_twin("transformer", kv_heads, seed=kv_heads)
        gqa.train()
        optimizer = torch.optim.Adam(gqa.parameters(), lr=3e-3)
        for step in range(150):
            lengths = torch.randint(3, 9, (32,), generator=torch.Generator().manual_seed(step))
            sample = make_batch(dictionary, lengths.tolist(), seed=step)
            logits, _ = gqa(**sample["net_input"])
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), sample["target"].view(-1),
                ignore_index=dictionary.pad(),
            )  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"kv_heads={kv_heads}: trained to loss {loss.item():.3f}")
        models[kv_heads] = gqa.eval(), task, dictionary
    return models


def twin_of(gqa, kv_heads: int, dictionary):
    stock, _, _ = build_translation_model(
        "transformer", dictionary, extra=tiny_args(dim=DIM, heads=HEADS)
    )
    stock.load_state_dict(repeat_kv_heads(gqa.state_dict(), HEADS, kv_heads))
    return stock


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_beam_search_equals_stock_twin_and_full_rescoring(trained_gqa, kv_heads, device):
    trained, task, dictionary = trained_gqa[kv_heads]
    gqa = copy_to(trained, device)
    sample = to_device(make_batch(dictionary, [6, 3, 8, 5], seed=1234), device)
    hypos = generate(task, gqa, sample, BEAM)
    assert len({tuple(h["tokens"].tolist()) for h in hypos[0]}) == 4  # distinct hypotheses
    stock = twin_of(trained, kv_heads, dictionary).to(device)
    twin_diff = assert_hypos_equal(generate(task, stock, sample, BEAM), hypos)

    rescore_diff = 0.0
    eos = dictionary.eos()
    net_input = sample["net_input"]
    with torch.no_grad():
        for i, sentence in enumerate(hypos):
            src_len = int(net_input["src_lengths"][i])
            src = net_input["src_tokens"][i : i + 1, -src_len:]  # left padding removed
            for hypo in sentence:
                tokens = hypo["tokens"].unsqueeze(0)  # (1, T), ends in eos
                prev = torch.cat([tokens.new_tensor([[eos]]), tokens[:, :-1]], dim=1)  # (1, T)
                logits, _ = gqa(src, net_input["src_lengths"][i : i + 1], prev)
                lprobs = gqa.get_normalized_probs((logits, None), log_probs=True)  # (1, T, V)
                full = lprobs[0].gather(1, tokens[0].unsqueeze(1)).squeeze(1)  # (T,)
                diff = float((full - hypo["positional_scores"]).abs().max())
                rescore_diff = max(rescore_diff, diff)
    print(f"kv_heads={kv_heads}: beam scores vs stock twin {twin_diff:.2e}, "
          f"vs full re-scoring {rescore_diff:.2e}")  # fmt: skip
    assert rescore_diff <= OUTPUT_TOL


@pytest.mark.parametrize("kv_heads", [1, 2, HEADS])
def test_el_bart_beam_search_equals_stock_twin(kv_heads, device):
    gqa, stock, task, dictionary = gqa_and_stock_twin("bart_base", kv_heads, seed=2)
    gqa, stock = gqa.to(device), stock.to(device)
    sample = to_device(make_batch(dictionary, [6, 3, 8], seed=7), device)
    assert_hypos_equal(generate(task, stock, sample, BEAM), generate(task, gqa, sample, BEAM))


@pytest.mark.parametrize("kv_heads", [1, 2, HEADS])
def test_cache_holds_kv_heads_per_position(kv_heads, device):
    """N heads per position, in the copy-free cache: views of a buffer with spare room, for
    every N (with all H heads too: the stock model, bit for bit, with the default's cache)."""
    gqa, _, _, dictionary = gqa_and_stock_twin("transformer", kv_heads)
    gqa = gqa.to(device)
    sample = to_device(make_batch(dictionary, [6, 3], seed=1), device)
    net_input = sample["net_input"]
    prev = net_input["prev_output_tokens"][:, :3].repeat_interleave(4, dim=0)  # (B*beam, 3)
    state: Dict = {}
    with torch.no_grad():
        enc = gqa.encoder(net_input["src_tokens"], net_input["src_lengths"])
        for t in range(3):
            gqa.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
    head_dim = DIM // HEADS
    for layer in gqa.decoder.layers:
        cached = layer.self_attn._get_input_buffer(state)
        assert layer.self_attn.in_place_cache
        assert cached["prev_key"].shape == (8, kv_heads, 3, head_dim)
        assert cached["prev_value"].shape == (8, kv_heads, 3, head_dim)
        room = cached["prev_key"].stride(1) // cached["prev_key"].stride(2)  # positions
        assert room == 8 and "prev_key_padding_mask" not in cached  # a DecodingCache
        cross = layer.encoder_attn._get_input_buffer(state)
        if "prev_key" in cross:  # EL caches no encoder-side keys at all
            assert cross["prev_key"].shape[1:] == (kv_heads, 7, head_dim)


def test_averaged_checkpoint_loads_and_generates(tmp_path):
    dictionary = make_dictionary(20)
    stock, task, args = build_translation_model(
        "el_transformer", dictionary, extra=tiny_args(), seed=5
    )
    with pytest.warns(UserWarning, match="needs uptraining"):
        state = average_kv_heads(stock.state_dict(), HEADS, 1)
    args.decoder_kv_heads = 1
    mqa, _, _ = build_translation_model("el_transformer", dictionary, extra=kv_args(1), seed=9)
    mqa.load_state_dict(state)  # strict
    save_checkpoint(mqa, args, str(tmp_path / "mqa.pt"))
    models, _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "mqa.pt")], task=task)
    assert models[0].decoder.layers[0].self_attn.k_proj.weight.shape == (DIM // HEADS, DIM)
    sample = make_batch(dictionary, [6, 3], seed=2)
    hypos = generate(task, models[0].eval(), sample, BEAM)
    assert all(len(sentence) == 4 and sentence[0]["tokens"].numel() > 0 for sentence in hypos)


def test_fairseq_train_lowers_mqa_loss(tmp_path):
    """A few fairseq-train updates of a multi-query model on QG pairs lower the training loss."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for lang, name in (("src", "src-test.txt"), ("tgt", "tgt-test.txt")):
        lines = open(QG_DATA / name, encoding="utf-8").readlines()[:64]
        (raw / f"train.{lang}").write_text("".join(lines), encoding="utf-8")
    data = tmp_path / "bin"
    preprocess.main(options.get_preprocessing_parser().parse_args([
        "-s", "src", "-t", "tgt", "--trainpref", str(raw / "train"), "--destdir", str(data),
        "--joined-dictionary", "--workers", "1",
    ]))  # fmt: skip
    argv = [
        str(data), "--task", "translation", "-s", "src", "-t", "tgt", "--user-dir", USER_DIR,
        "--arch", "el_transformer", *kv_args(1), "--share-all-embeddings",
        "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "800", "--max-update", "8",
        "--cpu", "--no-save", "--disable-validation", "--log-format", "json",
        "--log-interval", "1", "--log-file", str(tmp_path / "train.log"), "--seed", "1",
        "--num-workers", "0",
    ]  # fmt: skip
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    fairseq_train.main(args)
    log = (tmp_path / "train.log").read_text(encoding="utf-8")
    pairs = re.findall(r'"loss": "([\d.]+)".*?"num_updates": "(\d+)"', log)  # train_inner lines
    losses = [loss for _, loss in sorted({int(u): float(x) for x, u in pairs}.items())]
    print(f"MQA fairseq-train losses: {losses}")
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.5


def lm(arch: str, extra: List[str], seed: int):
    """A seeded tiny decoder-only LM (``transformer_lm`` family) over a 20-word dictionary."""
    dictionary = make_dictionary(20)
    parser = options.get_training_parser(default_task="language_modeling")
    argv = ["<none>", "--task", "language_modeling", "--arch", arch, "--decoder-layers", "2",
            "--decoder-embed-dim", str(DIM), "--decoder-ffn-embed-dim", "32",
            "--decoder-attention-heads", str(HEADS), "--dropout", "0", *extra]  # fmt: skip
    args = options.parse_args_and_arch(parser, argv)
    task = LanguageModelingTask(args, dictionary, dictionary)
    torch.manual_seed(seed)
    cfg = convert_namespace_to_omegaconf(args)  # as fairseq-train builds it
    return task.build_model(cfg.model).eval(), dictionary


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_el_transformer_lm_incremental_equals_full_and_stock_twin(kv_heads, device):
    gqa, dictionary = lm("el_transformer_lm", ["--decoder-kv-heads", str(kv_heads)], seed=1)
    stock, _ = lm("transformer_lm", [], seed=2)
    stock.load_state_dict(repeat_kv_heads(gqa.state_dict(), HEADS, kv_heads))
    gqa, stock = gqa.to(device), stock.to(device)
    tokens = torch.randint(dictionary.nspecial, len(dictionary), (3, 7)).to(device)  # (B, T)
    state: Dict = {}
    with torch.no_grad():
        full, _ = gqa(tokens)  # (B, T, V)
        twin, _ = stock(tokens)
        steps = [gqa.decoder(tokens[:, : t + 1], incremental_state=state)[0] for t in range(7)]
    d_inc = float((torch.cat(steps, dim=1) - full).abs().max())
    d_twin = float((twin - full).abs().max())
    print(
        f"el_transformer_lm kv_heads={kv_heads}: |incr-full|={d_inc:.2e} |stock twin|={d_twin:.2e}"
    )
    assert d_inc <= OUTPUT_TOL and d_twin <= OUTPUT_TOL
    for layer in gqa.decoder.layers:
        assert layer.self_attn._get_input_buffer(state)["prev_key"].shape == (
            3, kv_heads, 7, DIM // HEADS
        )  # fmt: skip
