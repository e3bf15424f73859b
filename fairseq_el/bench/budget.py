"""Fixed-budget throughput: each variant at its own automatic batch within one memory budget.

What EL's smaller decoding state buys on a real job: ``fairseq-el-generate --batch-size auto``
picks, per variant, the largest batch whose weights, encoder transient and decoding state fit the
budget (:class:`fairseq_el.generate.batching.AutoBatch`, the project's exact state count); each
variant then runs at that batch on the same sources. Beside it, the roofline model's prediction
of the same comparison on a GPU (:mod:`fairseq_el.bench.analytic`), whose memory is the budget.
"""

import dataclasses
from typing import Callable, Dict, List, Sequence

from fairseq_el.accounting import GIB
from fairseq_el.bench import analytic
from fairseq_el.bench.models import build_variant
from fairseq_el.bench.precision import DTYPES
from fairseq_el.bench.shapes import Config
from fairseq_el.generate.batching import AutoBatch, ModelMemory, weight_bytes
from fairseq_el.tables import markdown_table


def chosen_batch(config: Config, variant: str, budget_bytes: int) -> Dict[str, int]:
    """The batch ``--batch-size auto`` picks for ``variant`` on ``config`` within the budget,
    the encoder's sentences per pass and the predicted peak bytes."""
    model, _ = build_variant(config, variant)
    memory = ModelMemory.of(model)
    positions = model.max_decoder_positions()
    auto = AutoBatch(
        [memory],
        weight_bytes([model]),
        budget_bytes,
        config.hypotheses,
        0.0,
        config.steps,
        positions,
    )
    bucket = auto.bucket(config.src_len)
    batch = auto.batch(bucket)
    per_pass = auto.per_pass(memory, bucket)
    return {"batch": batch, "per_pass": per_pass or 0, "peak": auto.peak(max(batch, 1), bucket)}


def fixed_budget_rows(
    config: Config,
    variants: Sequence[str],
    budget_gib: float,
    run: Callable[[Config, str], Dict],
) -> List[Dict]:
    """One row per variant: its automatic batch, measured throughput and peak, and the GPU
    roofline prediction at the same setting; ``run(config, variant)`` measures one run."""
    budget = int(budget_gib * GIB)
    rows = []
    for variant in variants:
        chosen = chosen_batch(config, variant, budget)
        if chosen["batch"] == 0:
            rows.append(
                {"kind": "budget", "variant": variant, "batch": 0, "budget_gib": budget_gib}
            )
            continue
        options = list(config.model_options)
        if variant.startswith("el") and chosen["per_pass"]:
            options.append(f"el_encoder_batch={chosen['per_pass']}")
        at_batch = dataclasses.replace(config, batch=chosen["batch"], model_options=tuple(options))
        result = run(at_batch, variant)
        rows.append(
            {
                "kind": "budget",
                "variant": variant,
                "budget_gib": budget_gib,
                "batch": chosen["batch"],
                "encoder_per_pass": chosen["per_pass"],
                "predicted_peak_mib": chosen["peak"] / (1 << 20),
                "samples_per_s": result.get("samples_per_s"),
                "peak_memory_mib": result.get("peak_memory_mib"),
                "peak_memory_kind": result.get("peak_memory_kind"),
                "tokens_sha1": result.get("tokens_sha1"),
                "config": dataclasses.asdict(at_batch),
            }
        )
    return rows


def gpu_prediction(config: Config, variants: Sequence[str], gpu: str) -> Dict[str, Dict]:
    """The roofline model's batch and samples/s per variant on ``gpu`` at ``config``'s setting."""
    work = analytic.Work(
        analytic.model_size(config.shape),
        config.src_len,
        config.hypotheses,
        config.steps,
        DTYPES[config.dtype].itemsize,
    )
    out = {}
    for variant in variants:
        batch = analytic.fitting_batch(work, variant, analytic.GPUS[gpu])
        seconds = analytic.generation_seconds(work, variant, batch, analytic.GPUS[gpu])
        out[variant] = {"batch": batch, "samples_per_s": batch / seconds if batch else 0.0}
    return out


def fixed_budget_table(rows: Sequence[Dict], prediction: Dict[str, Dict], gpu: str) -> str:
    """Markdown: measured batch, samples/s and peak per variant; the GPU prediction beside."""
    headers = (
        f"variant | batch | samples/s | peak MiB (measured) | peak MiB (model) "
        f"| {gpu} batch (model) | {gpu} samples/s (model)"
    ).split(" | ")
    body = []
    for r in rows:
        p = prediction.get(r["variant"], {})
        sps = f"{r['samples_per_s']:.2f}" if r.get("samples_per_s") else "-"
        peak = f"{r['peak_memory_mib']:.0f}" if r.get("peak_memory_mib") else "-"
        model = f"{r['predicted_peak_mib']:.0f}" if r.get("predicted_peak_mib") else "-"
        body.append(
            [
                r["variant"],
                r["batch"],
                sps,
                peak,
                model,
                p.get("batch", "-"),
                f"{p.get('samples_per_s', 0):.1f}",
            ]
        )
    return markdown_table(headers, body)
