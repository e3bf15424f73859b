"""Attention modules: the EL identity (``math``, no fairseq import), the fairseq modules built
on it, and the per-layer policy. Every module keeps fairseq's parameter names."""
