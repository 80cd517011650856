"""Compute ops, one folder per op (layout and naming: CONTRIBUTING.md; derivations: README.md).

A folder's `__init__.py` is the op's dispatcher (backend auto | triton | reference, see `ops.backend`), its
`naive.py` the fp32 PyTorch reference `<op>_ref`, its `triton*.py` the kernels. The public ops are attributes of
this package, imported on first use, so `import simba_convert.ops` stays torch-free:

    from simba_convert.ops import impact_score, selective_scan

No folder is named like an op: importing a subpackage binds its name on this package, which would hide the op.
"""

from .._lazy import lazy_attributes

_OPS = {  # folder: the ops it exports
    "scan": ("selective_scan", "selective_scan_ref"),  # Mamba-1 selective scan
    "score": ("impact_score", "impact_score_ref"),  # Simba's token impact score (Mamba-1)
    "score_ssd": ("impact_score_ssd", "impact_score_ssd_ref"),  # the impact score of Mamba-2 (SSD) layers
    "ssd": ("ssd_scan", "ssd_scan_ref", "ssd_step_ref"),  # Mamba-2 chunked scan and one decoding step
    "conv1d": ("causal_conv1d", "causal_conv1d_ref"),  # causal depthwise conv1d
    "rms_norm": ("add_rms_norm", "add_rms_norm_ref", "rms_norm_ref", "gated_rms_norm", "gated_rms_norm_ref"),  # RMSNorms
    "step": ("conv_step", "conv_step_ref", "ssm_step", "ssm_step_ref"),  # one Mamba-1 decoding step
}
_LAZY = {name: (f"simba_convert.ops.{folder}", name) for folder, names in _OPS.items() for name in names}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes("simba_convert.ops", _LAZY, globals())
