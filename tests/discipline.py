"""Device and sync discipline of decoding, checked on the CPU (tests only).

Two faults pass every CPU test and break or slow a CUDA run:

* a tensor **factory without a device** (``torch.arange(n)``, ``torch.zeros(...)``,
  ``torch.tensor(...)``) in decoding code: on CUDA a device mismatch, or a host-to-device copy per
  step. Tensors derived from another tensor (``*_like``, ``Tensor.new_*``, ``out=``,
  ``torch.tensor(t)`` of a tensor) carry its device and are fine; so is ``device=...``.
* a **host sync** (``bool(t)``, ``.item()``, ``.tolist()``, ``torch.unique``, ``nonzero``,
  ``.cpu()``, ...) in a decoding step: on CUDA it stalls the stream and rules out CUDA graphs.

``Discipline`` records both while decoding runs::

    with Discipline() as d:
        hypos = generate(...)          # wrap the generate call only, after the model is built
    print(d.report("case"))
    d.assert_clean()

How. A :class:`torch.overrides.TorchFunctionMode` sees every torch call made while it is active
(factories included: a mode needs no tensor argument). For a factory or a sync it walks up from
``__torch_function__`` past torch's own frames (its Python wrappers such as ``torch.unique`` or
``handle_torch_function``; nested torch calls run with the mode off, so each recorded call was made
by non-torch code) to the calling frame, and attributes the call by that frame's file: under
``fairseq_el`` (or another root given to ``Discipline``), under ``fairseq``, or other.

Verified on torch 2.13 (``tests/model/test_device_discipline.py`` plants all but the rarest): the
ops in ``FACTORIES`` and ``SYNCS`` below reach ``__torch_function__`` under a mode,
``Tensor.__bool__``, ``__int__``, ``__float__``, ``__index__``, ``__contains__``, ``__format__``,
``__array__``, ``item``, ``tolist``, ``numpy`` and ``cpu`` included. Four do not:
``torch.from_numpy``, ``torch.frombuffer`` (factories, always on the CPU) and
``torch.cuda.synchronize`` are wrapped as module attributes while the harness is active; the
legacy constructors (``torch.Tensor(...)``, ``torch.LongTensor(...)``) cannot be wrapped and
are found by :func:`legacy_constructor_calls`, a scan of the source.

When. Only inside fairseq's ``SequenceGenerator._generate`` (the decoding of a batch: encoder,
reorders, steps), so model building and a runner's own bookkeeping are outside. Each recorded
call gets a phase: ``first`` (before the generator's first ``forward_decoder`` returns: encoder,
initial expansion, the first step, a policy's first decision, a prompt's prefill) or ``step``
(every later step, reorders included). Steps are the generator's ``forward_decoder`` calls;
``decoder_calls`` counts the decoder forwards with an incremental state (fewer when a prompt is
prefilled). The rule ``assert_clean`` checks: no implicit-device factory from fairseq_el in any
phase, no sync from fairseq_el in the ``step`` phase. fairseq's own syncs (its generator, search,
``EnsembleModel``) are counted and reported, never failed on.
"""

import ast
import contextlib
import functools
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

import fairseq
import torch
from fairseq.models.transformer import TransformerDecoderBase
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator
from torch.overrides import TorchFunctionMode

import fairseq_el

FAIRSEQ_EL = Path(fairseq_el.__file__).resolve().parent
FAIRSEQ = Path(fairseq.__file__).resolve().parent
# torch's own frames, skipped to find the caller (the path as imported, and resolved)
TORCH = tuple({str(Path(torch.__file__).parent) + os.sep,
               str(Path(torch.__file__).resolve().parent) + os.sep})  # fmt: skip
HERE = {__file__, str(Path(__file__).resolve())}

# factories that make a tensor from sizes or data: a device is needed unless given a tensor
FACTORIES = {
    torch.arange, torch.zeros, torch.ones, torch.empty, torch.full, torch.tensor, torch.as_tensor,
    torch.asarray, torch.randn, torch.rand, torch.randint, torch.randperm, torch.eye,
    torch.linspace, torch.logspace, torch.empty_strided, torch.scalar_tensor, torch.tril_indices,
    torch.triu_indices, torch.range, torch.normal, torch.bartlett_window, torch.hann_window,
    torch.hamming_window, torch.blackman_window, torch.kaiser_window,
}  # fmt: skip
FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}  # a tensor argument keeps its device
# calls that copy a value to the host (or wait for the device) by name, methods and functions
SYNCS = {
    "__bool__", "__int__", "__float__", "__index__", "__complex__", "__contains__", "__format__",
    "__repr__", "__str__", "__array__", "item", "tolist", "numpy", "cpu", "unique",
    "unique_consecutive", "nonzero", "argwhere", "masked_select", "equal", "allclose",
    "is_nonzero", "bincount",
}  # fmt: skip
INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}  # with a bool mask: nonzero

FACTORY, SYNC = "factory", "sync"
FIRST, STEP = "first", "step"


class Site(NamedTuple):
    """Where a call was made: file (relative to its package's parent), line, function."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.function})"


class Event(NamedTuple):
    kind: str  # FACTORY or SYNC
    op: str  # the torch name, e.g. "arange", "__bool__", "where(cond)"
    origin: str  # "fairseq_el", "fairseq" or "other"
    site: Site
    phase: str  # FIRST or STEP


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _is_cpu(x: Any) -> bool:
    """A literal ``"cpu"``: a ``torch.device`` may be some tensor's ``.device``, which on a CPU
    run is the CPU too (``.to(src.device)`` follows its tensor and is fine)."""
    return isinstance(x, str) and x.split(":")[0] == "cpu"


def _bool_index(index: Any) -> bool:
    items = index if isinstance(index, (tuple, list)) else (index,)
    return any(_is_tensor(i) and i.dtype in (torch.bool, torch.uint8) for i in items)


def classify(func: Callable, args: Sequence[Any], kwargs: Dict[str, Any]) -> Optional[str]:
    """The op name if ``func(*args, **kwargs)`` is an implicit-device factory or a host sync
    (as ``"factory:name"`` / ``"sync:name"``), else None."""
    if func in FACTORIES:
        if kwargs.get("device") is not None or kwargs.get("out") is not None:
            return None
        if func in FROM_DATA and args and _is_tensor(args[0]):
            return None
        if func is torch.normal and any(_is_tensor(a) for a in args):
            return None  # normal(mean_tensor, std): derived
        return f"{FACTORY}:{func.__name__}"
    name = getattr(func, "__name__", None)
    if name in SYNCS:
        return f"{SYNC}:{name}"
    if name == "where" and len(args) == 1 and not kwargs:
        return f"{SYNC}:where(cond)"
    if name == "repeat_interleave" and kwargs.get("output_size") is None:
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        if _is_tensor(repeats) or (len(args) == 1 and _is_tensor(args[0]) and not kwargs):
            return f"{SYNC}:repeat_interleave(tensor repeats)"
    if name in INDEXING and len(args) > 1 and _bool_index(args[1]):
        return f"{SYNC}:{name}(bool mask)"
    if name == "to" and (any(_is_cpu(a) for a in args[1:]) or _is_cpu(kwargs.get("device"))):
        return f"{SYNC}:to(cpu)"
    return None


class DisciplineError(AssertionError):
    """A decoding made an implicit-device factory or a per-step host sync from fairseq_el."""


@dataclass
class _Generate:
    steps: int = 0  # the generator's forward_decoder calls
    first_done: bool = False


@dataclass
class Discipline:
    """Records implicit-device factories and host syncs made while decoding (see module doc).

    ``roots``: folders whose code counts as fairseq_el's (default: the package); a test adds the
    folder of a planted fault.
    """

    roots: Tuple[Path, ...] = (FAIRSEQ_EL,)
    events: List[Event] = field(default_factory=list)
    steps: int = 0  # generator steps (forward_decoder calls), all generates
    decoder_calls: int = 0  # decoder forwards with an incremental state
    generates: int = 0
    rows: List[int] = field(default_factory=list)  # hypothesis rows at every step
    _current: Optional[_Generate] = None
    _depth: Dict[str, int] = field(default_factory=dict)
    _patches: List[Tuple[Any, str, Any]] = field(default_factory=list)
    _mode: Optional[TorchFunctionMode] = None

    def __post_init__(self) -> None:
        self._roots = tuple(str(Path(r).resolve()) + os.sep for r in self.roots)

    # -- context -------------------------------------------------------------------------------

    def __enter__(self) -> "Discipline":
        self._patch_methods(SequenceGenerator, "_generate", self._wrap_generate)
        self._patch_methods(EnsembleModel, "forward_decoder", self._wrap_forward_decoder)
        self._patch_methods(TransformerDecoderBase, "forward", self._wrap_decoder_forward)
        # not seen by a TorchFunctionMode on torch 2.13: wrapped where they are looked up
        for name, kind in (("from_numpy", FACTORY), ("frombuffer", FACTORY)):
            self._patch(torch, name, self._wrap_unseen(getattr(torch, name), kind, name))
        synchronize = self._wrap_unseen(torch.cuda.synchronize, SYNC, "cuda.synchronize")
        self._patch(torch.cuda, "synchronize", synchronize)
        self._mode = _Mode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        assert self._mode is not None
        self._mode.__exit__(*exc)
        for owner, name, original in reversed(self._patches):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._patches.clear()

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._patches.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, value)

    def _patch_methods(self, base: type, name: str, wrap: Callable) -> None:
        """Wrap ``name`` on ``base`` and on every subclass defining its own (outermost call)."""
        classes, todo = [], [base]
        while todo:
            cls = todo.pop()
            classes.append(cls)
            todo.extend(cls.__subclasses__())
        for cls in dict.fromkeys(classes):
            if name in cls.__dict__:
                self._patch(cls, name, wrap(cls.__dict__[name], name))

    def _outermost(self, key: str, method: Callable, enter: Callable, leave: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            depth = self._depth.get(key, 0)
            if depth == 0:
                enter(args, kwargs)
            self._depth[key] = depth + 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth[key] = depth
                if depth == 0:
                    leave()

        return wrapper

    def _wrap_generate(self, method: Callable, name: str) -> Callable:
        def enter(args, kwargs):
            self.generates += 1
            self._current = _Generate()

        def leave():
            self._current = None

        return self._outermost(name, method, enter, leave)

    def _wrap_forward_decoder(self, method: Callable, name: str) -> Callable:
        def enter(args, kwargs):
            if self._current is not None:
                self._current.steps += 1
                self.steps += 1
                tokens = args[1] if len(args) > 1 else kwargs["tokens"]
                self.rows.append(tokens.size(0))

        def leave():
            if self._current is not None:
                self._current.first_done = True

        return self._outermost(name, method, enter, leave)

    def _wrap_decoder_forward(self, method: Callable, name: str) -> Callable:
        def enter(args, kwargs):
            state = kwargs.get("incremental_state", args[3] if len(args) > 3 else None)
            if self._current is not None and state is not None:
                self.decoder_calls += 1

        return self._outermost("decoder." + name, method, enter, lambda: None)

    def _wrap_unseen(self, original: Callable, kind: str, op: str) -> Callable:
        def wrapper(*args, **kwargs):
            self.record(f"{kind}:{op}", sys._getframe(1))
            return original(*args, **kwargs)

        return wrapper

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Record as if in a later decoding step (for testing the harness on plain calls)."""
        outer, self._current = self._current, _Generate(first_done=True)
        try:
            yield
        finally:
            self._current = outer

    # -- recording -----------------------------------------------------------------------------

    def record(self, what: str, frame) -> None:
        """Record ``what`` ("kind:op") made from ``frame`` or its first non-torch caller."""
        if self._current is None:
            return  # not decoding
        while frame is not None and (
            frame.f_code.co_filename.startswith(TORCH) or frame.f_code.co_filename in HERE
        ):
            frame = frame.f_back
        if frame is None:
            return
        kind, op = what.split(":", 1)
        path = _resolved(frame.f_code.co_filename)
        if any(path.startswith(root) for root in self._roots):
            origin = "fairseq_el"
        elif path.startswith(str(FAIRSEQ) + os.sep):
            origin = "fairseq"
        else:
            origin = "other"
        site = Site(_short(path), frame.f_lineno, frame.f_code.co_name)
        phase = STEP if self._current.first_done else FIRST
        self.events.append(Event(kind, op, origin, site, phase))

    # -- results -------------------------------------------------------------------------------

    def count(self, kind: str, origin: str = "fairseq_el",
              phases: Iterable[str] = (FIRST, STEP)) -> Counter:  # fmt: skip
        """(site, op) -> calls of ``kind`` from ``origin`` in ``phases``."""
        phases = set(phases)
        return Counter(
            (e.site, e.op)
            for e in self.events
            if e.kind == kind and e.origin == origin and e.phase in phases
        )

    @property
    def later_steps(self) -> int:
        """Steps after the first of each generate: what ``step``-phase counts are divided by."""
        return max(1, self.steps - self.generates)

    def violations(self) -> Dict[str, Counter]:
        """What :meth:`assert_clean` fails on: implicit-device factories from fairseq_el while
        decoding, syncs from fairseq_el in the steps after the first."""
        return {
            "implicit-device factories (fairseq_el)": self.count(FACTORY),
            "syncs per step (fairseq_el)": self.count(SYNC, phases=(STEP,)),
        }

    def summary(self) -> Dict[str, float]:
        """Counts: fairseq_el factories, fairseq_el / fairseq syncs (first step, per later step)."""
        n = self.later_steps
        out = {
            "steps": self.steps,
            "decoder_calls": self.decoder_calls,
            "factories_fairseq_el": sum(self.count(FACTORY).values()),
        }
        for origin in ("fairseq_el", "fairseq", "other"):
            out[f"syncs_{origin}_first"] = sum(self.count(SYNC, origin, (FIRST,)).values())
            out[f"syncs_{origin}_per_step"] = sum(self.count(SYNC, origin, (STEP,)).values()) / n
        return out

    def report(self, name: str = "") -> str:
        """Counts per category with their source locations."""
        s = self.summary()
        n = self.later_steps
        lines = [
            f"discipline {name}: {self.generates} generate(s), {s['steps']} steps, "
            f"{s['decoder_calls']} incremental decoder calls, rows per step {_runs(self.rows)}",
        ]
        sections = [
            ("implicit-device factories from fairseq_el", FACTORY, "fairseq_el", (FIRST, STEP)),
            ("syncs from fairseq_el, first step", SYNC, "fairseq_el", (FIRST,)),
            ("syncs from fairseq_el, later steps", SYNC, "fairseq_el", (STEP,)),
            ("syncs from fairseq (stock's; not failed on), first step", SYNC, "fairseq", (FIRST,)),
            ("syncs from fairseq (stock's; not failed on), later steps", SYNC, "fairseq", (STEP,)),
            ("syncs from other code, later steps", SYNC, "other", (STEP,)),
        ]
        for title, kind, origin, phases in sections:
            counts = self.count(kind, origin, phases)
            total = sum(counts.values())
            per = f", {total / n:.2f} per step" if phases == (STEP,) else ""
            lines.append(f"  {title}: {total}{per}")
            for (site, op), c in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
                lines.append(f"    {c:5d}  {op:<28s} {site}")
        return "\n".join(lines)

    def assert_clean(self) -> None:
        bad = {title: counts for title, counts in self.violations().items() if counts}
        if bad:
            lines = []
            for title, counts in bad.items():
                lines.append(f"{title}: {sum(counts.values())}")
                lines += [f"  {c:5d}  {op} at {site}" for (site, op), c in sorted(counts.items())]
            raise DisciplineError("decoding discipline violated\n" + "\n".join(lines))


class _Mode(TorchFunctionMode):
    def __init__(self, discipline: Discipline) -> None:
        super().__init__()
        self.discipline = discipline

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.discipline._current is not None:
            what = classify(func, args, kwargs)
            if what is not None:
                self.discipline.record(what, sys._getframe(1))
        return func(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _resolved(filename: str) -> str:
    return str(Path(filename).resolve())


def _short(path: str) -> str:
    for root in (FAIRSEQ_EL, FAIRSEQ):
        if path.startswith(str(root) + os.sep):
            return str(Path(path).relative_to(root.parent))
    return path


def _runs(values: Sequence[int]) -> str:
    """[8, 8, 8, 4] -> '8x3 4x1'."""
    out: List[str] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return " ".join(f"{v}x{c}" for v, c in out) or "-"


LEGACY = {f"{p}Tensor" for p in ("", "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short",
                                 "Char", "Byte", "Bool")}  # fmt: skip


def legacy_constructor_calls(paths: Iterable[Path]) -> List[str]:
    """``torch.LongTensor(...)``-style calls (CPU tensors, unseen by a TorchFunctionMode) in the
    Python files under ``paths``: ``file:line name``."""
    found = []
    for root in paths:
        for path in sorted(Path(root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                    and node.func.attr in LEGACY
                ):
                    found.append(f"{_short(str(path.resolve()))}:{node.lineno} {node.func.attr}")
    return found
