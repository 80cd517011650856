"""The project's one tolerance contract for kernel-vs-reference comparisons (CONTRIBUTING.md).

fp32: elementwise close at 1e-5 relative (atol scaled by the reference's magnitude);
bf16/fp16: relative RMS error <= 5e-3. NaN never passes. Loosening needs a written reason at the call site.
"""

from __future__ import annotations

import torch

FP32_RTOL = 1e-5
LOWP_REL_RMS = 5e-3


def rel_rms(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def assert_matches(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype | None = None, *, scale: float = 1.0):
    """Assert `out` matches the fp32/fp64 reference `ref` under the contract for `dtype` (default: out's).

    `scale` multiplies the tolerance; any value other than 1.0 must come with a comment saying why.
    """
    dtype = dtype or out.dtype
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert not torch.isnan(out).any(), "output has NaN (unwritten or poisoned elements)"
    assert torch.isfinite(ref).all(), "reference is not finite"
    if dtype in (torch.float32, torch.float64):
        o, r = out.double().cpu(), ref.double().cpu()
        atol = FP32_RTOL * scale * float(r.abs().max().clamp_min(1e-12))
        err = (o - r).abs()
        bad = err > atol + FP32_RTOL * scale * r.abs()
        assert not bad.any(), f"fp32 mismatch: max abs err {float(err.max()):.3e} (atol {atol:.3e}) at {int(bad.sum())} elements"
    else:
        e = rel_rms(out.cpu(), ref.cpu())
        assert e <= LOWP_REL_RMS * scale, f"{dtype} relative RMS error {e:.3e} > {LOWP_REL_RMS * scale:.1e}"


def poison_like(t: torch.Tensor) -> torch.Tensor:
    """An output buffer filled with NaN, so unwritten elements fail `assert_matches`."""
    return torch.full_like(t, float("nan"))


def poison_value(dtype: torch.dtype):
    """NaN for floating dtypes; the dtype's minimum for integers (never a valid index or count)."""
    return float("nan") if dtype.is_floating_point or dtype.is_complex else torch.iinfo(dtype).min


def poisoned_empty(*shape: int, device, dtype: torch.dtype) -> torch.Tensor:
    """Stands in for `simba_convert.ops._alloc.empty` in every test (conftest.py): buffers a kernel must fill."""
    return torch.full(shape, poison_value(dtype), device=device, dtype=dtype)
