"""A readable PyTorch Mamba-1 language model whose parameter names are those of mamba_ssm.

Shapes: input_ids [B, L]; hidden [B, L, d]; inside the mixer [B, L, D] with D = expand·d; states
conv [B, D, K-1] and ssm [B, D, N] (fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.backend import MODEL_BACKENDS, resolve_model
from ..ops.conv1d import causal_conv1d, conv_state_from
from ..ops.score import impact_score
from ..ops.scan import selective_scan, step_size
from ..ops.step import conv_step, ssm_step
from .config import MambaConfig
from .derived import derived_params
from .lm import LayerNorm, PreNormBlock, RMSNorm, StackedLM, make_norm  # noqa: F401  (re-exported)


def weightless_rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x², last dim) + eps), computed in fp32 and returned in x's dtype: FalconMamba's norm of
    dt [.., R], B and C [.., N] (transformers rounds it to the input dtype before dt_proj and the scan too)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@dataclass
class MixerInternals:
    """What the impact score needs from one mixer call: u, dt [B, L, D]; Bm, Cm [B, L, N]; A [D, N];
    delta_bias [D]. dt is the raw step (before bias and softplus), as the scan takes it: the score kernels form
    delta = softplus(dt + delta_bias) themselves (pass delta_softplus=True), so no delta tensor is kept."""

    u: torch.Tensor
    dt: torch.Tensor
    delta_bias: torch.Tensor
    Bm: torch.Tensor
    Cm: torch.Tensor
    A: torch.Tensor

    @property
    def delta(self) -> torch.Tensor:
        """The step size softplus(dt + delta_bias) [B, L, D] fp32, materialised (for inspection and tests)."""
        return step_size(self.dt, self.delta_bias, True)

    def score_inputs(self) -> tuple[tuple, dict]:
        """(args, kwargs) for `impact_score`: raw dt with the bias and softplus applied inside the score."""
        return (self.u, self.dt, self.A, self.Bm, self.Cm), dict(delta_bias=self.delta_bias, delta_softplus=True)

    def score(self, *, criterion: str, signed: bool = False, mask=None, y=None, generator=None,
              backend: str = "auto") -> torch.Tensor:
        """The layer's token scores [B, L] fp32 by `criterion` (`ops.impact_score`); mask [B, L] (True = real), y the
        mixer output [B, L, d] (read by `output`), generator (read by `random`)."""
        args, fused = self.score_inputs()
        return impact_score(*args, criterion=criterion, signed=signed, mask=mask, y=y, generator=generator,
                            backend=backend, **fused)


class MambaMixer(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        d, D, N, R, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = D, N, R, K
        self.in_proj = nn.Linear(d, 2 * D, bias=cfg.bias)
        self.conv1d = nn.Conv1d(D, D, K, groups=D, padding=K - 1, bias=cfg.conv_bias)
        self.x_proj = nn.Linear(D, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, D, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D, 1))
        self.D = nn.Parameter(torch.ones(D))
        self.out_proj = nn.Linear(D, d, bias=cfg.bias)
        # FalconMamba's eps for the norm of dt, B and C; None for Mamba-1 (no norm, no extra op).
        self.bcdt_rms_eps = cfg.mixer_rms_eps if cfg.bcdt_rms else None
        self.backend = "auto"

    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())

    def fp32_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A [D, N], D [D], delta_bias [D]) in fp32, as the scan, the step and the score take them; formed once for
        inference (model/derived.py). The cached A carries A·log2 e transposed, [N, D], for the Triton scan
        (`ops._triton_common.log2e_transposed`)."""

        def log2e(out):
            out[0]._simba_log2e_t = (out[0] * 1.4426950408889634).t().contiguous()

        return derived_params(self, (self.A_log, self.D, self.dt_proj.bias),
                              lambda: (self.A(), self.D.float(), self.dt_proj.bias.float()), log2e)

    def _ssm_inputs(self, u: torch.Tensor):
        """u [.., D] -> dt [.., D] (dt_proj without its bias), Bm, Cm [.., N]; every path (forward on each backend,
        step, the impact score's internals, the ONNX graph) takes them from here, so all see FalconMamba's norms."""
        dt_low, Bm, Cm = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.bcdt_rms_eps is not None:
            eps = self.bcdt_rms_eps
            dt_low, Bm, Cm = weightless_rms_norm(dt_low, eps), weightless_rms_norm(Bm, eps), weightless_rms_norm(Cm, eps)
        dt = F.linear(dt_low, self.dt_proj.weight)  # the bias is applied inside the scan, in fp32
        return dt, Bm, Cm

    def forward(
        self,
        h: torch.Tensor,
        *,
        conv_state: torch.Tensor | None = None,
        ssm_state: torch.Tensor | None = None,
        return_state: bool = False,
        return_internals: bool = False,
    ):
        """h [B, L, d] -> out [B, L, d]; optionally (conv_state, ssm_state) after the sequence and MixerInternals.

        On the `cuda` backend (mamba_ssm's kernels) a call without initial states runs `mixer_cuda`; the other
        backends run the ops below on the token-major layout [B, L, D].
        """
        kind = resolve_model(self.backend, h.device)
        if kind == "cuda" and conv_state is None and ssm_state is None:
            from . import mixer_cuda

            # `auto` takes mamba_ssm's kernels only on the shapes where they were faster (mixer_cuda.preferred).
            if self.backend == "cuda" or mixer_cuda.preferred(h.shape[0], h.shape[1]):
                return mixer_cuda.mixer_forward(self, h, return_state, return_internals)
        op_backend = "auto" if kind == "cuda" else kind
        x, z = self.in_proj(h).chunk(2, dim=-1)
        w = self.conv1d.weight.squeeze(1)
        # u must be contiguous [B, L, D]: x_proj, the scan and the impact score all read it row by row.
        u = causal_conv1d(x, w, self.conv1d.bias, initial_state=conv_state, activation="silu",
                          backend=op_backend).contiguous()
        dt, Bm, Cm = self._ssm_inputs(u)
        A, Dskip, delta_bias = self.fp32_params()
        res = selective_scan(
            u, dt, A, Bm, Cm, Dskip, z, delta_bias, True,
            initial_state=ssm_state, return_last_state=return_state, backend=op_backend,
        )
        y, last = res if return_state else (res, None)
        out = self.out_proj(y)
        extras = []
        if return_state:
            extras.append((conv_state_from(x, self.d_conv, conv_state), last))
        if return_internals:
            # Bm and Cm are split views of x_proj's output (rows R + 2N apart); the score kernels read them token by
            # token, and contiguous rows read faster than these tiny [B, L, N] copies cost. Same values. (FalconMamba's
            # normed Bm and Cm are fresh contiguous tensors already.)
            extras.append(MixerInternals(u=u, dt=dt, delta_bias=delta_bias, Bm=Bm.contiguous(),
                                         Cm=Cm.contiguous(), A=A))
        return (out, *extras) if extras else out

    def step(self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
        """One recurrent step: h [B, d] with conv_state [B, D, K-1], ssm_state [B, D, N] -> out [B, d], new states.

        The given states are left unchanged (on the `cuda` backend mamba_ssm's in-place update kernels run on
        copies). `auto` takes our fused step kernels even where mamba_ssm imports: they decoded faster on the H200
        (357 against 337 tokens/s at B=1, 1400 against 1313 at B=4; BENCHMARKS.md, "Generation")."""
        kind = resolve_model(self.backend, h.device)
        if kind == "cuda" and self.backend == "cuda":
            from . import mixer_cuda

            return mixer_cuda.mixer_step(self, h, conv_state.clone(), ssm_state.clone())
        kind = "auto" if kind == "cuda" else kind
        x, z = self.in_proj(h).chunk(2, dim=-1)
        u, conv_state = conv_step(x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu", backend=kind)
        dt, Bm, Cm = self._ssm_inputs(u)
        A, Dskip, delta_bias = self.fp32_params()
        y, ssm_state = ssm_step(u, dt, A, Bm, Cm, Dskip, z, delta_bias, ssm_state,
                                backend=kind)
        return self.out_proj(y), conv_state, ssm_state


class MambaBlock(PreNormBlock):
    def __init__(self, cfg: MambaConfig):
        super().__init__(cfg, MambaMixer(cfg))


class MambaLM(StackedLM):
    """Mamba-1 LM: embedding, n pre-norm Mamba blocks, final norm, head (tied to the embedding by default)."""

    block = MambaBlock
    backends = MODEL_BACKENDS  # auto | cuda (mamba_ssm's kernels) | triton | reference
