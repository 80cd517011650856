"""The Mamba-2 mixer on the kernels mamba_ssm's own `Mamba2` runs (the `[cuda]` extra; never required):
`causal_conv1d_fn` over x, B, C together, mamba_ssm's Triton SSD (`mamba_chunk_scan_combined`) and its gated
RMSNorm (`rmsnorm_fn`). The decoding step stays ours.

mamba_ssm's default inference path (`mamba_split_conv1d_scan_combined`) calls these same kernels in one autograd
function; here they are called one by one, because the pruned model needs the conv output (x, B, C) and dt for
the impact score. The internals are strided views into in_proj's and the conv's outputs: the score kernels take
any strides, so nothing is copied for them.
"""

from __future__ import annotations

import functools

import torch

from ...model.mixer_cuda import required


@functools.lru_cache(maxsize=1)
def _kernels():
    """(causal_conv1d_fn, mamba_chunk_scan_combined, rmsnorm_fn), or None when they do not import."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a build whose extension fails to load (e.g. a torch ABI mismatch)
        return None
    return causal_conv1d_fn, mamba_chunk_scan_combined, rmsnorm_fn


def available() -> bool:
    """True when mamba_ssm's Mamba-2 kernels and causal_conv1d import on a CUDA machine."""
    return torch.cuda.is_available() and _kernels() is not None


def kernels():
    return required(_kernels())


def mixer_forward(mixer, h: torch.Tensor, conv_state, ssm_state, return_state: bool, return_internals: bool):
    """`Mamba2Mixer.forward` on mamba_ssm's kernels: h [B, L, d] -> out [B, L, d] (+ the same extras)."""
    from ...ops.conv1d import causal_conv1d

    conv_fn, scan_fn, norm_fn = kernels()
    c = mixer.cfg
    z, xBC, dt = mixer._split(mixer.in_proj(h))
    w = mixer.conv1d.weight.squeeze(1)
    if conv_state is None:  # channels-last: xBC [B, L, C] seen as [B, C, L] with unit channel stride, no copy
        xt = xBC.transpose(1, 2)
        if xt.shape[1] % 8 or xt.stride(0) % 8 or xt.stride(2) % 8:  # what causal_conv1d's channels-last path needs
            xt = xt.contiguous()  # channels-first [B, C, L]: any size (real Mamba-2 shapes never get here)
        xBC_c = conv_fn(xt, w, mixer.conv1d.bias, activation="silu").transpose(1, 2)
    else:  # continuing a sequence: causal_conv1d's initial states want a layout we do not keep; ours reads any
        xBC_c = causal_conv1d(xBC, w, mixer.conv1d.bias, initial_state=conv_state, activation="silu", backend="auto")
    x, B, C = mixer._heads(xBC_c)
    A, D, _ = mixer.fp32_params()
    D = D.view(c.nheads, c.headdim) if c.D_has_hdim else D
    kw = {} if not c.has_dt_limit else dict(dt_limit=tuple(c.dt_limit))
    res = scan_fn(x, dt, A, B, C, chunk_size=c.chunk_size, D=D,
                  z=None if c.gated_rmsnorm else z.unflatten(-1, (c.nheads, c.headdim)), dt_bias=mixer.dt_bias,
                  dt_softplus=True, initial_states=ssm_state, return_final_states=return_state, **kw)
    y, last = res if return_state else (res, None)
    y = y.flatten(-2)
    if c.gated_rmsnorm:
        y = norm_fn(y, mixer.norm.weight, None, z=z, eps=c.gated_norm_eps, group_size=c.group_size,
                    norm_before_gate=c.norm_before_gate)
    last = last.float() if last is not None else None
    return mixer._with_extras(mixer.out_proj(y), xBC, conv_state, last, (x, dt, A, B, C), return_state,
                              return_internals)
