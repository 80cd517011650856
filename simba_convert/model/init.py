"""The training initialisation of a Mamba-1 or Mamba-2 LM, as mamba_ssm does it (a seeded, device-independent draw).

`MambaLM(cfg)` leaves PyTorch's default layer initialisation in place (plus A_log = log(1..N) and
D = 1): fine for a model whose weights are about to be loaded, but not the recipe Mamba models are
trained from. `init_mamba_weights(model, seed)` overwrites every parameter with mamba_ssm's
initialisation (`Mamba.__init__` plus `MambaLMHeadModel`'s `_init_weights` with
`rescale_prenorm_residual=True`, `initializer_range=0.02`, one residual per layer):

| parameter | init |
|---|---|
| in_proj, x_proj (and an untied lm_head) weight | U(±1/√fan_in) (PyTorch's Linear default, kept by mamba_ssm) |
| conv1d weight, bias | U(±1/√K) (Conv1d default, fan_in = K for the depthwise conv) |
| dt_proj weight | U(±R^-1/2) (dt_init="random", dt_scale=1) |
| dt_proj bias | softplus⁻¹(dt), dt = exp(U(log 1e-3, log 0.1)) clamped to ≥ 1e-4 |
| A_log, D | log(1..N) per channel, 1 |
| out_proj weight | U(±1/√D) / √n_layer (kaiming_uniform(a=√5), then the prenorm-residual rescale) |
| other Linear biases | 0 |
| embedding | N(0, 0.02²) |
| norms | weight 1, bias 0 |

`init_mamba2_weights(model, seed)` does the same for a `Mamba2LM` from mamba_ssm's `Mamba2.__init__`: the
same embedding, in_proj, conv1d, out_proj and norms; per head dt_bias = softplus⁻¹(dt) as above, A_log =
log(U[1, 16]) and D = 1; the gated norm's weight 1. Both run one skeleton (`_init_lm`) and differ only in the
mixer's SSM parameters.

Draws come from one CPU `torch.Generator` seeded with `seed`, parameter by parameter in a fixed
order, and are then copied to each parameter's device and dtype: the same seed gives the same model
on any device, independently of the global RNG.
"""

from __future__ import annotations

import math

import torch

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 0.1, 1e-4
EMBED_STD = 0.02


def _uniform(shape, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def _dt_bias(d_inner: int, gen: torch.Generator) -> torch.Tensor:
    """Inverse softplus of dt ~ logU[DT_MIN, DT_MAX], so that softplus(bias) starts at dt."""
    r = torch.rand(d_inner, generator=gen, dtype=torch.float64)
    dt = torch.exp(r * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)).clamp(min=DT_FLOOR)
    return dt + torch.log(-torch.expm1(-dt))


def _set(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(dtype=param.dtype, device=param.device))


def init_mamba_weights(model, seed: int):
    """Re-initialise a dense `MambaLM` in place with mamba_ssm's training init; returns the model."""
    return _init_lm(model, seed, _mamba1_ssm)


def init_mamba2_weights(model, seed: int):
    """Re-initialise a dense `Mamba2LM` in place with mamba_ssm's Mamba2 training init; returns the model."""
    return _init_lm(model, seed, _mamba2_ssm)


def _init_lm(model, seed: int, init_ssm):
    """The init both architectures share, in draw order: embedding; per layer in_proj, conv1d, the mixer's SSM
    parameters (`init_ssm(mixer, config, gen)`), out_proj, the block norm; the final norm; an untied head."""
    cfg = model.config
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    bb = model.backbone
    _set(bb.embedding.weight, torch.randn(bb.embedding.weight.shape, generator=gen, dtype=torch.float64) * EMBED_STD)
    for layer in bb.layers:
        m = layer.mixer
        _init_linear(m.in_proj, gen)
        K = m.conv1d.weight.shape[-1]
        _set(m.conv1d.weight, _uniform(m.conv1d.weight.shape, 1 / math.sqrt(K), gen))
        if m.conv1d.bias is not None:
            _set(m.conv1d.bias, _uniform(m.conv1d.bias.shape, 1 / math.sqrt(K), gen))
        init_ssm(m, cfg, gen)
        _init_linear(m.out_proj, gen, scale=1 / math.sqrt(cfg.n_layer))
        _init_norm(layer.norm)
    _init_norm(bb.norm_f)
    if not cfg.tie_embeddings:
        _init_linear(model.lm_head, gen)
    return model


def _mamba1_ssm(m, cfg, gen: torch.Generator) -> None:
    _init_linear(m.x_proj, gen)
    _set(m.dt_proj.weight, _uniform(m.dt_proj.weight.shape, cfg.dt_rank ** -0.5, gen))
    _set(m.dt_proj.bias, _dt_bias(cfg.d_inner, gen))
    # fp32 like mamba_ssm, so A_log is bit-identical to its (and MambaLM's constructor) values
    _set(m.A_log, torch.arange(1, cfg.d_state + 1, dtype=torch.float32).log().repeat(cfg.d_inner, 1))
    _set(m.D, torch.ones(cfg.d_inner, dtype=torch.float64))


def _mamba2_ssm(m, cfg, gen: torch.Generator) -> None:
    _set(m.dt_bias, _dt_bias(cfg.nheads, gen))
    a = 1 + 15 * torch.rand(cfg.nheads, generator=gen, dtype=torch.float32)  # A_init_range (1, 16), fp32
    _set(m.A_log, torch.log(a))
    _set(m.D, torch.ones(m.D.shape, dtype=torch.float64))
    if cfg.gated_rmsnorm:
        _set(m.norm.weight, torch.ones(m.norm.weight.shape, dtype=torch.float64))


def _init_linear(lin: torch.nn.Linear, gen: torch.Generator, scale: float = 1.0) -> None:
    _set(lin.weight, _uniform(lin.weight.shape, scale / math.sqrt(lin.weight.shape[1]), gen))
    if lin.bias is not None:
        _set(lin.bias, torch.zeros(lin.bias.shape, dtype=torch.float64))


def _init_norm(norm: torch.nn.Module) -> None:
    _set(norm.weight, torch.ones(norm.weight.shape, dtype=torch.float64))
    if getattr(norm, "bias", None) is not None:
        _set(norm.bias, torch.zeros(norm.bias.shape, dtype=torch.float64))
