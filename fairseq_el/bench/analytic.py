"""A roofline model of generation on a GPU: FLOPs and bytes per decoding step, per variant.

Why: this machine has no GPU, and the paper's speed-ups (V100) come from memory traffic that a
CPU does not show the same way. Each op group costs ``max(flops / peak, bytes / bandwidth)``;
a generation is the encoder, the one-time key/value projections, and every decoding step with
the caches at their length at that step. The batch of each variant is the largest whose weights,
decoding state (:func:`fairseq_el.bench.state.expected_bytes`) and encoder workspace fit the
GPU's memory, as the paper picks it ("maximum batch size that can fit in memory").

What it leaves out (so read the ratios as bounds, not predictions): kernel efficiency below peak
and fairseq's sentence removal as hypotheses finish (lengths are forced here). Per-step fixed
costs (kernel launches, Python beam search) are what a larger batch amortises; pure roofline has
none, so the table also shows the ratios with ``LAUNCH_SECONDS`` per kernel, ``KERNELS_PER_LAYER``
kernels per decoder layer and ``KERNELS_PER_STEP`` for the search, a rough eager-PyTorch count.

Byte counts follow what the code does each step (:func:`self_attention_work`). Stock fairseq 0.12
(both stock variants): self-attention ``torch.cat``s the new key/value onto the cache (read +
write of the cache) and beam reordering ``index_select``s every cache (read + write); stock
per-beam decoding also reorders its per-hypothesis encoder-decoder keys/values and encoder output
every step. EL models keep the copy-free cache (:mod:`fairseq_el.attention.cache`): a step writes
its position in place and a reorder moves only the int64 ancestry index; with beams, each
sentence's queries score against every slot of the sentence (k times the attention FLOPs, no copy;
``math.kv_attention``, for ``el`` and ``el-sa`` alike). EL encoder-decoder attention reads
the per-sentence encoder output (twice: scores and weighted sum) and spends H times the attention
FLOPs.
"""

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

from fairseq_el.attention.policy import cross_attention_work, roofline_seconds
from fairseq_el.bench.shapes import PRESETS, SHAPES
from fairseq_el.bench.state import Dims, expected_bytes, largest_batch
from fairseq_el.tables import markdown_table

GB = 1e9
LAUNCH_SECONDS = 10e-6  # per kernel, eager PyTorch on a V100-class host (order of magnitude)
KERNELS_PER_LAYER = 30
KERNELS_PER_STEP = 60  # embedding, output projection, log-softmax, beam search
INDEX_BYTES = 8  # the copy-free cache's ancestry and gather indices are int64


@dataclass(frozen=True)
class GPU:
    """Datasheet peaks (dense tensor-core fp16, plain fp32; HBM bandwidth; memory)."""

    name: str
    fp16_flops: float
    fp32_flops: float
    bandwidth: float
    memory: float


# NVIDIA datasheets: V100 SXM2 16GB, A100 SXM4 40GB, H100 SXM5 80GB (dense, no sparsity).
GPUS = {
    "V100": GPU("V100-SXM2-16GB", 125e12, 15.7e12, 900e9, 16 * GB),
    "A100": GPU("A100-SXM4-40GB", 312e12, 19.5e12, 1555e9, 40 * GB),
    "H100": GPU("H100-SXM5-80GB", 989e12, 67e12, 3350e9, 80 * GB),
}

# The paper's V100 speed-ups, fp16 (fp32), from its Tables (as published in the authors' code
# release, github.com/microsoft/fastseq, examples/EL-attention/README.md). Baseline: fairseq's
# multi-head attention with cache; its memory table (6 GB of input-related state for bart.large
# at batch 32, source 1024) is per-beam caching: 12 layers x K,V x 4 beams x 1024 x 1024 x fp16.
PAPER_V100 = {
    ("squad-qg", "beam"): (2.7, 2.0),
    ("xsum", "beam"): (4.7, 3.9),
    ("cnndm", "beam"): (5.0, 3.6),
    ("cnndm-gpt2", "beam"): (1.8, 1.7),
    ("cnndm-gpt2-medium", "beam"): (2.2, 1.8),
    ("squad-qg", "diverse"): (2.8, 2.1),
    ("xsum", "diverse"): (4.6, 3.8),
    ("cnndm", "diverse"): (5.3, 3.8),
    ("squad-qg", "greedy"): (1.6, 1.4),
    ("xsum", "greedy"): (2.5, 3.0),
    ("cnndm", "greedy"): (3.1, 2.8),
    ("cnndm-gpt2", "greedy"): (1.8, 1.5),
    ("cnndm-gpt2-medium", "greedy"): (1.8, 1.6),
}


@dataclass(frozen=True)
class ModelSize:
    enc_layers: int
    layers: int
    dim: int
    heads: int
    ffn: int
    vocab: int

    @property
    def params(self) -> int:
        per_layer = 4 * self.dim**2 + 2 * self.dim * self.ffn
        cross = 4 * self.dim**2 if self.enc_layers else 0
        return (
            self.enc_layers * per_layer + self.layers * (per_layer + cross) + self.vocab * self.dim
        )


def model_size(shape_name: str) -> ModelSize:
    """Sizes of a named shape, from fairseq's own architecture defaults."""
    from fairseq_el.testing import lm_args, translation_args

    shape = SHAPES[shape_name]
    if shape.is_lm:
        a = lm_args(shape.arch, extra=shape.extra)
        return ModelSize(
            0,
            a.decoder_layers,
            a.decoder_embed_dim,
            a.decoder_attention_heads,
            a.decoder_ffn_embed_dim,
            shape.vocab,
        )
    a = translation_args(shape.arch, extra=shape.extra)
    return ModelSize(
        a.encoder_layers,
        a.decoder_layers,
        a.decoder_embed_dim,
        a.decoder_attention_heads,
        a.decoder_ffn_embed_dim,
        shape.vocab,
    )


@dataclass(frozen=True)
class Work:
    """One configuration to cost: model, source/prompt length, hypotheses, steps, dtype bytes."""

    size: ModelSize
    src_len: int
    hyps: int
    steps: int
    dtype_bytes: int

    @property
    def lm(self) -> bool:
        return self.size.enc_layers == 0


def self_attention_work(
    variant: str, n: int, k: int, t: int, C: int, H: int, b: int
) -> Tuple[float, float]:
    """FLOPs and bytes of one decoder layer's self-attention at a step with ``t`` cached positions,
    ``n`` hypothesis rows (``k`` per sentence), width ``C``, ``H`` heads, ``b`` bytes per number.

    * stock (both stock variants): read keys and values (2 n t C), ``torch.cat`` both onto the cache
      (read + write: 4 n t C) and, with beams, ``index_select`` both (4 n t C).
    * ``el`` (``KVSelfAttention``): write the new key and value in place (2 n C) and read the cache
      once (2 n t C).
    * ``el-sa`` (``ELSelfAttention``): write the layer input in place (n C); expanded queries
      (4 n C C FLOPs, the projection weights 2 C C read) attend at model width (H times the FLOPs)
      reading the history twice (2 n t C).
    * both, with beams (k > 1; ``math.kv_attention``): each sentence's queries score every slot of
      the sentence (k times the attention FLOPs; the k-wide scores and spread weights, 4 n H k t,
      are written and read) through int64 indices (gather and scatter, 2 n H t), and the reorder
      rewrites the ancestry (4 n t).
    """
    beams = k > 1
    if variant.startswith("stock"):
        return 4 * n * t * C, (2 + 4 + (4 if beams else 0)) * n * t * C * b
    width = H if variant == "el-sa" else 1  # EL self-attention: every head attends at width C
    flops = 4 * n * width * t * C * (k if beams else 1)  # scores and weighted sum
    nbytes = 2 * n * t * C * b  # the history, read for the scores and for the weighted sum
    if variant == "el-sa":
        flops += 4 * n * C * C  # queries expanded through W_k, values projected through W_v
        nbytes += (n * C + 2 * C * C) * b  # the new input written; both weights read
    else:
        nbytes += 2 * n * C * b  # the new key and value written
    if beams:  # k-wide scores and spread weights, gather/scatter indices, the ancestry rewritten
        nbytes += 4 * n * H * k * t * b + 2 * n * H * t * INDEX_BYTES + 4 * n * t * INDEX_BYTES
    return flops, nbytes


def generation_seconds(
    work: Work, variant: str, batch: int, gpu: GPU, launch: float = 0.0
) -> float:
    """Roofline seconds to generate ``batch`` sentences with ``variant``; ``launch`` seconds of
    fixed cost per kernel launched."""
    m, b, S, k = work.size, work.dtype_bytes, work.src_len, work.hyps
    C, H, L, F, V = m.dim, m.heads, m.layers, m.ffn, m.vocab
    peak = gpu.fp16_flops if b == 2 else gpu.fp32_flops

    def seconds(flops: float, nbytes: float) -> float:
        return roofline_seconds(flops, nbytes, peak, gpu.bandwidth)

    n = batch * k
    cost = 0.0
    if not work.lm:
        layer_w = 4 * C * C + 2 * C * m.ffn
        cost += m.enc_layers * (
            seconds(2 * batch * S * layer_w, layer_w * b + 12 * batch * S * C * b)
            + seconds(4 * batch * S * S * C, 2 * batch * H * S * S * b)
        )
        if variant.startswith("stock"):  # K/V projections of the (expanded) encoder output
            rows = n if variant == "stock-per-beam" else batch
            cost += L * seconds(4 * rows * S * C * C, (2 * C * C + 3 * rows * S * C) * b)
    dense_w = L * ((8 if not work.lm else 4) * C * C + 2 * C * F) + C * V
    last = work.steps + 1 + (S if work.lm else 0)  # an LM decodes its prompt step by step too
    cost += last * launch * (KERNELS_PER_LAYER * L + KERNELS_PER_STEP)
    for t in range(1, last + 1):  # t: cached positions at this step
        cost += seconds(2 * n * dense_w, dense_w * b + 2 * n * V * b)
        cost += L * seconds(4 * n * H * t * 2, 4 * n * H * t * b)  # probs
        cost += L * seconds(*self_attention_work(variant, n, k, t, C, H, b))
        if work.lm:
            continue
        cost += L * seconds(4 * n * H * S * 2, 4 * n * H * S * b)  # probs
        if variant == "stock-per-beam":  # keys/values per hypothesis, reordered every step
            reorder = 4 if k > 1 else 0
            flops, nbytes = cross_attention_work(n, n, S, C, C, H, b)["cached"]
            cost += L * seconds(flops, nbytes + reorder * n * S * C * b)
            cost += seconds(0, (4 * n * S * C * b) if k > 1 else 0)
        elif variant == "stock-per-sentence":
            flops, nbytes = cross_attention_work(n, batch, S, C, C, H, b)["cached"]
            cost += L * seconds(flops, nbytes)
        else:  # EL, plus reading the key/value weights that expand the queries
            flops, nbytes = cross_attention_work(n, batch, S, C, C, H, b)["el"]
            cost += L * seconds(flops, nbytes + 2 * C * C * b)
    return cost


def memory_bytes(work: Work, variant: str, batch: int) -> float:
    """Weights + decoding state at the last step + the largest transient (encoder attention)."""
    m = work.size
    dims = Dims(m.layers, m.dim, m.dim if not work.lm else 0, m.heads, work.dtype_bytes)
    positions = work.steps + 1 + (work.src_len if work.lm else 0)
    if work.lm:  # no encoder: self-attention cache only
        per_pos = m.dim if variant == "el-sa" else 2 * m.dim
        state = m.layers * batch * work.hyps * positions * per_pos * work.dtype_bytes
        transient = 2 * batch * work.hyps * m.vocab * 4
    else:
        state = expected_bytes(variant, dims, batch, work.hyps, work.src_len, positions)["total"]
        transient = batch * work.src_len * (2 * m.heads * work.src_len + m.ffn) * work.dtype_bytes
    return m.params * work.dtype_bytes + state + transient


def fitting_batch(work: Work, variant: str, gpu: GPU, headroom: float = 0.9) -> int:
    """Largest batch whose memory fits ``headroom`` of the GPU (0 if none)."""
    return largest_batch(
        lambda batch: memory_bytes(work, variant, batch) <= headroom * gpu.memory, 1 << 16
    )


def predict(
    setting: str,
    search: str,
    gpu: GPU,
    dtype_bytes: int,
    variants: Sequence[str],
    launch: float = 0.0,
) -> Dict[str, Dict[str, float]]:
    preset = PRESETS[setting]
    hyps = 1 if search == "greedy" else preset.beam
    work = Work(model_size(preset.shape), preset.src_len, hyps, preset.steps, dtype_bytes)
    out = {}
    for variant in variants:
        batch = fitting_batch(work, variant, gpu)
        seconds = generation_seconds(work, variant, batch, gpu, launch) if batch else float("inf")
        out[variant] = {"batch": batch, "samples_per_s": batch / seconds if batch else 0.0}
    return out


def table(gpus: Sequence[str], searches: Sequence[str] = ("beam", "diverse", "greedy")) -> str:
    """Predicted EL speed-ups at each variant's largest batch, beside the paper's V100 ratios.

    EL is EL encoder-decoder attention for seq2seq models and EL self-attention for GPT-2 (it has
    no encoder-decoder attention); "+launch" adds the per-kernel fixed cost.
    """
    headers = (
        "setting | search | GPU | dtype | batch per-beam / per-sentence / EL / EL+SA "
        "| EL vs per-beam | +launch | EL vs per-sentence | +launch | EL+SA vs per-beam "
        "| paper V100 fp16 (fp32)"
    ).split(" | ")
    rows = []
    variants = ("stock-per-beam", "stock-per-sentence", "el", "el-sa")
    for setting in PRESETS:
        lm = SHAPES[PRESETS[setting].shape].is_lm
        el = "el-sa" if lm else "el"
        for search in searches:
            if lm and search == "diverse":
                continue  # the paper reports GPT-2 with beam and greedy search only
            paper = PAPER_V100.get((setting, search))
            for gpu_name in gpus:
                for dtype, nbytes in (("fp16", 2), ("fp32", 4)):
                    runs = [
                        predict(setting, search, GPUS[gpu_name], nbytes, variants, launch)
                        for launch in (0.0, LAUNCH_SECONDS)
                    ]
                    speed = [{v: p[v]["samples_per_s"] for v in variants} for p in runs]
                    beam = [f"{s[el] / s['stock-per-beam']:.1f}x" for s in speed]
                    sent = [f"{s[el] / s['stock-per-sentence']:.1f}x" for s in speed]
                    sa = speed[0]["el-sa"] / speed[0]["stock-per-beam"]
                    quoted = ""
                    if paper and gpu_name == "V100" and dtype == "fp16":
                        quoted = f"{paper[0]}x ({paper[1]}x)"
                    batches = " / ".join(str(runs[0][v]["batch"]) for v in variants)
                    rows.append(
                        [
                            setting,
                            search,
                            gpu_name,
                            dtype,
                            batches,
                            beam[0],
                            beam[1],
                            sent[0],
                            sent[1],
                            f"{sa:.1f}x",
                            quoted,
                        ]
                    )
    return markdown_table(headers, rows, "lllllrrrrrl")
