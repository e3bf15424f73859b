"""Targeted, version-guarded fixes that let fairseq 0.12 run on today's stack."""
