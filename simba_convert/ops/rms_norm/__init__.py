"""Residual add + RMSNorm: references and dispatch in naive.py, kernel in triton.py."""

from .naive import add_rms_norm, add_rms_norm_ref, rms_norm_ref

__all__ = ["add_rms_norm", "add_rms_norm_ref", "rms_norm_ref"]
