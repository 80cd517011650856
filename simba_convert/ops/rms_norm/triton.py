"""Fused Triton forwards of the residual add + RMSNorm (contract: `add_rms_norm_ref`, naive.py) and of Mamba-2's
gated RMSNorm (contract: `gated_rms_norm_ref`, naive.py; below).

Shapes: hidden, residual [..., d] (each row contiguous along d; other strides are taken as they are);
weight [d]; normed [..., d] in weight's dtype; new residual [..., d] in fp32 (residual_in_fp32) or in
residual's dtype (hidden's without a residual).

One program per row holds the whole row in registers (BLOCK = next_power_of_2(d) ≤ MAX_D): it reads hidden
and residual once, forms the residual sum with the reference's roundings, reduces Σx² over the row, and
writes normed and the new residual. Floor: those reads and writes once, rows·d·(2 + 4 + 2 + 4) bytes for
bf16 hidden and fp32 residual in, bf16 normed and fp32 residual out (1.4B at B=4, L=2048: 8192 rows of
d = 2048, 201 MB, ≈ 0.049 ms at ~4.1 TB/s). Forward only: the dispatcher `add_rms_norm` runs the reference when
autograd needs gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...errors import ShapeError
from .. import _alloc
from .._triton_common import cast_rne

MAX_D = 16384  # widest row held in one block (64 fp32 registers a thread at 8 warps)


@triton.jit
def _add_rms_norm_fwd_kernel(
    h_ptr, r_ptr, w_ptr, out_ptr, rout_ptr, d, s_h, s_r, s_o, s_ro, eps,
    HAS_RES: tl.constexpr, STORE_RES: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < d
    h = tl.load(h_ptr + row * s_h + cols, mask=ok, other=0.0)
    if HAS_RES:
        r = tl.load(r_ptr + row * s_r + cols, mask=ok, other=0.0)
        rdt = r_ptr.dtype.element_ty
        # hidden.to(residual.dtype) + residual: torch adds in fp32 and rounds once to residual's dtype.
        x = cast_rne(cast_rne(h.to(tl.float32), rdt).to(tl.float32) + r.to(tl.float32), rdt).to(tl.float32)
    else:
        x = h.to(tl.float32)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    ms = tl.sum(x * x, axis=0) / d
    rstd = 1.0 / tl.sqrt_rn(ms + eps)
    y = x * rstd * w
    tl.store(out_ptr + row * s_o + cols, cast_rne(y, out_ptr.dtype.element_ty), mask=ok)
    if STORE_RES:
        # x holds the residual's value exactly (fp32 of a value in the residual's dtype): no second rounding.
        tl.store(rout_ptr + row * s_ro + cols, cast_rne(x, rout_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gated_rms_norm_fwd_kernel(
    y_ptr, z_ptr, w_ptr, out_ptr, D, gs, s_y, s_z, eps, NORM_BEFORE_GATE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * gs + tl.arange(0, BLOCK)
    ok = tl.arange(0, BLOCK) < gs
    y = tl.load(y_ptr + row * s_y + cols, mask=ok, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + row * s_z + cols, mask=ok, other=0.0).to(tl.float32)
    gate = z * tl.sigmoid(z)
    if not NORM_BEFORE_GATE:
        y = y * gate
    inv = 1.0 / tl.sqrt(tl.sum(y * y, 0) / gs + eps)
    out = y * inv * tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    if NORM_BEFORE_GATE:
        out = out * gate
    tl.store(out_ptr + row * D + cols, cast_rne(out, out_ptr.dtype.element_ty), mask=ok)


def gated_rms_norm_triton(
    y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int, eps: float, norm_before_gate: bool
) -> torch.Tensor:
    """`gated_rms_norm_ref` in one pass: one program per row and group holds the group in registers, reads y and z
    once (any row strides: z is a view into Mamba-2's in_proj output) and writes out [..., D] in y's dtype.

    Floor: rows·D·(2 + 2 + 2) bytes in bf16 (Mamba-2 2.7B at 1×2048: 2048 rows of D = 5120, 63 MB, ≈ 0.015 ms
    at ~4.1 TB/s).
    """
    D = y.shape[-1]
    if z.shape != y.shape or tuple(weight.shape) != (D,):
        raise ShapeError(f"gated_rms_norm: y {tuple(y.shape)}, z {tuple(z.shape)} and weight {tuple(weight.shape)} "
                         f"must be [..., D], [..., D] and [D]")
    if group_size < 1 or D % group_size:
        raise ShapeError(f"gated_rms_norm: {D} channels do not split into groups of {group_size}")
    if group_size > MAX_D:
        raise ShapeError(f"gated_rms_norm_triton: groups of {group_size} > {MAX_D} elements do not fit one block")
    out = _alloc.empty(*y.shape, device=y.device, dtype=y.dtype)
    n_rows = y.numel() // D if D else 0
    if n_rows == 0:
        return out
    y2, z2 = _rows(y, D), _rows(z, D)
    block = triton.next_power_of_2(group_size)
    _gated_rms_norm_fwd_kernel[(n_rows, D // group_size)](
        y2, z2, weight.contiguous(), out, D, group_size, y2.stride(0), z2.stride(0), eps,
        NORM_BEFORE_GATE=bool(norm_before_gate), BLOCK=block, num_warps=min(max(block // 256, 1), 8),
    )
    return out


def _rows(t: torch.Tensor, d: int) -> torch.Tensor:
    """t as [rows, d] with unit stride along d, copying only when no such view exists."""
    t2 = t.reshape(-1, d)
    return t2 if t2.stride(-1) == 1 or d == 1 else t2.contiguous()


def add_rms_norm_triton(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    residual_in_fp32: bool,
    *,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`add_rms_norm_ref` in one pass; returns (normed, new_residual).

    `out` / `residual_out` (contiguous, the result's shape and dtype) receive the results when given. Without
    a residual, and when no dtype change is asked, the new residual is `hidden` itself (as in the reference)
    and `residual_out` is not written.
    """
    d = hidden.shape[-1]
    if d > MAX_D:
        raise ShapeError(f"add_rms_norm_triton: rows of {d} > {MAX_D} elements do not fit one block")
    if residual is not None and residual.shape != hidden.shape:
        raise ShapeError(f"add_rms_norm: residual {tuple(residual.shape)} != hidden {tuple(hidden.shape)}")
    if tuple(weight.shape) != (d,):
        raise ShapeError(f"add_rms_norm: weight must be [d] = [{d}], got {tuple(weight.shape)}")
    res_dtype = torch.float32 if residual_in_fp32 else (residual.dtype if residual is not None else hidden.dtype)
    store_res = residual is not None or res_dtype != hidden.dtype
    out = _check_out(out, hidden, weight.dtype, "out")
    if store_res:
        residual_out = _check_out(residual_out, hidden, res_dtype, "residual_out")
    n_rows = hidden.numel() // d if d else 0
    if n_rows == 0 or d == 0:
        return out, (residual_out if store_res else hidden)
    h2 = _rows(hidden, d)
    r2 = _rows(residual, d) if residual is not None else h2
    ro2 = residual_out.view(-1, d) if store_res else out.view(-1, d)
    block = triton.next_power_of_2(d)
    _add_rms_norm_fwd_kernel[(n_rows,)](
        h2, r2, weight.contiguous(), out.view(-1, d), ro2, d, h2.stride(0), r2.stride(0), d, d, eps,
        HAS_RES=residual is not None, STORE_RES=store_res, BLOCK=block,
        num_warps=min(max(block // 256, 1), 8),
    )
    return out, (residual_out if store_res else hidden)


def _check_out(buf: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    if buf is None:
        return _alloc.empty(*like.shape, device=like.device, dtype=dtype)
    if buf.shape != like.shape or buf.dtype != dtype or buf.device != like.device or not buf.is_contiguous():
        raise ShapeError(f"add_rms_norm: {name} must be a contiguous {dtype} {tuple(like.shape)} on {like.device}, "
                         f"got {buf.dtype} {tuple(buf.shape)}")
    return buf
