"""What "the same" means in low precision, and the module cases it is checked on.

EL reorders the attention's floating-point operations, so in fp16/bf16 it cannot be bit-identical
to stock. The rule (as flash-attention's tests state it): against an fp32 reference computed from
the same (rounded) weights and inputs, EL in low precision is at most twice as far as stock in the
same precision, for the largest and for the mean absolute difference:

    max|EL_lp - ref|  <= 2 * max|stock_lp - ref|  + eps_max
    mean|EL_lp - ref| <= 2 * mean|stock_lp - ref| + eps_mean

``eps`` is half a unit in the last place of the low-precision dtype at the reference's largest
(for the max) or mean (for the mean) magnitude: the bound on the rounding of the final output
alone. Where stock happens to be almost exact (its difference near 0), the factor 2 alone would
demand that EL round better than correctly; half an ulp is the least that excuses that final
rounding, and nothing more. It is not a tolerance on the error itself.

Each case builds a stock module, perturbs its parameters (non-zero biases), rounds it to the low
precision dtype, and makes the EL module and the fp32 reference (the rounded weights upcast) from
that rounded state; inputs are rounded the same way. All three run through their public forward,
incrementally, as a decoder calls them. Used by ``tests/module/test_low_precision.py`` and the GPU
check (:mod:`fairseq_el.bench.gpu_check`); the dtypes by name are
:data:`fairseq_el.bench.precision.DTYPES`.
"""

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from fairseq_el.attention.cache import set_hypotheses
from fairseq_el.attention.cross import ELCrossAttention, ELGroupedCrossAttention
from fairseq_el.attention.grouped import GroupedQueryAttention
from fairseq_el.attention.self_attention import ELSelfAttention
from fairseq_el.convert.kv_heads import repeat_kv_heads
from fairseq_el.rounding import half_ulp

Outputs = Dict[str, Tuple[Tensor, Tensor, Tensor]]  # name -> (reference, stock, EL)


@dataclass(frozen=True)
class Diffs:
    """Max and mean absolute differences to the fp32 reference, and the rule's ``eps``."""

    stock_max: float
    stock_mean: float
    el_max: float
    el_mean: float
    eps_max: float
    eps_mean: float

    @classmethod
    def of(cls, ref: Tensor, stock: Tensor, el: Tensor, dtype: torch.dtype) -> "Diffs":
        """``ref`` computed in fp32; ``stock`` and ``el`` computed in ``dtype`` (attention weights
        come back in fp32 from a softmax of ``dtype`` scores: ``eps`` is ``dtype``'s)."""
        ref = ref.float()
        d_stock, d_el = (stock.float() - ref).abs(), (el.float() - ref).abs()
        return cls(
            float(d_stock.max()),
            float(d_stock.mean()),
            float(d_el.max()),
            float(d_el.mean()),
            half_ulp(dtype, float(ref.abs().max())),
            half_ulp(dtype, float(ref.abs().mean())),
        )

    def holds(self) -> bool:
        return (
            self.el_max <= 2 * self.stock_max + self.eps_max
            and self.el_mean <= 2 * self.stock_mean + self.eps_mean
        )

    def describe(self) -> str:
        return (
            f"max |stock-ref| {self.stock_max:.3e} |EL-ref| {self.el_max:.3e} "
            f"(bound {2 * self.stock_max + self.eps_max:.3e}); mean |stock-ref| "
            f"{self.stock_mean:.3e} |EL-ref| {self.el_mean:.3e} "
            f"(bound {2 * self.stock_mean + self.eps_mean:.3e})"
        )


METRIC_TOL = 0.1  # a corpus metric (BLEU, ROUGE x 100) of EL in low precision vs stock's


def metric_holds(stock: float, el: float, reference: float, tol: float = METRIC_TOL) -> bool:
    """The rule at the level of a corpus metric of generated text.

    EL's metric in low precision equals stock's within ``tol``; or, where rounding parted a few
    near-ties (one parted sentence moves BLEU on tens of sentences by more than ``tol``), EL's
    metric is at most twice as far from the fp32 ``reference`` (stock and EL are identical in
    fp32) as stock's, plus ``tol``: rounding may move EL, but not further from exact than stock.
    """
    return abs(el - stock) <= tol or abs(el - reference) <= 2 * abs(stock - reference) + tol


def _rounded(module: MultiheadAttention, dtype: torch.dtype, device: str) -> MultiheadAttention:
    """Non-zero biases, then ``module`` in ``dtype`` on ``device``."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module.to(device=device, dtype=dtype).eval()


def _triple(stock_lp: MultiheadAttention, el: MultiheadAttention):
    """(fp32 reference, stock, EL) from one rounded stock module: EL loads its rounded state and
    the reference is that state upcast."""
    el.load_state_dict(stock_lp.state_dict())
    like = next(stock_lp.parameters())
    return copy.deepcopy(stock_lp).float().eval(), stock_lp, el.to(like).eval()


def _inputs(shape: Tuple[int, ...], dtype: torch.dtype, device: str, gen: torch.Generator):
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


def _left_padding(bsz: int, src_len: int, device: str) -> Tensor:
    """(B, S) True at padding: sentence 0 unpadded, the others shorter (left-padded)."""
    lengths = torch.tensor([src_len - (2 * i) % (src_len - 1) for i in range(bsz)])
    return (torch.arange(src_len).flip(0).unsqueeze(0) >= lengths.unsqueeze(1)).to(device)


def _stack(outs: Dict[str, List[Tensor]]) -> Dict[str, Tensor]:
    return {k: torch.cat([o.flatten() for o in v]) for k, v in outs.items()}


def _run_cross(
    modules, queries: List[Tensor], enc: Tensor, mask: Optional[Tensor], beam: int
) -> Outputs:
    """Incremental encoder-decoder attention: stock and reference see the encoder output expanded
    per hypothesis (as fairseq's transformer), EL sees it once per sentence."""
    exp_enc, exp_mask = enc.repeat_interleave(beam, 1), None
    if mask is not None:
        exp_mask = mask.repeat_interleave(beam, 0)
    outs: Dict[str, Dict[str, List[Tensor]]] = {}
    for name, module in zip(("ref", "stock", "el"), modules):
        states: Dict = {}
        got: Dict[str, List[Tensor]] = {"output": [], "weights": []}
        for q in queries:
            kv, kv_mask = (enc, mask) if name == "el" else (exp_enc, exp_mask)
            if name == "ref":
                q, kv = q.float(), kv.float()
            with torch.no_grad():
                out, weights = module(
                    q, kv, kv, kv_mask, incremental_state=states, static_kv=True, need_weights=True
                )
            got["output"].append(out)
            got["weights"].append(weights)
        outs[name] = _stack(got)
    return {k: (outs["ref"][k], outs["stock"][k], outs["el"][k]) for k in ("output", "weights")}


def cross_attention(
    heads: int,
    head_dim: int,
    beam: int,
    padding: bool,
    dtype: torch.dtype,
    device: str,
    kdim: Optional[int] = None,
    seed: int = 0,
) -> Outputs:
    """ELCrossAttention vs stock, 3 incremental steps, batch 3, source 9."""
    embed_dim, bsz, src_len, steps = heads * head_dim, 3, 9, 3
    kdim = kdim or embed_dim
    torch.manual_seed(seed)
    kw = dict(kdim=kdim, vdim=kdim, encoder_decoder_attention=True)
    stock = _rounded(MultiheadAttention(embed_dim, heads, **kw), dtype, device)
    modules = _triple(stock, ELCrossAttention(embed_dim, heads, **kw))
    gen = torch.Generator().manual_seed(seed + 1)
    enc = _inputs((src_len, bsz, kdim), dtype, device, gen)
    queries = [_inputs((1, bsz * beam, embed_dim), dtype, device, gen) for _ in range(steps)]
    mask = _left_padding(bsz, src_len, device) if padding else None
    return _run_cross(modules, queries, enc, mask, beam)


def _run_self(modules, x: Tensor, padding: Optional[Tensor], reorder: Tensor, hyps: int) -> Outputs:
    """Incremental self-attention over ``x`` (T, R, C), ``hyps`` hypotheses per sentence as the
    decoder records them; the cache is reordered mid-way."""
    outs: Dict[str, Tensor] = {}
    for name, module in zip(("ref", "stock", "el"), modules):
        states: Dict = {}
        set_hypotheses(states, hyps)
        got = []
        for t in range(x.size(0)):
            xt = x[t : t + 1].float() if name == "ref" else x[t : t + 1]
            step_mask = None if padding is None else padding[:, t : t + 1]
            with torch.no_grad():
                got.append(module(xt, xt, xt, step_mask, incremental_state=states)[0])
            if t == 1:  # a beam step: hypotheses copied and dropped within each sentence
                module.reorder_incremental_state(states, reorder)
        outs[name] = torch.cat([o.flatten() for o in got])
    return {"output": (outs["ref"], outs["stock"], outs["el"])}


def _beam_reorder(bsz: int, beam: int, device: str) -> Tensor:
    """Each sentence's beam keeps its best hypothesis twice and drops its last (beam > 1)."""
    within = torch.tensor([0, *range(beam - 1)]) if beam > 1 else torch.zeros(1, dtype=torch.long)
    return (torch.arange(bsz).repeat_interleave(beam) * beam + within.repeat(bsz)).to(device)


def _self_padding(rows: int, steps: int, device: str) -> Tensor:
    """(N, T) True at padding: every other hypothesis has its third position padded."""
    mask = torch.zeros(rows, steps, dtype=torch.bool)
    mask[1::2, 2] = True
    return mask.to(device)


def self_attention(
    heads: int,
    head_dim: int,
    beam: int,
    padding: bool,
    dtype: torch.dtype,
    device: str,
    seed: int = 0,
) -> Outputs:
    """ELSelfAttention vs stock, 5 incremental steps with a beam reorder, batch 3."""
    embed_dim, bsz, steps = heads * head_dim, 3, 5
    torch.manual_seed(seed)
    stock = _rounded(MultiheadAttention(embed_dim, heads, self_attention=True), dtype, device)
    modules = _triple(stock, ELSelfAttention(embed_dim, heads, self_attention=True))
    gen = torch.Generator().manual_seed(seed + 1)
    x = _inputs((steps, bsz * beam, embed_dim), dtype, device, gen)
    mask = _self_padding(bsz * beam, steps, device) if padding else None
    return _run_self(modules, x, mask, _beam_reorder(bsz, beam, device), beam)


def _stock_twin(grouped: GroupedQueryAttention, kw: Dict) -> MultiheadAttention:
    """The stock module with every key/value head repeated for its group: the same function."""
    name = "encoder_attn" if grouped.encoder_decoder_attention else "self_attn"
    prefix = f"decoder.layers.0.{name}."
    state = {prefix + k: v for k, v in grouped.state_dict().items()}
    state = repeat_kv_heads(state, grouped.num_heads, grouped.kv_heads)
    stock = MultiheadAttention(grouped.embed_dim, grouped.num_heads, **kw)
    stock.load_state_dict({k[len(prefix) :]: v for k, v in state.items()})
    return stock.to(next(grouped.parameters())).eval()


def grouped_self_attention(
    heads: int,
    kv_heads: int,
    head_dim: int,
    beam: int,
    padding: bool,
    dtype: torch.dtype,
    device: str,
    seed: int = 0,
) -> Outputs:
    """GroupedQueryAttention (N key/value heads) vs the stock module of the same function."""
    embed_dim, bsz, steps = heads * head_dim, 3, 5
    torch.manual_seed(seed)
    kw = dict(self_attention=True)
    grouped_lp = _rounded(GroupedQueryAttention(embed_dim, heads, kv_heads, **kw), dtype, device)
    stock_lp = _stock_twin(grouped_lp, kw)
    ref = copy.deepcopy(stock_lp).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x = _inputs((steps, bsz * beam, embed_dim), dtype, device, gen)
    mask = _self_padding(bsz * beam, steps, device) if padding else None
    return _run_self((ref, stock_lp, grouped_lp), x, mask, _beam_reorder(bsz, beam, device), beam)


def grouped_cross_attention(
    heads: int,
    kv_heads: int,
    head_dim: int,
    beam: int,
    padding: bool,
    dtype: torch.dtype,
    device: str,
    seed: int = 0,
) -> Outputs:
    """ELGroupedCrossAttention (EL with N key heads) vs the stock module of the same function."""
    embed_dim, kdim, bsz, src_len, steps = heads * head_dim, 10, 3, 9, 3
    torch.manual_seed(seed)
    kw = dict(kdim=kdim, vdim=kdim, encoder_decoder_attention=True)
    grouped = ELGroupedCrossAttention(embed_dim, heads, kv_heads, **kw)
    el_lp = _rounded(grouped, dtype, device)
    stock_lp = _stock_twin(el_lp, kw)
    ref = copy.deepcopy(stock_lp).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    enc = _inputs((src_len, bsz, kdim), dtype, device, gen)
    queries = [_inputs((1, bsz * beam, embed_dim), dtype, device, gen) for _ in range(steps)]
    mask = _left_padding(bsz, src_len, device) if padding else None
    return _run_cross((ref, stock_lp, el_lp), queries, enc, mask, beam)


CASES: Dict[str, Callable[..., Outputs]] = {
    "cross": cross_attention,
    "self": self_attention,
    "grouped-self": grouped_self_attention,
    "grouped-cross": grouped_cross_attention,
}
