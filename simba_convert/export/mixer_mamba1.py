"""Mamba-1 (and FalconMamba) layers in the exported graphs: `family(config).onnx_mixer()` of arch/mamba1.

prefill: in_proj as two projections (x, z), the conv a `simba::causal_conv1d` node in the [B, L, D] layout (no
transposes around a grouped Conv), the scan `simba::selective_scan` (softplus(dt + dt_proj.bias) fused), or with
the layer's `last`/`global` score `simba::selective_scan_score` (the score takes the raw dt and fuses the softplus,
as the PyTorch model's score does). step: `MambaLM.step`'s mixer in standard ops. States per layer: conv
[B, D, K-1], ssm [B, D, N] (fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.step import conv_step_ref, ssm_step_ref
from .graph import MixerOut, conv_bias, conv_window, linear_parts


def prefill(mixer, h: torch.Tensor, fused) -> MixerOut:
    D = mixer.d_inner
    x, z = linear_parts(mixer.in_proj, h, (D, D))
    w = mixer.conv1d.weight.squeeze(1)
    u = torch.ops.simba.causal_conv1d(x, w.float(), conv_bias(mixer.conv1d), mixer.d_conv)
    dt, Bm, Cm = mixer._ssm_inputs(u)
    args = (u, dt, mixer.A(), Bm, Cm, mixer.D.float(), z, mixer.dt_proj.bias.float())
    if fused:
        y, ssm_state, key = torch.ops.simba.selective_scan_score(*args, *fused)
    else:
        (y, ssm_state), key = torch.ops.simba.selective_scan(*args), None
    return MixerOut(y, conv_window(x, mixer.d_conv), ssm_state, key, lambda: F.softplus(dt.float() + args[-1]))


def step(mixer, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    x, z = linear_parts(mixer.in_proj, h, (mixer.d_inner, mixer.d_inner))
    u, cs = conv_step_ref(x, conv_state, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu")
    dt, Bm, Cm = mixer._ssm_inputs(u)
    y, ss = ssm_step_ref(u, dt, mixer.A(), Bm, Cm, mixer.D.float(), z, mixer.dt_proj.bias.float(), ssm_state)
    return mixer.out_proj(y), cs, ss


def state_shapes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(conv [D, K-1], ssm [D, N]) of one layer."""
    return (config.d_inner, config.d_conv - 1), (config.d_inner, config.d_state)
