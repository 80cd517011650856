"""The impact score of Mamba-2 (SSD) layers: reference and dispatch in naive.py, kernels in triton.py."""

from .naive import impact_score_ssd, impact_score_ssd_ref

__all__ = ["impact_score_ssd", "impact_score_ssd_ref"]
