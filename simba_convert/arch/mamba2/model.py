"""A readable PyTorch Mamba-2 language model whose parameter names are those of mamba_ssm (and transformers,
but for `backbone.embedding`).

Shapes (notation in config.py): input_ids [B, L]; hidden [B, L, d]; in_proj's output [B, L, 2D + 2GN + H] split
[z, x, B, C, dt]; the causal conv runs over x, B, C together ([B, L, D + 2GN]); the scan on x [B, L, H, P],
dt [B, L, H], B, C [B, L, G, N]. States per layer: conv [B, D + 2GN, K-1] and ssm [B, H, P, N] (fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...model.derived import derived_params
from ...model.lm import PreNormBlock, StackedLM
from ...ops.backend import MODEL_BACKENDS, resolve_model
from ...ops.conv1d import causal_conv1d, conv_state_from
from ...ops.score_ssd import impact_score_ssd
from ...ops.rms_norm import gated_rms_norm
from ...ops.ssd import ssd_scan, ssd_step_ref, step_size
from ...ops.step import conv_step
from . import mixer_cuda
from .config import NO_DT_LIMIT, Mamba2Config


class GatedRMSNorm(nn.Module):
    """mamba_ssm's RMSNormGated (`ops.rms_norm.gated_rms_norm_ref`): RMSNorm over groups of `group_size` channels,
    gated by silu(z) before the norm (norm_before_gate=False: rmsnorm(y·silu(z))) or after it (rmsnorm(y)·silu(z))."""

    def __init__(self, d: int, group_size: int, eps: float, norm_before_gate: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size, self.eps, self.norm_before_gate = group_size, eps, norm_before_gate

    def forward(self, y: torch.Tensor, z: torch.Tensor, backend: str = "reference") -> torch.Tensor:
        return gated_rms_norm(y, z, self.weight, self.group_size, self.eps, self.norm_before_gate, backend=backend)


@dataclass
class Mamba2Internals:
    """What the impact score needs from one mixer call: x [B, L, H, P]; dt [B, L, H] raw (before bias, softplus and
    limit); dt_bias [H]; A [H]; B, C [B, L, G, N]; dt_limit (lo, hi), the clamp of delta after the softplus."""

    x: torch.Tensor
    dt: torch.Tensor
    dt_bias: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    dt_limit: tuple[float, float]

    @property
    def delta(self) -> torch.Tensor:
        """The step size clamp(softplus(dt + dt_bias), *dt_limit) [B, L, H] fp32, materialised."""
        return step_size(self.dt, self.dt_bias, True).clamp(*self.dt_limit)

    def score_inputs(self) -> tuple[tuple, dict]:
        """(args, kwargs) for `impact_score_ssd`: raw dt with the bias and softplus applied inside the score, or,
        where the config limits the step size (the score has no clamp), the clamped delta itself."""
        if self.dt_limit == NO_DT_LIMIT:
            return (self.x, self.dt, self.A, self.B, self.C), dict(dt_bias=self.dt_bias, dt_softplus=True)
        return (self.x, self.delta, self.A, self.B, self.C), dict(dt_bias=None, dt_softplus=False)

    def score(self, *, criterion: str, signed: bool = False, mask=None, y=None, generator=None,
              backend: str = "auto") -> torch.Tensor:
        """The layer's token scores [B, L] fp32 by `criterion`: `impact_score_ssd`, whose `last` and `global` are
        Mamba-2's and whose `delta`, `output` and `random` are the architecture-free baselines (delta over heads).
        mask [B, L] (True = real), y the mixer output [B, L, d] (read by `output`), generator (read by `random`)."""
        args, fused = self.score_inputs()
        return impact_score_ssd(*args, criterion=criterion, signed=signed, mask=mask, y=y, generator=generator,
                                backend=backend, **fused)


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        self.cfg = cfg
        d, Di, H = cfg.d_model, cfg.d_inner, cfg.nheads
        self.in_proj = nn.Linear(d, cfg.d_in_proj, bias=cfg.bias)
        self.conv1d = nn.Conv1d(cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim, padding=cfg.d_conv - 1,
                                bias=cfg.conv_bias)
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, H + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(Di if cfg.D_has_hdim else H))
        if cfg.gated_rmsnorm:
            self.norm = GatedRMSNorm(Di, cfg.group_size, cfg.gated_norm_eps, cfg.norm_before_gate)
        self.out_proj = nn.Linear(Di, d, bias=cfg.bias)
        self.backend = "auto"

    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())

    def fp32_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A [H], D [H] or [D], dt_bias [H]) in fp32, as the scan, the step and the score take them; formed once
        for inference (model/derived.py)."""
        return derived_params(self, (self.A_log, self.D, self.dt_bias),
                              lambda: (self.A(), self.D.float(), self.dt_bias.float()))

    def _split(self, zxbcdt: torch.Tensor):
        c = self.cfg
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.nheads], dim=-1)  # z, xBC, dt

    def _heads(self, xBC: torch.Tensor):
        """The conv output [..., D + 2GN] -> x [..., H, P], B, C [..., G, N] (views)."""
        c = self.cfg
        x, B, C = torch.split(xBC, [c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
        return (x.unflatten(-1, (c.nheads, c.headdim)), B.unflatten(-1, (c.ngroups, c.d_state)),
                C.unflatten(-1, (c.ngroups, c.d_state)))

    def _scan_dt(self, dt: torch.Tensor):
        """(dt, dt_bias, dt_softplus) for the scan. With a step-size limit delta is formed and clamped here, since
        the scan's contract has no clamp; mamba_ssm and transformers clamp it after the softplus the same way."""
        bias = self.fp32_params()[2]
        if not self.cfg.has_dt_limit:
            return dt, bias, True
        return step_size(dt, bias, True).clamp(*self.cfg.dt_limit), None, False

    def _skip_and_gate(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor, backend: str) -> torch.Tensor:
        """y [..., H, P] -> [..., D] with the per-channel skip (D_has_hdim) and the gate (normed or plain)."""
        if self.cfg.D_has_hdim:
            y = (y.float() + x.float() * self.fp32_params()[1].view(x.shape[-2:])).to(y.dtype)
        y = y.flatten(-2)
        if self.cfg.gated_rmsnorm:
            return self.norm(y, z, backend)
        return (y.float() * F.silu(z.float())).to(y.dtype)

    def forward(
        self,
        h: torch.Tensor,
        *,
        conv_state: torch.Tensor | None = None,
        ssm_state: torch.Tensor | None = None,
        return_state: bool = False,
        return_internals: bool = False,
    ):
        """h [B, L, d] -> out [B, L, d]; optionally (conv_state, ssm_state) after the sequence and Mamba2Internals."""
        backend = resolve_model(self.backend, h.device, mixer_cuda.available)
        if backend == "cuda":
            return mixer_cuda.mixer_forward(self, h, conv_state, ssm_state, return_state, return_internals)
        z, xBC, dt = self._split(self.in_proj(h))
        w = self.conv1d.weight.squeeze(1)
        xBC_c = causal_conv1d(xBC, w, self.conv1d.bias, initial_state=conv_state, activation="silu", backend=backend)
        x, B, C = self._heads(xBC_c)
        A, Dskip, _ = self.fp32_params()
        sdt, sbias, softplus = self._scan_dt(dt)
        res = ssd_scan(x, sdt, A, B, C, D=None if self.cfg.D_has_hdim else Dskip, dt_bias=sbias,
                       dt_softplus=softplus, initial_state=ssm_state, return_final_state=return_state,
                       chunk_size=self.cfg.chunk_size, backend=backend)
        y, last = res if return_state else (res, None)
        out = self.out_proj(self._skip_and_gate(y, x, z, backend))
        return self._with_extras(out, xBC, conv_state, last, (x, dt, A, B, C), return_state, return_internals)

    def _with_extras(self, out, xBC, conv_state, last, inner, return_state: bool, return_internals: bool):
        """out, then (conv_state, ssm_state) after the sequence and Mamba2Internals, as asked; inner = (x, dt, A,
        B, C) as the forward saw them (strided views)."""
        extras = []
        if return_state:
            extras.append((conv_state_from(xBC, self.cfg.d_conv, conv_state), last))
        if return_internals:
            x, dt, A, B, C = inner
            extras.append(Mamba2Internals(x=x, dt=dt, dt_bias=self.fp32_params()[2], A=A, B=B, C=C,
                                          dt_limit=self.cfg.dt_limit))
        return (out, *extras) if extras else out

    def step(self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor, *, backend: str | None = None):
        """One recurrent step: h [B, d] with conv_state [B, D + 2GN, K-1], ssm_state [B, H, P, N] -> out [B, d] and
        the new states (the given ones are left unchanged). backend: the ops' (default: the mixer's; the ONNX step
        graph takes "reference", whatever the model runs on)."""
        if backend is None:
            backend = resolve_model(self.backend, h.device, mixer_cuda.available)
            backend = "auto" if backend == "cuda" else backend  # the step is ours on every backend
        z, xBC, dt = self._split(self.in_proj(h))
        xBC_c, conv_state = conv_step(xBC, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu",
                                      backend=backend)
        x, B, C = self._heads(xBC_c)
        # The step-size limit applies here as in the forward, so that decoding continues the sequence the forward
        # computed (mamba_ssm's and transformers' step paths skip it: see config.py).
        sdt, sbias, softplus = self._scan_dt(dt)
        A, Dskip, _ = self.fp32_params()
        y, ssm_state = ssd_step_ref(x, sdt, A, B, C, None if self.cfg.D_has_hdim else Dskip, sbias, softplus,
                                    ssm_state)
        return self.out_proj(self._skip_and_gate(y, x, z, backend)), conv_state, ssm_state


class Mamba2Block(PreNormBlock):
    def __init__(self, cfg: Mamba2Config):
        super().__init__(cfg, Mamba2Mixer(cfg))


class Mamba2LM(StackedLM):
    """Mamba-2 LM: embedding, n pre-norm Mamba-2 blocks, final norm, head (tied to the embedding if the config says)."""

    block = Mamba2Block
    backends = MODEL_BACKENDS  # auto | cuda (mamba_ssm's Mamba-2 kernels: mixer_cuda.py) | triton | reference
    # The CUDA-graph replay of the step (model/cuda_graph.py) has been measured for Mamba-1's step only: generate()
    # steps eagerly unless asked (model/generate.py reads this).
    graphed_step = False
