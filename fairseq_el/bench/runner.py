"""One benchmark run: build a variant, generate on synthetic sources, time it, count its state.

Generation is fairseq's own path (``task.build_generator`` + ``task.inference_step``, as
fairseq-generate calls them). The first generation is the warm-up: it is the one whose decoding
state and peak memory are measured (meters on), and it is excluded from the timings; each timed
repeat runs with no meter attached.
"""

import ctypes
import gc
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from fairseq_el.bench.models import build_variant, synthetic_sample
from fairseq_el.bench.shapes import SHAPES, Config
from fairseq_el.bench.state import StateMeter
from fairseq_el.testing import generation_args

TIMINGS = ("seconds", "encoder_seconds", "decoder_seconds", "samples_per_s", "tokens_per_s")


class Stopwatch:
    """Wraps an ensemble method and adds the seconds spent in it (synchronised on CUDA)."""

    def __init__(self, owner: object, name: str, sync: Callable[[], None]):
        self.seconds = 0.0
        self._fn = getattr(owner, name)
        self._sync = sync
        setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        self._sync()
        start = time.perf_counter()
        out = self._fn(*args, **kwargs)
        self._sync()
        self.seconds += time.perf_counter() - start
        return out


def memory_reset(device: str) -> None:
    """Start a new peak: CUDA's allocator counter, or the process's peak RSS (Linux VmHWM).

    On CPU, memory freed while building the model is first handed back to the system
    (``malloc_trim``): glibc keeps freed heap pages resident, which would count in the peak.
    """
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def memory_now_and_peak(device: str) -> Dict[str, float]:
    mib = 1 << 20
    if device.startswith("cuda"):
        return {
            "memory_mib": torch.cuda.memory_allocated(device) / mib,
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / mib,
            "peak_memory_kind": "cuda max allocated",
        }
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return {
        "memory_mib": fields["VmRSS"],
        "peak_memory_mib": fields["VmHWM"],
        "peak_memory_kind": "peak RSS (VmHWM) since model built",
    }


def hypotheses(results: List[List[Dict]]) -> List[List[List[int]]]:
    """Token ids of every returned hypothesis, sentence by sentence."""
    return [[h["tokens"].tolist() for h in sentence] for sentence in results]


def scores(results: List[List[Dict]]) -> List[List[float]]:
    """The score of every returned hypothesis: a continuous check beside the tokens (random
    weights tend to repeat one token, which any near-miss would reproduce)."""
    return [[float(h["score"]) for h in sentence] for sentence in results]


def model_dims(model: torch.nn.Module, dtype: str) -> Dict[str, int]:
    """The sizes the decoding state depends on (see :class:`~fairseq_el.bench.state.Dims`)."""
    layer = model.decoder.layers[0]
    encoder = getattr(model, "encoder", None)
    return {
        "layers": len(model.decoder.layers),
        "embed_dim": layer.embed_dim,
        "encoder_dim": encoder.layers[0].embed_dim if encoder is not None else 0,
        "heads": layer.self_attn.num_heads,
        "dtype_bytes": 4 if dtype == "fp32" else 2,
    }


def compile_report(model: torch.nn.Module, warm_seconds: float) -> Optional[Dict]:
    """What ``--el-compile`` cost in the warm-up generation (None without it)."""
    step = getattr(model.decoder, "compiled_step", None)
    if step is None:
        return None
    stats = step.stats
    return {
        "mode": stats.mode,
        "graphs": stats.graphs,
        "compile_seconds": stats.compile_seconds,
        "warm_up_seconds": warm_seconds,
        "eager_reason": stats.eager_reason,
        "total_graphs": step.total_graphs,
    }


def run_variant(
    config: Config, variant: str, repeats: int = 3, built: Optional[Tuple] = None
) -> Dict:
    """Measure ``variant`` on ``config``; returns timings, state bytes, peak memory and tokens.
    ``built``: the ``(model, task)`` of :func:`build_variant` for it, reused (a batch sweep)."""
    model, task = build_variant(config, variant) if built is None else built
    lm = config.checkpoint == "" and SHAPES[config.shape].is_lm
    gen_args = generation_args(config.generation_argv(lm=lm))
    dictionary = task.source_dictionary if not lm else task.dictionary
    sample = synthetic_sample(config, len(dictionary), dictionary.eos(), lm)
    cuda = config.device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize(config.device)) if cuda else (lambda: None)

    def generate(meter: bool):
        generator = task.build_generator([model], gen_args)
        state = StateMeter(generator.model) if meter else None
        enc = Stopwatch(generator.model, "forward_encoder", sync)
        dec = Stopwatch(generator.model, "forward_decoder", sync)
        torch.manual_seed(config.seed)
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            out = task.inference_step(generator, [model], sample)
        sync()
        return out, time.perf_counter() - start, enc.seconds, dec.seconds, state

    memory_reset(config.device)
    before = memory_now_and_peak(config.device)["memory_mib"]
    out, warm_seconds, _, _, meter = generate(meter=True)
    memory = memory_now_and_peak(config.device)
    compiled = compile_report(model, warm_seconds)  # --el-compile: paid in the warm-up
    if compiled is not None and repeats:
        generate(meter=False)  # the first run after compiling still loads its kernels: untimed
    times = [generate(meter=False)[1:4] for _ in range(repeats)]
    if compiled is not None:  # graphs the timed runs compiled (0 when the warm-up was enough)
        compiled["graphs_in_timed_runs"] = model.decoder.compiled_step.total_graphs - compiled.pop(
            "total_graphs"
        )
    timing: Dict[str, Optional[float]] = dict.fromkeys(TIMINGS)
    if times:  # repeats=0 measures state and memory only
        total, encoder, decoder = (statistics.median(t[i] for t in times) for i in range(3))
        new_tokens = config.batch * (config.steps + 1)  # forced length, eos included
        timing = {
            "seconds": total,
            "encoder_seconds": encoder,
            "decoder_seconds": decoder,
            "samples_per_s": config.batch / total,
            "tokens_per_s": new_tokens / total,
        }
    return {
        "variant": variant,
        "repeats": repeats,
        **timing,
        "decoding_state_bytes": meter.peak,
        "decoder_calls": meter.steps,
        "model_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / (1 << 20),
        "memory_before_generate_mib": before,
        "peak_memory_mib": memory["peak_memory_mib"],
        "peak_memory_kind": memory["peak_memory_kind"],
        "dims": model_dims(model, config.dtype),
        "compile": compiled,
        "tokens": hypotheses(out),
        "scores": scores(out),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "pid": os.getpid(),
    }
