"""Causal depthwise conv1d: reference and dispatch in naive.py, kernel in triton.py."""

from .naive import causal_conv1d, causal_conv1d_ref, conv_state_from

__all__ = ["causal_conv1d", "causal_conv1d_ref", "conv_state_from"]
