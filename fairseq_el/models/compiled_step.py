"""The decoder's incremental step through ``torch.compile`` (``--el-compile``).

What is compiled: one function over every layer of the decoder (:func:`decoder_step`: token
embedding, the stock layer modules with their EL attention and static caches, final layer norm,
the output projection when called through ``forward``), with ``fullgraph=True``, so a graph
break is an error, never a silent split. What stays eager: the positions (fairseq computes them
from the step number, a Python int), the generator's log-softmax, search and reorders, step 0 of
a run (it allocates the caches), and every full-sequence call (training, scoring, prompts).

Shapes: the caches are static (:mod:`fairseq_el.attention.cache`): their capacity changes only
when a buffer grows (O(log T) times), their write position is a tensor; rows change only when
sentences finish. Rows, sentences, source length and capacity are symbolic from the first graph
on (:func:`_mark_shapes`, with ``R = B k`` checked at the top of the step), so a run compiles a
graph for its search width ``k`` (a constant of the code), and one more for a single sentence (a
size dynamo specializes), counted in :class:`CompileStats`. Each
decoder compiles its own copy of the step's code, so models never evict each other from dynamo's
cache (its ``recompile_limit`` is per code).

Weights: on a CPU, inductor *freezes* the step (its ``freezing``): the decoder's weights become
constants of the graph, prepacked for oneDNN's matmuls. A frozen graph would keep decoding with
the weights it was compiled with, so each run first compares the decoder's :func:`weights_token`
(every parameter's and buffer's storage, version counter and dtype) with the one it compiled
against, and compiles afresh when the weights changed (an in-place update, ``load_state_dict``,
a new device or dtype). Writes through ``tensor.data`` bypass version counters, as they bypass
autograd: after one, call :meth:`CompiledStep.forget`.

When compiling is impossible (no ``torch.compile``, an option the step does not cover, a
compiler missing or failing), the decoder decodes eagerly and logs one line saying why.
"""

import itertools
import logging
import time
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from fairseq_el.attention.cache import hypotheses

logger = logging.getLogger(__name__)

# graphs one decoder may compile before it decodes eagerly (dynamo's default is 8 per code; each
# search width k compiles up to two, see above)
RECOMPILE_LIMIT = 32


@dataclass
class CompileStats:
    """Compile cost of one decoding run (one generator call).

    ``graphs``: graphs dynamo compiled during the run's steps; ``compile_seconds``: wall time of
    the steps that compiled (compiling dominates them); ``compiled_steps`` / ``eager_steps``:
    incremental steps run compiled / eagerly (step 0 of a run is always eager and not counted);
    ``graph_breaks``: breaks dynamo counted in those steps (0: ``fullgraph`` refuses any);
    ``eager_reason``: why the step runs eagerly (None while it compiles)."""

    mode: str
    graphs: int = 0
    compile_seconds: float = 0.0
    compiled_steps: int = 0
    eager_steps: int = 0
    graph_breaks: int = 0
    eager_reason: Optional[str] = None
    graph_shapes: List[str] = field(default_factory=list)  # per graph: rows, source length
    logged: bool = False

    def summary(self) -> str:
        if self.eager_reason is not None and not self.compiled_steps:
            return f"--el-compile {self.mode}: eager ({self.eager_reason})"
        return (
            f"--el-compile {self.mode}: {self.compiled_steps} steps compiled, "
            f"{self.eager_steps} eager; {self.graphs} graphs compiled in "
            f"{self.compile_seconds:.1f} s"
        )


def decoder_step(
    decoder,
    tokens: Tensor,
    positions: Optional[Tensor],
    enc: Optional[Tensor],
    padding_mask: Optional[Tensor],
    incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
    alignment_layer: int,
    alignment_heads: Optional[int],
    project: bool = False,
) -> Tuple[Tensor, Optional[Tensor], List[Optional[Tensor]]]:
    """One incremental step of a fairseq ``TransformerDecoderBase`` through its stock layer
    modules: what ``extract_features_scriptable`` does for one token, without its host sync
    (the self-attention padding mask is always passed: static caches always keep padding).

    tokens: (R, 1) the step's tokens; positions: (R, 1, C) or None. Returns the features
    (R, 1, C) (``project``: the output layer's logits, (R, 1, V)), the alignment layer's
    head-averaged attention and the inner states."""
    k = hypotheses(incremental_state)
    if k is not None and enc is not None:
        # R = B k: without it R and B are unrelated sizes, every "R // B" (fairseq's per-sentence
        # attention views its queries as (B, -1, ...)) a floor division the shape solver carries
        # through every layer, which took minutes to compile at 6 layers and hours at 12
        torch._check(tokens.size(0) == k * enc.size(1))
    x = decoder.embed_scale * decoder.embed_tokens(tokens)  # (R, 1, C)
    if decoder.quant_noise is not None:
        x = decoder.quant_noise(x)
    if decoder.project_in_dim is not None:
        x = decoder.project_in_dim(x)
    if positions is not None:
        x = x + positions
    if decoder.layernorm_embedding is not None:
        x = decoder.layernorm_embedding(x)
    x = decoder.dropout_module(x).transpose(0, 1)  # (1, R, C)
    self_attn_padding_mask = tokens.eq(decoder.padding_idx)  # (R, 1)
    attn: Optional[Tensor] = None
    inner_states: List[Optional[Tensor]] = [x]
    for idx, layer in enumerate(decoder.layers):
        x, layer_attn, _ = layer(
            x,
            enc,
            padding_mask,
            incremental_state,
            self_attn_mask=None,
            self_attn_padding_mask=self_attn_padding_mask,
            need_attn=idx == alignment_layer,
            need_head_weights=idx == alignment_layer,
        )
        inner_states.append(x)
        if layer_attn is not None and idx == alignment_layer:
            attn = layer_attn.float().to(x)
    if attn is not None:
        if alignment_heads is not None:
            attn = attn[:alignment_heads]
        attn = attn.mean(dim=0)  # average over heads
    if decoder.layer_norm is not None:
        x = decoder.layer_norm(x)
    x = x.transpose(0, 1)  # (R, 1, C)
    if decoder.project_out_dim is not None:
        x = decoder.project_out_dim(x)
    if project:
        x = decoder.output_layer(x)  # (R, 1, V)
    return x, attn, inner_states


def _own_copy(fn: Callable) -> Callable:
    """``fn`` with a code object of its own: dynamo caches compiled graphs per code object, so
    each decoder gets its own cache and recompile limit."""
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


def _mark_shapes(decoder, tokens, positions, enc, padding_mask, incremental_state, *_) -> None:
    """Which sizes are symbolic. The step compiles with ``dynamic=True``: every size of its
    inputs is symbolic unless marked, and equal sizes share a symbol ("duck sizing"). Rows and
    sentences (dimension 0 everywhere) are left to that: each is one symbol across all inputs,
    tied by ``R = B k``, so views such as fairseq's ``(B, -1, H, ...)`` of R rows simplify. Cache
    capacities and source lengths (dimension -2 of the caches, the source dimension of the
    encoder output and masks) are marked dynamic (a symbol each: a source length that equals a
    capacity must not make the capacity's growth compile again); heads, head and model widths
    and ``k`` are static (constants of the model and the run)."""
    mark_dynamic, mark_static = torch._dynamo.maybe_mark_dynamic, torch._dynamo.mark_static
    if positions is not None:
        mark_static(positions, 2)
    if enc is not None:
        mark_dynamic(enc, 0)
        mark_static(enc, 2)
    if padding_mask is not None:
        mark_dynamic(padding_mask, 1)
    for buffer in incremental_state.values():
        for tensor in buffer.values():
            if not isinstance(tensor, Tensor) or tensor.dim() < 2:
                continue
            capacity = 1 if tensor.dim() == 2 else tensor.dim() - 2  # (B, S) masks; (..., T, F)
            mark_dynamic(tensor, capacity)
            for dim in range(1, tensor.dim()):
                if dim != capacity:
                    mark_static(tensor, dim)


def log_run(stats: CompileStats) -> None:
    """One line per run that compiled or ran compiled steps, once."""
    if not stats.logged and (stats.compiled_steps or stats.graphs):
        stats.logged = True
        logger.info(f"fairseq-el: {stats.summary()}")


WeightsToken = Tuple[Tuple[int, int, torch.dtype], ...]


def weights_token(module: torch.nn.Module) -> WeightsToken:
    """What a frozen graph baked in from ``module``: per parameter and buffer, its storage
    (data pointer), version counter (bumped by every in-place write but ``.data``'s) and dtype."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)


def freezes(backend: str, device: torch.device) -> bool:
    """Whether the step's graphs are frozen: inductor on a CPU (see the module's docstring).
    Dynamo reads ``freezing`` from inductor's config while it traces, so it is set around
    every call, not passed as a compile option (where it would not reach the trace)."""
    return backend == "inductor" and device.type == "cpu"


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


class CompiledStep:
    """:func:`decoder_step` through ``torch.compile`` for one decoder, with its stats; falls
    back to the same function run eagerly, logging once why, if compiling fails."""

    def __init__(self, mode: str):
        self.stats = CompileStats(mode)  # the current (or last) run's
        self.runs, self.total_graphs, self.total_compile_seconds = 0, 0, 0.0
        self.mode = mode
        self.backend = "inductor"  # tests may trace with "aot_eager" (no C++ compile)
        self._compiled: Optional[Callable] = None
        self._weights: Optional[WeightsToken] = None  # what the compiled graphs baked in
        self.eager_reason: Optional[str] = None
        if not hasattr(torch, "compile"):
            self.give_up(f"torch {torch.__version__} has no torch.compile")

    def new_run(self, decoder: torch.nn.Module) -> CompileStats:
        """Stats for a new run of ``decoder``; the last run's are logged now if its end was not
        seen. Graphs compiled against other weights are dropped (frozen graphs hold them)."""
        log_run(self.stats)
        self.runs += 1
        self.stats = CompileStats(self.mode, eager_reason=self.eager_reason)
        weights = weights_token(decoder)
        if self._compiled is not None and weights != self._weights:
            logger.info(
                f"fairseq-el: --el-compile {self.mode}: the weights changed; compiling again"
            )
            self.forget()
        self._weights = weights
        return self.stats

    def forget(self) -> None:
        """Drop the compiled graphs (the next step compiles afresh, with the weights then)."""
        self._compiled = None

    def give_up(self, reason: str) -> None:
        if self.eager_reason is None:
            logger.warning(f"fairseq-el: --el-compile {self.mode}: {reason}; decoding eagerly")
        self.eager_reason = self.stats.eager_reason = reason

    def _compile(self) -> Callable:
        if self._compiled is None:
            mode = None if self.mode == "default" or self.backend != "inductor" else self.mode
            self._compiled = torch.compile(
                _own_copy(decoder_step),
                fullgraph=True,
                backend=self.backend,
                mode=mode,
                dynamic=True,
            )
        return self._compiled

    def __call__(self, *args) -> Tuple[Tensor, Optional[Tensor], List[Optional[Tensor]]]:
        if self.eager_reason is not None:
            self.stats.eager_steps += 1
            return decoder_step(*args)
        _mark_shapes(*args)
        graphs, breaks, start = _graphs_compiled(), _graph_breaks(), time.perf_counter()
        try:
            # a frame past its recompile limit would silently run eagerly: make it an error;
            # Python numbers (k, the alignment layer, scales, eps) are constants, not inputs
            limit = torch._dynamo.config.patch(
                recompile_limit=RECOMPILE_LIMIT,
                fail_on_recompile_limit_hit=True,
                specialize_int=True,
                specialize_float=True,
            )
            frozen = torch._inductor.config.patch(freezing=freezes(self.backend, args[1].device))
            with limit, frozen:
                out = self._compile()(*args)
        except Exception as error:  # a compiler missing or failing (before its graph runs)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.give_up(f"compiling failed ({type(error).__name__}: {first[:200]})")
            self.stats.eager_steps += 1
            return decoder_step(*args)
        new = _graphs_compiled() - graphs
        self.stats.compiled_steps += 1
        self.stats.graph_breaks += _graph_breaks() - breaks
        if new:
            seconds = time.perf_counter() - start
            self.stats.graphs += new
            self.stats.compile_seconds += seconds
            self.total_graphs += new
            self.total_compile_seconds += seconds
            tokens, enc = args[1], args[3]
            source = "" if enc is None else f", source {enc.size(0)}"
            self.stats.graph_shapes.append(f"rows {tokens.size(0)}{source}")
        return out
