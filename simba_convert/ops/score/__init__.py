"""Simba's token impact score: reference and dispatch in naive.py, kernels in triton.py."""

from .naive import impact_score, impact_score_ref

__all__ = ["impact_score", "impact_score_ref"]
