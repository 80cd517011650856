"""The Mamba-1 selective scan: reference and dispatch in naive.py, kernels in triton.py, triton_seq.py."""

from .naive import CHUNKED_MIN_LEN, one_cpu_thread, selective_scan, selective_scan_ref, step_size

__all__ = ["CHUNKED_MIN_LEN", "one_cpu_thread", "selective_scan", "selective_scan_ref", "step_size"]
