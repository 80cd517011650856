"""One decoding step: references and dispatch in naive.py, kernels in triton.py."""

from .naive import conv_step, conv_step_ref, ssm_step, ssm_step_ref

__all__ = ["conv_step", "conv_step_ref", "ssm_step", "ssm_step_ref"]
