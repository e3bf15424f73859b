"""Tables, JSON lines and plots of benchmark results.

Every printed table is preceded by what it ran on (hardware, software, threads); every row
carries the machine load measured with it, because other processes skew CPU timings.
"""

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from fairseq_el.files import atomic_write, write_text
from fairseq_el.tables import markdown_table

MIB = 1 << 20


def header(env: Dict, title: str) -> str:
    return (
        f"## {title}\n{env['cpu']}, {env['cores']} cores, {env['threads']} torch threads "
        f"({env['interop_threads']} inter-op), torch {env['torch']}, fairseq {env['fairseq']}, "
        f"Python {env['python']}, device {env['device']}"
    )


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def run_table(rows: Sequence[Dict]) -> str:
    """One row per variant: speed, time split, decoding state, peak memory, identity, load."""
    headers = (
        "variant | batch | samples/s | tokens/s | encoder s | decoder s "
        "| enc-dec state MiB | self-attn state MiB | state total MiB | peak memory MiB "
        "| identical | max score diff | load 1m"
    ).split(" | ")
    body = []
    for r in rows:
        state = r.get("decoding_state_bytes")
        if state:
            encdec = (state["encoder_out"] + state["encdec_cache"]) / MIB
            sizes = [
                f"{encdec:.4g}",
                f"{state['self_cache'] / MIB:.4g}",
                f"{state['total'] / MIB:.4g}",
            ]
        else:  # peers: their caches are not visible to the meter
            sizes = ["-", "-", "-"]
        body.append(
            [
                r["variant"],
                r["config"]["batch"],
                _num(r.get("samples_per_s"), ".3f"),
                _num(r.get("tokens_per_s"), ".1f"),
                _num(r.get("encoder_seconds"), ".2f"),
                _num(r.get("decoder_seconds"), ".2f"),
                *sizes,
                _num(r.get("peak_memory_mib"), ".0f"),
                r.get("identical", "-"),
                _num(r.get("max_score_diff"), ".1e"),
                r["load"]["load_1m"],
            ]
        )
    return markdown_table(headers, body, "lrrrrrrrrrlrr")


def ratio_lines(rows: Sequence[Dict], reference: str) -> List[str]:
    """Each variant against ``reference``: how many times smaller its state, its peak memory and
    speed as fractions of the reference's."""
    ref = next((r for r in rows if r["variant"] == reference), None)
    if ref is None or not ref.get("decoding_state_bytes"):
        return []
    rs = ref["decoding_state_bytes"]
    out = []
    for r in rows:
        if r is ref or not r.get("decoding_state_bytes"):
            continue
        s = r["decoding_state_bytes"]
        items = []
        ref_encdec = rs["encoder_out"] + rs["encdec_cache"]
        if ref_encdec:  # a language model has no encoder-decoder state
            encdec = ref_encdec / max(1, s["encoder_out"] + s["encdec_cache"])
            items.append(f"enc-dec state {encdec:.1f}x smaller")
        items.append(f"total state {rs['total'] / max(1, s['total']):.1f}x smaller")
        if r.get("peak_memory_mib") and ref.get("peak_memory_mib"):
            items.append(f"peak memory x{r['peak_memory_mib'] / ref['peak_memory_mib']:.2f}")
        if r.get("samples_per_s") and ref.get("samples_per_s"):
            items.append(f"speed x{r['samples_per_s'] / ref['samples_per_s']:.2f}")
        compiled = r.get("compile")
        if compiled:  # --el-compile: its cost, paid in the warm-up, outside the timings
            items.append(
                f"compiled ({compiled['mode']}): {compiled['graphs']} graphs in "
                f"{compiled['compile_seconds']:.1f} s at warm-up, "
                f"{compiled['graphs_in_timed_runs']} in timed runs"
                + (f", eager: {compiled['eager_reason']}" if compiled["eager_reason"] else "")
            )
        out.append(f"{r['variant']} vs {reference}: " + ", ".join(items))
    return out


def budget_table(rows: Sequence[Dict], reference: str = "stock-per-sentence") -> str:
    """Largest batch per variant, and what it would be if ``encoder_embedding`` were not held."""
    headers = (
        f"variant | state bytes per sentence | fixed bytes | from | largest batch "
        f"| vs {reference} | of which encoder_embedding | largest batch without it "
        f"| vs {reference} as held"
    ).split(" | ")
    ref = next((r for r in rows if r["variant"] == reference), None)
    body = []
    for r in rows:
        vs = f"{r['largest_batch'] / ref['largest_batch']:.2f}x" if ref else "-"
        without = r["largest_batch_without_encoder_embedding"]
        vs_without = f"{without / ref['largest_batch']:.2f}x" if ref else "-"
        body.append(
            [
                r["variant"],
                f"{r['per_sentence']:,}",
                f"{r['fixed']:,}",
                r["source"],
                r["largest_batch"],
                vs,
                f"{r['encoder_embedding_per_sentence']:,}",
                without,
                vs_without,
            ]
        )
    return markdown_table(headers, body, "lrrlrrrrr")


def state_table(states: Dict[str, Dict[str, int]], embedding: Dict[str, int]) -> str:
    """Decoding state by part per variant, and the encoder-decoder part's ratios to each stock
    variant, as held and with ``encoder_embedding`` (never read by the decoder) left out."""
    headers = (
        "variant | encoder output MiB | of which encoder_embedding MiB "
        "| enc-dec cache MiB | self-attn cache MiB | total MiB "
        "| enc-dec state vs per-sentence | vs per-beam "
        "| without encoder_embedding: vs per-sentence | vs per-beam"
    ).split(" | ")

    def encdec(v: str) -> int:
        return states[v]["encoder_out"] + states[v]["encdec_cache"]

    body = []
    for v, p in states.items():
        held, lean = encdec(v), encdec(v) - embedding[v]
        ratios = [f"{encdec(ref) / held:.1f}x" for ref in ("stock-per-sentence", "stock-per-beam")]
        ratios += [f"{encdec(ref) / lean:.1f}x" for ref in ("stock-per-sentence", "stock-per-beam")]
        mib = [p["encoder_out"], embedding[v], p["encdec_cache"], p["self_cache"], p["total"]]
        body.append([v, *(f"{x / MIB:.1f}" for x in mib), *ratios])
    return markdown_table(headers, body, "l" + "r" * 9)


def write_jsonl(path: str, records: Iterable[Dict]) -> None:
    """Append ``records`` to the JSON lines file ``path``, atomically: all of them or none."""
    old = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"  # a torn last line stays torn, but the new records start on their own line
    new = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    write_text(path, old + new)


def plot_sweep(rows: Sequence[Dict], path: str, title: str) -> None:
    """Samples/s, decoding state and peak memory against batch size, one line per variant."""
    try:
        import matplotlib
    except ImportError as err:
        from fairseq_el.usage import UsageError

        raise UsageError("--plot needs matplotlib: pip install 'fairseq-el[bench]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    variants = sorted({r["variant"] for r in rows}, key=[r["variant"] for r in rows].index)
    for variant in variants:
        mine = sorted(
            (r for r in rows if r["variant"] == variant), key=lambda r: r["config"]["batch"]
        )
        batch = [r["config"]["batch"] for r in mine]
        axes[0].plot(batch, [r.get("samples_per_s") for r in mine], "o-", label=variant)
        axes[1].plot(
            batch, [r["decoding_state_bytes"]["total"] / MIB for r in mine], "o-", label=variant
        )
        axes[2].plot(batch, [r["peak_memory_mib"] for r in mine], "o-", label=variant)
    for ax, label in zip(axes, ("samples/s", "decoding state (MiB)", "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def _invocations(rows: Sequence[Dict]) -> List[Tuple[Dict, Dict]]:
    """(reference, EL) pairs of runs that one ``fairseq-el-benchmark`` invocation measured: the
    same config (model options, search and dtype included), a ``stock-*`` row then an ``el*``
    row, paired in the order they were appended."""
    waiting: Dict[str, List[Dict]] = {}
    pairs = []
    for r in rows:
        if r.get("kind") != "run":
            continue
        key = json.dumps(r["config"], sort_keys=True)
        if r["variant"].startswith("stock"):
            waiting.setdefault(key, []).append(r)
        elif waiting.get(key):
            pairs.append((waiting[key].pop(0), r))
    return pairs


def speedup_table(rows: Sequence[Dict]) -> str:
    """One line per invocation: EL (its model options) against the stock variant it ran beside,
    samples/s, the ratio, tokens identical, what compiling cost (outside the timings) and peak
    memory as a fraction of stock's."""
    headers = (
        "shape | batch | search | steps | dtype | stock variant | stock samples/s | EL options "
        "| EL samples/s | speed | identical | graphs, compile s | peak memory | load 1m"
    ).split(" | ")
    body = []
    for ref, el in _invocations(rows):
        c = el["config"]
        compiled = el.get("compile")
        cost = "-" if not compiled else f"{compiled['graphs']}, {compiled['compile_seconds']:.0f}"
        body.append(
            [
                c["shape"],
                c["batch"],
                c["search"],
                c["steps"],
                c["dtype"],
                ref["variant"],
                f"{ref['samples_per_s']:.3f}",
                " ".join(c.get("model_options") or []) or "-",
                f"{el['samples_per_s']:.3f}",
                f"x{el['samples_per_s'] / ref['samples_per_s']:.2f}",
                el["tokens_sha1"] == ref["tokens_sha1"],
                cost,
                f"x{el['peak_memory_mib'] / ref['peak_memory_mib']:.2f}",
                f"{max(ref['load']['load_1m'], el['load']['load_1m']):.2f}",
            ]
        )
    return markdown_table(headers, body, "lrlrllrlrrllrr")


def dtype_gain_table(rows: Sequence[Dict], low: str = "bf16") -> str:
    """What ``low`` gains over fp32 for each variant and configuration measured in both
    (samples/s in ``low`` over samples/s in fp32; separate invocations)."""
    fp32: Dict[str, Dict] = {}
    for r in rows:
        if r.get("kind") == "run" and r["config"]["dtype"] == "fp32":
            fp32[_without_dtype(r)] = r
    headers = (
        f"shape | batch | search | variant | EL options | fp32 samples/s | {low} samples/s "
        f"| {low} gain"
    ).split(" | ")
    body = []
    for r in rows:
        if r.get("kind") != "run" or r["config"]["dtype"] != low:
            continue
        base = fp32.get(_without_dtype(r))
        if base is None:
            continue
        c = r["config"]
        body.append(
            [
                c["shape"],
                c["batch"],
                c["search"],
                r["variant"],
                " ".join(c.get("model_options") or []) or "-",
                f"{base['samples_per_s']:.3f}",
                f"{r['samples_per_s']:.3f}",
                f"x{r['samples_per_s'] / base['samples_per_s']:.2f}",
            ]
        )
    return markdown_table(headers, body, "lrlllrrr")


def _without_dtype(r: Dict) -> str:
    return json.dumps({**r["config"], "dtype": None, "variant": r["variant"]}, sort_keys=True)
