"""Mamba-2 layers in the exported graphs: `family(config).onnx_mixer()` of arch/mamba2.

prefill: in_proj as three projections (z, xBC, dt: no [B, L, 2D + 2GN + H] tensor split into copies), the conv a
`simba::causal_conv1d` node over xBC [B, L, D + 2GN], the scan `simba::ssd_scan` on x [B, L, H, P] and B, C
[B, L, G, N] (delta = softplus(dt + dt_bias) fused), or with the layer's `last`/`global` score
`simba::ssd_scan_score`; the skip of a per-channel D and the gated RMSNorm (`gated_rms_norm_ref`) in standard ops.
The nodes always take D and dt_bias: zeros [H] where the model has a per-channel D (applied outside, as the model
does) or a step-size limit (delta is then formed and clamped in the graph, dt_softplus off, as `Mamba2Mixer` does),
so one node form serves every config. step: `Mamba2Mixer.step` on the reference ops, in standard ops.
States per layer: conv [B, D + 2GN, K-1] (the model's dtype), ssm [B, H, P, N] (fp32).
"""

from __future__ import annotations

import torch

from ..ops.ssd import step_size
from .graph import MixerOut, conv_bias, conv_window, linear_parts


def prefill(mixer, h: torch.Tensor, fused) -> MixerOut:
    c = mixer.cfg
    z, xBC, dt = linear_parts(mixer.in_proj, h, (c.d_inner, c.conv_dim, c.nheads))
    w = mixer.conv1d.weight.squeeze(1)
    x, B, C = mixer._heads(torch.ops.simba.causal_conv1d(xBC, w.float(), conv_bias(mixer.conv1d), c.d_conv))
    sdt, bias, softplus = mixer._scan_dt(dt)
    zeros = mixer.dt_bias.new_zeros(c.nheads, dtype=torch.float32)
    bias = zeros if bias is None else bias
    args = (x, sdt.float(), mixer.A(), B, C, zeros if c.D_has_hdim else mixer.D.float(), bias, softplus)
    if fused:
        y, ssm_state, key = torch.ops.simba.ssd_scan_score(*args, *fused)
    else:
        (y, ssm_state), key = torch.ops.simba.ssd_scan(*args), None
    y = mixer._skip_and_gate(y, x, z, "reference")
    return MixerOut(y, conv_window(xBC, c.d_conv), ssm_state, key, lambda: step_size(sdt, bias, softplus))


def step(mixer, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    return mixer.step(h, conv_state, ssm_state, backend="reference")


def state_shapes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(conv [D + 2GN, K-1], ssm [H, P, N]) of one layer."""
    return (config.conv_dim, config.d_conv - 1), (config.nheads, config.headdim, config.d_state)
