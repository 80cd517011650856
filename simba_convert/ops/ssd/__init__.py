"""The Mamba-2 scan (SSD): reference and dispatch in naive.py, kernels in triton.py."""

from .naive import ssd_scan, ssd_scan_ref, ssd_step_ref, step_size

__all__ = ["ssd_scan", "ssd_scan_ref", "ssd_step_ref", "step_size"]
