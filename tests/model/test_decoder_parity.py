"""Tier 2, decoder parity and decoding state: incremental == full, batching changes nothing; on
every device of the ``device`` fixture."""

import pytest
import torch
from fairseq.sequence_generator import EnsembleModel

from fairseq_el.attention.cache import RUN, hypotheses
from fairseq_el.models.encoder import ROW_SENTENCE

from helpers import (
    OUTPUT_TOL,
    assert_hypos_equal,
    copy_to,
    el_twin,
    generate,
    make_batch,
    make_dictionary,
    stock_and_el,
    tiny_args,
    to_device,
)


@pytest.mark.parametrize("arch", ["transformer", "bart_base"])
@pytest.mark.parametrize("beam", [1, 3])
def test_incremental_equals_full_forward(arch, beam, device):
    """EL decoding step by step, encoder output once per sentence == stock full forward."""
    dictionary = make_dictionary(20)
    stock, el, _ = stock_and_el(arch, dictionary, tiny_args(dim=15, heads=5), seed=4)
    stock, el = stock.to(device), el.to(device)
    sample = to_device(make_batch(dictionary, [6, 3, 8], seed=5), device)
    net_input = sample["net_input"]
    prev = net_input["prev_output_tokens"].repeat_interleave(beam, dim=0)  # (B*beam, T)
    with torch.no_grad():
        enc = stock.encoder(net_input["src_tokens"], net_input["src_lengths"])
        expanded = stock.encoder.reorder_encoder_out(
            enc, torch.arange(3, device=device).repeat_interleave(beam)
        )  # stock Transformer layout: one encoder row per hypothesis
        full, _ = stock.decoder(prev, encoder_out=expanded)  # (B*beam, T, V)
        el_enc = el.encoder(net_input["src_tokens"], net_input["src_lengths"])
        state = {}
        steps = [
            el.decoder(prev[:, : t + 1], encoder_out=el_enc, incremental_state=state)[0]
            for t in range(prev.size(1))
        ]
    real = prev.ne(dictionary.pad())  # right padding: positions differ there by design
    diff = (full - torch.cat(steps, dim=1))[real].abs().max().item()
    print(f"{arch} beam={beam}: incremental EL vs full stock, max abs diff {diff:.2e}")
    assert diff <= OUTPUT_TOL


@pytest.mark.parametrize(
    "argv", [["--beam", "4"], ["--beam", "1"], ["--beam", "4", "--nbest", "2"]]
)
def test_batch_of_two_equals_two_batches_of_one(argv, device):
    dictionary = make_dictionary(20)
    _, el, task = stock_and_el("transformer", dictionary, tiny_args(dim=16, heads=4), seed=6)
    el = el.to(device)
    argv = ["--max-len-a", "0", "--max-len-b", "10", *argv]
    pair = to_device(make_batch(dictionary, [7, 3], seed=8), device)
    together = generate(task, el, pair, argv)
    apart = []
    for i in range(2):
        one = make_batch(dictionary, [[7, 3][i]], seed=8)
        length = int(pair["net_input"]["src_lengths"][i])
        src = pair["net_input"]["src_tokens"][i, -length:]  # drop the left padding
        one["net_input"]["src_tokens"] = src.unsqueeze(0)
        one["net_input"]["src_lengths"] = torch.tensor([length])
        apart += generate(task, el, to_device(one, device), argv)
    # the batch is sorted by length: map results back by sentence id
    together = [together[int(pair["id"].tolist().index(i))] for i in range(2)]
    sorted_ids = pair["id"].tolist()
    apart = [apart[sorted_ids.index(i)] for i in range(2)]
    print("batch of 2 vs 2 batches of 1: max score diff", assert_hypos_equal(together, apart))


class StateProbe(EnsembleModel):
    """Records what the generator holds at every decoding step."""

    seen = []

    def forward_decoder(self, tokens, encoder_outs, incremental_states, temperature=1.0):
        StateProbe.seen.append(
            (tokens.size(0), encoder_outs[0], dict(incremental_states[0]))
        )  # fmt: skip
        return super().forward_decoder(tokens, encoder_outs, incremental_states, temperature)


def state_during_generation(model, task, sample, argv, monkeypatch):
    import fairseq.sequence_generator as sg

    StateProbe.seen = []
    monkeypatch.setattr(sg, "EnsembleModel", StateProbe)
    generate(task, model, sample, argv)
    return StateProbe.seen


def test_no_encoder_decoder_cache_and_one_encoder_row_per_sentence(
    trained_transformer, monkeypatch, device
):
    trained, task, dictionary = trained_transformer  # trained: sentences finish at their lengths
    el, _, _ = el_twin(trained, "transformer", dictionary, tiny_args(dim=32, heads=4, ffn=64), 9)
    stock, el = copy_to(trained, device), el.to(device)
    sample = to_device(make_batch(dictionary, [2, 8, 5, 6], seed=3), device)
    argv = ["--beam", "4", "--max-len-a", "1.2", "--max-len-b", "3"]
    enc_attn_ids = {
        layer.encoder_attn._incremental_state_id for layer in el.decoder.layers
    }  # the stock cache would be stored under these ids
    seen = state_during_generation(el, task, sample, argv, monkeypatch)
    live_sentences = set()
    for step, (rows, encoder_out, state) in enumerate(seen):
        cached = {key.split(".")[0] for key, buffer in state.items() if buffer and key != RUN}
        assert not cached & enc_attn_ids, "EL must not cache encoder-decoder keys/values"
        assert len(cached) == (len(el.decoder.layers) if step else 0)  # self-attention only
        assert hypotheses(state) == (4 if step else None)  # recorded by the decoder's first step
        sentences = encoder_out["encoder_out"][0].size(1)  # (S, B, C)
        assert rows == 4 * sentences, f"{rows} hypotheses but {sentences} encoder rows"
        assert encoder_out["encoder_padding_mask"][0].size(0) == sentences
        live_sentences.add(sentences)
    assert max(live_sentences) == 4 and min(live_sentences) < 4, "sentences should finish early"
    assert ROW_SENTENCE in seen[-1][1]

    stock_seen = state_during_generation(stock, task, sample, argv, monkeypatch)
    rows, encoder_out, state = stock_seen[1]
    assert encoder_out["encoder_out"][0].size(1) == rows  # stock Transformer: one row per beam
    stock_keys = {key.split(".")[0] for key in state}
    assert stock_keys & {layer.encoder_attn._incremental_state_id for layer in stock.decoder.layers}


@pytest.mark.parametrize("arch", ["transformer", "bart_base"])
def test_encoder_in_sub_batches_gives_the_same_output(arch, device):
    dictionary = make_dictionary(20)
    extra, el_extra = tiny_args(dim=16, heads=4), ["--el-encoder-batch", "2"]
    stock, el, task = stock_and_el(arch, dictionary, extra, seed=4, el_extra=el_extra)
    stock, el = stock.to(device), el.to(device)
    assert el.encoder.sentences_per_pass == 2
    sample = to_device(make_batch(dictionary, [6, 3, 8, 2, 5], seed=5), device)
    src, lengths = sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"]
    with torch.no_grad():
        whole = stock.encoder(src, src_lengths=lengths, return_all_hiddens=True)
        parts = el.encoder(src, src_lengths=lengths, return_all_hiddens=True)
    for key, tensors in whole.items():
        for a, b in zip(tensors, parts[key], strict=True):
            if a is None:
                assert b is None
                continue
            assert a.shape == b.shape and (a.float() - b.float()).abs().max() <= OUTPUT_TOL, key
    argv = ["--beam", "3", "--max-len-a", "0", "--max-len-b", "8"]
    assert_hypos_equal(generate(task, stock, sample, argv), generate(task, el, sample, argv))
