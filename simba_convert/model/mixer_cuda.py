"""The Mamba-1 mixer on the CUDA kernels Mamba users run: `causal_conv1d_fn`, `selective_scan_fn` and, for decoding,
`causal_conv1d_update` and `selective_state_update` (the `[cuda]` extra; never required). The residual add + RMSNorm
stays ours (ops.rms_norm): it measured faster than mamba_ssm's fused kernel at every shape (BENCHMARKS.md).

These kernels work on the channels-first layout [B, D, L]: in_proj is computed straight into it (W @ hᵀ, as
mamba_ssm's own `Mamba.forward` does), so conv, scan and their inputs need no transposing copies. The
internals handed to the impact score are the same tensors seen as [B, L, D] / [B, L, N] (strided views; the
score kernels take any strides).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..errors import BackendError


@functools.lru_cache(maxsize=1)
def _kernels():
    """(causal_conv1d_fn, selective_scan_fn, causal_conv1d_update, selective_state_update), or None when
    mamba_ssm / causal_conv1d do not import."""
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception:  # ImportError, or a build whose extension fails to load (e.g. a torch ABI mismatch)
        return None
    return causal_conv1d_fn, selective_scan_fn, causal_conv1d_update, selective_state_update


def available() -> bool:
    """True when mamba_ssm and causal_conv1d import with their CUDA extensions."""
    return torch.cuda.is_available() and _kernels() is not None


def kernels():
    return required(_kernels())


def required(k):
    """The imported kernels `k`, or the one-line error naming the extra when they did not import (None)."""
    if k is None:
        raise BackendError("backend 'cuda' needs mamba_ssm and causal_conv1d: pip install 'simba-convert[cuda]'")
    return k


def even_length(L: int) -> bool:
    """True when mamba_ssm's scan takes its even-length path: L a multiple of the chunk it picks for L (its
    threads × items: 128, 256, 512, 1024, then 2048). Off that path it stages its loads with bounds checks: in a
    pruned 1.4B forward at 4x2048 (H200 profile) its calls on the ~1640-token layers took 938 µs against 591 µs
    for the 2048-token one, slower than our Triton scan on the same tokens."""
    chunk = next((c for c in (128, 256, 512, 1024) if L <= c), 2048)
    return L % chunk == 0


# Past these, our Triton layer (split scan) was the faster dense 1.4B forward on the H200 (graph replays, 2026-12-04,
# benchmarks/results/vs_mamba_h200.json, mamba_ssm's own model in the same run): 63.4 against 65.9 ms at 1x8192,
# 204.4 against 248.1 at 16x2048, 244.0 against 254.4 at 4x8192, 812.5 against 1026.8 at 16x8192; our layer on
# mamba_ssm's kernels stayed ahead at 1x2048 (16.3 against 17.3) and 4x2048 (62.4 against 63.2).
CUDA_MAX_TOKENS = 8192
CUDA_MAX_LENGTH = 4096


def preferred(B: int, L: int) -> bool:
    """True when `auto` should run a [B, L, d] forward on mamba_ssm's kernels rather than our Triton layer."""
    return even_length(L) and L <= CUDA_MAX_LENGTH and B * L <= CUDA_MAX_TOKENS


def mixer_forward(mixer, h: torch.Tensor, return_state: bool, return_internals: bool):
    """`MambaMixer.forward` (no initial states) on the CUDA kernels: h [B, L, d] -> out [B, L, d] (+ extras)."""
    from ..ops.conv1d import conv_state_from
    from .mamba import MixerInternals, weightless_rms_norm

    conv_fn, scan_fn = kernels()[:2]
    bsz, L, _ = h.shape
    D, N, R = mixer.d_inner, mixer.d_state, mixer.dt_rank
    xz = mixer.in_proj.weight @ h.reshape(bsz * L, -1).t()  # [2D, B·L]
    if mixer.in_proj.bias is not None:
        xz = xz + mixer.in_proj.bias.to(xz.dtype)[:, None]
    xz = xz.view(2 * D, bsz, L).transpose(0, 1)  # [B, 2D, L], unit stride along L
    x, z = xz.chunk(2, dim=1)
    u = conv_fn(x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation="silu")  # [B, D, L]
    x_dbl = F.linear(u.transpose(1, 2).reshape(bsz * L, D), mixer.x_proj.weight)  # [B·L, R + 2N]
    dt_low, Bm, Cm = torch.split(x_dbl, [R, N, N], dim=-1)
    if mixer.bcdt_rms_eps is not None:  # FalconMamba: as MambaMixer._ssm_inputs, on the [B·L, ·] rows
        eps = mixer.bcdt_rms_eps
        dt_low, Bm, Cm = weightless_rms_norm(dt_low, eps), weightless_rms_norm(Bm, eps), weightless_rms_norm(Cm, eps)
    dt = (mixer.dt_proj.weight @ dt_low.t()).view(D, bsz, L).transpose(0, 1)  # [B, D, L]; bias added in the scan
    Bm, Cm = Bm.reshape(bsz, L, N).contiguous(), Cm.reshape(bsz, L, N).contiguous()  # [B, L, N]
    A, Dskip, delta_bias = mixer.fp32_params()
    res = scan_fn(u, dt, A, Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(), Dskip, z,
                  delta_bias, True, return_last_state=return_state)
    y, last = res if return_state else (res, None)
    out = mixer.out_proj(y.transpose(1, 2))
    extras = []
    if return_state:
        extras.append((conv_state_from(x.transpose(1, 2), mixer.d_conv), last))
    if return_internals:
        # The score reads u and dt as strided [B, L, D] views of the channels-first tensors: 0.566 ms at the 1.4B
        # layer, 4x2048 (H200), against 0.722 ms for token-major copies plus the score (BENCHMARKS.md).
        extras.append(MixerInternals(u=u.transpose(1, 2), dt=dt.transpose(1, 2), delta_bias=delta_bias, Bm=Bm,
                                     Cm=Cm, A=A))
    return (out, *extras) if extras else out


def mixer_step(mixer, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    """`MambaMixer.step` on mamba_ssm's decoding kernels; conv_state [B, D, K-1] and ssm_state [B, D, N] (fp32)
    are updated IN PLACE and returned: out [B, d], conv_state, ssm_state."""
    conv_update, state_update = kernels()[2:]
    x, z = mixer.in_proj(h).chunk(2, dim=-1)
    u = conv_update(x, conv_state, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu")  # [B, D]
    dt, Bm, Cm = mixer._ssm_inputs(u)
    A, Dskip, delta_bias = mixer.fp32_params()
    y = state_update(ssm_state, u, dt, A, Bm, Cm, Dskip, z, delta_bias, True)
    return mixer.out_proj(y), conv_state, ssm_state
