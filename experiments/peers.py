"""Peer rows: Hugging Face ``generate`` and CTranslate2 on the same weights and inputs.

The weights are born in Hugging Face (a seeded random ``BartForConditionalGeneration`` of the
shape's size) and converted to fairseq with :mod:`fairseq_el.convert.hf_bart`, so every row of
the comparison computes the same function; fairseq's stock and EL variants are re-run on that
checkpoint. Lengths are forced the same way everywhere: ``steps`` tokens, then eos. Each peer
runs in a fresh process, like the fairseq variants, so its peak RSS is its own. Top hypotheses
are compared with stock fairseq's token by token ("identical").

A finished experiment (round 1's peer tables are in ``docs/benchmarks/log-2026-11.md``), kept
outside the wheel: ``fairseq-el-benchmark --peers hf,ct2`` loads this file from a clone of the
repository (:func:`fairseq_el.bench.cli.peers_module`), and only then: transformers and ctranslate2
are optional. Each peer runs as ``python experiments/peers.py JOB.json OUT.json``.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

import torch

from fairseq_el.bench.environment import load
from fairseq_el.bench.models import synthetic_sample
from fairseq_el.bench.precision import DTYPES
from fairseq_el.bench.runner import memory_now_and_peak, memory_reset
from fairseq_el.bench.shapes import SHAPES, Config
from fairseq_el.bench.worker import run_in_subprocess
from fairseq_el.convert.hf_common import import_transformers
from fairseq_el.files import write_json

FAIRSEQ_ROWS = ("stock-per-sentence", "el")


def hf_bart_config(shape: str):
    """A transformers ``BartConfig`` of the shape's size that fairseq's ``bart`` can load."""
    from fairseq_el.bench.analytic import model_size

    size = model_size(shape)
    config = import_transformers().BartConfig(
        vocab_size=SHAPES[shape].vocab,
        d_model=size.dim,
        encoder_layers=size.enc_layers,
        decoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        decoder_attention_heads=size.heads,
        encoder_ffn_dim=size.ffn,
        decoder_ffn_dim=size.ffn,
        max_position_embeddings=1024,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=False,
        forced_bos_token_id=None,
        forced_eos_token_id=2,
    )
    # CTranslate2's BART loader reads these pre-transformers-5 fields; BART is post-LN.
    config.normalize_before = False
    config.add_final_layer_norm = False
    return config


class _Vocabulary:
    """The tokenizer surface CTranslate2's BART loader reads, over fairseq's dictionary."""

    def __init__(self, symbols: Sequence[str]):
        self.symbols = list(symbols)
        self.bos_token, self.eos_token, self.unk_token = "<s>", "</s>", "<unk>"

    def get_vocab(self) -> Dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def convert_ids_to_tokens(self, index: int) -> str:
        return self.symbols[index]


def prepare(config: Config, folder: str) -> Dict[str, str]:
    """HF model folder, fairseq checkpoint and CTranslate2 model of one seeded random BART."""
    from fairseq_el.convert.hf_bart import convert_bart
    from fairseq_el.testing import make_dictionary

    torch.manual_seed(config.seed)
    bart = import_transformers().BartForConditionalGeneration
    hf = bart(hf_bart_config(config.shape)).eval()
    paths = {
        "hf": os.path.join(folder, "hf"),
        "fairseq": os.path.join(folder, "fairseq"),
        "ct2": os.path.join(folder, "ct2"),
    }
    hf.save_pretrained(paths["hf"])
    converted = convert_bart(hf, make_dictionary(SHAPES[config.shape].vocab - 5))
    converted.save(paths["fairseq"])
    paths["checkpoint"] = os.path.join(paths["fairseq"], "model.pt")
    paths["ct2_error"] = _convert_ct2(hf, converted.dictionary.symbols, paths)
    return paths


def _convert_ct2(hf, symbols: Sequence[str], paths: Dict[str, str]) -> str:
    """Convert to CTranslate2 from the in-memory model; returns why not, or ''."""
    try:
        import ctranslate2.converters as ct2c
    except ImportError as err:
        return f"ctranslate2 is not installed ({err})"

    class InMemory(ct2c.TransformersConverter):
        def load_model(self, model_class, name, **kwargs):
            return hf

        def load_tokenizer(self, tokenizer_class, name, **kwargs):
            return _Vocabulary(symbols)

    try:
        InMemory(paths["hf"]).convert(paths["ct2"], force=True)
    except Exception as err:  # report any converter failure as a skipped row, with its reason
        return f"CTranslate2 conversion failed: {type(err).__name__}: {err}"
    return ""


def run_peers(config: Config, names: Sequence[str], args, env: Dict) -> List[Dict]:
    """Fairseq (stock, EL) and peer rows on one HF-born BART, printed as one table."""
    from fairseq_el.bench.cli import check_peers
    from fairseq_el.bench.report import run_table

    check_peers(names, config.shape)
    if config.search == "diverse" and "hf" in names:
        print("note: transformers 5 has no built-in diverse (group) beam search; hf row skipped")
        names = [n for n in names if n != "hf"]
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="fairseq-el-peers-") as folder:
        paths = prepare(config, folder)
        on_ckpt = dataclasses.replace(config, checkpoint=paths["checkpoint"])
        for variant in FAIRSEQ_ROWS:
            rows.append(run_in_subprocess(on_ckpt, variant, args.repeats, args.threads))
        for name in names:
            if name == "ct2" and paths["ct2_error"]:
                print(f"note: ct2 row skipped: {paths['ct2_error']}")
                continue
            rows.append(_run_peer_subprocess(config, name, paths, args.repeats, args.threads))
    steps = config.steps  # compared: the forced tokens (CTranslate2 does not force the final eos)
    reference = [sentence[0][:steps] for sentence in rows[0]["tokens"]]
    for row in rows:
        row.pop("scores", None)
        top = [sentence[0][:steps] for sentence in row.pop("tokens")]
        row.update(
            kind="peer",
            config=dataclasses.asdict(on_ckpt),
            env=env,
            load=load(),
            identical=top == reference,
        )
    print(
        "peers: same seeded Hugging Face BART weights, same sources; 'identical' compares the "
        f"{steps} forced tokens of the top hypotheses with stock fairseq's"
    )
    print(run_table(rows))
    return rows


def _run_peer_subprocess(
    config: Config, name: str, paths: Dict[str, str], repeats: int, threads: int
) -> Dict:
    with tempfile.TemporaryDirectory(prefix="fairseq-el-peer-") as tmp:
        job, out = os.path.join(tmp, "job.json"), os.path.join(tmp, "out.json")
        with open(job, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "config": dataclasses.asdict(config),
                    "name": name,
                    "paths": paths,
                    "repeats": repeats,
                    "threads": threads,
                },
                f,
            )
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), job, out], capture_output=True, text=True
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"peer {name} failed:\n{tail}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def _hf_generate(config: Config, paths: Dict[str, str]):
    bart = import_transformers().BartForConditionalGeneration
    model = bart.from_pretrained(paths["hf"], dtype=DTYPES[config.dtype])
    model = model.to(config.device).eval()
    src = synthetic_sample(config, SHAPES[config.shape].vocab, 2, lm=False)["net_input"]
    options = dict(
        max_new_tokens=config.steps + 1,
        min_new_tokens=config.steps,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
        forced_bos_token_id=None,
        num_beams=config.hypotheses,
        num_return_sequences=1,
        length_penalty=1.0,
        no_repeat_ngram_size=config.no_repeat,
        early_stopping=False,
    )
    if config.search == "sampling":
        options.update(do_sample=True, top_k=10, num_beams=1)

    def generate():
        torch.manual_seed(config.seed)
        with torch.no_grad():
            out = model.generate(input_ids=src["src_tokens"], **options)
        return [[row[1:].tolist()] for row in out]  # drop the decoder start token

    return generate


def _ct2_translate(config: Config, paths: Dict[str, str], threads: int):
    import ctranslate2

    compute = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[config.dtype]
    translator = ctranslate2.Translator(
        paths["ct2"],
        device=config.device.split(":")[0],
        compute_type=compute,
        intra_threads=threads,
    )
    symbols = open_dictionary(paths["fairseq"])
    index = {s: i for i, s in enumerate(symbols)}
    src = synthetic_sample(config, SHAPES[config.shape].vocab, 2, lm=False)["net_input"]
    source = [[symbols[i] for i in row] for row in src["src_tokens"].tolist()]
    options = dict(
        beam_size=config.hypotheses,
        max_input_length=0,
        return_end_token=True,
        max_decoding_length=config.steps + 1,
        min_decoding_length=config.steps,
        no_repeat_ngram_size=config.no_repeat,
        length_penalty=1.0,
    )
    if config.search == "sampling":
        options.update(beam_size=1, sampling_topk=10)

    def generate():
        results = translator.translate_batch(source, **options)
        return [[[index[t] for t in r.hypotheses[0]]] for r in results]

    return generate


def open_dictionary(folder: str) -> List[str]:
    from fairseq.data import Dictionary

    return list(Dictionary.load(os.path.join(folder, "dict.txt")).symbols)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python experiments/peers.py JOB.json OUT.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    config = Config(**{**job["config"], "model_options": tuple(job["config"]["model_options"])})
    if job["name"] == "hf":
        generate = _hf_generate(config, job["paths"])
    else:
        generate = _ct2_translate(config, job["paths"], job["threads"])
    memory_reset(config.device)
    tokens = generate()
    memory = memory_now_and_peak(config.device)
    times = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        generate()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times) if times else None
    result = {
        "variant": {"hf": "hf-transformers", "ct2": "ctranslate2"}[job["name"]],
        "repeats": job["repeats"],
        "seconds": seconds,
        "encoder_seconds": None,
        "decoder_seconds": None,
        "decoding_state_bytes": None,
        "samples_per_s": config.batch / seconds if seconds else None,
        "tokens_per_s": config.batch * (config.steps + 1) / seconds if seconds else None,
        "peak_memory_mib": memory["peak_memory_mib"],
        "peak_memory_kind": memory["peak_memory_kind"],
        "threads": torch.get_num_threads(),
        "tokens": tokens,
    }
    write_json(sys.argv[2], result)  # whole or absent: the parent reads it after the child exits


if __name__ == "__main__":
    main()
