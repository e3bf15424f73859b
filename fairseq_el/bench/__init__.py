"""Benchmark harness: stock fairseq vs EL generation (speed, decoding-state bytes, peak memory).

One concept per module: :mod:`~fairseq_el.bench.shapes` (model shapes and the paper's presets),
:mod:`~fairseq_el.bench.state` (the decoding state measured, checked against the count by hand in
:mod:`fairseq_el.accounting`), :mod:`~fairseq_el.bench.precision` (dtypes by name),
:mod:`~fairseq_el.bench.runner` (one timed run of one variant), :mod:`~fairseq_el.bench.worker`
(that run in a fresh process, for its peak RSS), :mod:`~fairseq_el.bench.budget` (fixed-budget
throughput), :mod:`~fairseq_el.bench.analytic` (roofline model for GPUs),
:mod:`~fairseq_el.bench.report` (tables, JSON lines, plots) and :mod:`~fairseq_el.bench.cli` (the
console scripts, one function per mode). Finished experiments (Hugging Face and CTranslate2 peers,
the cache-copy profile) live in the repository's ``experiments/``, outside the wheel.
"""
