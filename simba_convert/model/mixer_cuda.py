"""The Mamba-1 mixer on the CUDA kernels Mamba users run: `causal_conv1d_fn`, `selective_scan_fn` and the fused
add + RMSNorm of mamba_ssm (the `[cuda]` extra; never required).

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
    """(causal_conv1d_fn, selective_scan_fn, rms_norm_fn, causal_conv1d_update, selective_state_update), or None
    when mamba_ssm / causal_conv1d do not import."""
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.layer_norm import rms_norm_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception:  # ImportError, or a build whose extension fails to load (e.g. a torch ABI mismatch)
        return None
    return causal_conv1d_fn, selective_scan_fn, rms_norm_fn, causal_conv1d_update, selective_state_update


def available() -> bool:
    """True when mamba_ssm and causal_conv1d import with their CUDA extensions."""
    return torch.cuda.is_available() and _kernels() is not None


def kernels():
    k = _kernels()
    if k is None:
        raise BackendError("backend 'cuda' needs mamba_ssm and causal_conv1d: pip install 'simba-convert[cuda]'")
    return k


def add_rms_norm(block, hidden: torch.Tensor, residual: torch.Tensor | None):
    """`MambaBlock.add_norm` through mamba_ssm's fused Triton add + RMSNorm (one pass, fp32 residual if asked)."""
    rms_norm_fn = kernels()[2]
    norm = block.norm
    return rms_norm_fn(hidden, norm.weight, None, residual=residual, prenorm=True,
                       residual_in_fp32=block.residual_in_fp32, eps=norm.eps)


def mixer_forward(mixer, h: torch.Tensor, return_state: bool, return_internals: bool):
    """`MambaMixer.forward` (no initial states) on the CUDA kernels: h [B, L, d] -> out [B, L, d] (+ extras)."""
    from ..ops.conv1d import conv_state_from
    from .mamba import MixerInternals

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
    dt = (mixer.dt_proj.weight @ dt_low.t()).view(D, bsz, L).transpose(0, 1)  # [B, D, L]; bias added in the scan
    Bm, Cm = Bm.reshape(bsz, L, N).contiguous(), Cm.reshape(bsz, L, N).contiguous()  # [B, L, N]
    A = mixer.A()
    delta_bias = mixer.dt_proj.bias.float()
    res = scan_fn(u, dt, A, Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(), mixer.D.float(), z,
                  delta_bias, True, return_last_state=return_state)
    y, last = res if return_state else (res, None)
    out = mixer.out_proj(y.transpose(1, 2))
    extras = []
    if return_state:
        extras.append((conv_state_from(x.transpose(1, 2), mixer.d_conv), last))
    if return_internals:
        # Token-major copies for the impact score: on the channels-first tensors (strided [B, L, D] views) the
        # score took 0.566 ms against 0.302 ms on token-major ones (H200, 1.4B layer, 4x2048), and the pruned
        # model on this backend ran slower than dense (BENCHMARKS.md, "Against mamba_ssm").
        extras.append(MixerInternals(u=u.transpose(1, 2).contiguous(), dt=dt.transpose(1, 2).contiguous(),
                                     delta_bias=delta_bias, Bm=Bm, Cm=Cm, A=A))
    return (out, *extras) if extras else out


def mixer_step(mixer, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    """`MambaMixer.step` on mamba_ssm's decoding kernels; conv_state [B, D, K-1] and ssm_state [B, D, N] (fp32)
    are updated IN PLACE and returned: out [B, d], conv_state, ssm_state."""
    conv_update, state_update = kernels()[3:]
    x, z = mixer.in_proj(h).chunk(2, dim=-1)
    u = conv_update(x, conv_state, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu")  # [B, D]
    dt, Bm, Cm = mixer._ssm_inputs(u)
    y = state_update(ssm_state, u, dt, mixer.A(), Bm, Cm, mixer.D.float(), z, mixer.dt_proj.bias.float(), True)
    return mixer.out_proj(y), conv_state, ssm_state
