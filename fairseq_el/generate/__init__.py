"""``fairseq-el-generate``: corpus generation into JSONL, sharded over ranks, resumable.

``options`` (the command line), ``ranks`` (torchrun/Slurm, the sharding rule), ``source``
(binarized or raw examples), ``runner`` (fairseq's hooks, one rank), ``batching``
(``--batch-size auto``), ``parts`` (part files, resume, the atomic merge), ``report`` (progress,
summary), ``cli`` (the console entry). docs/generate.md is the reference.
"""
