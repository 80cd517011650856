"""The Mamba-2 architecture configuration, and its mapping to the mamba_ssm and transformers layouts.

Notation: d = d_model; D = expand·d (d_inner); H = D / headdim heads of P = headdim channels; G = ngroups groups
of N = d_state states (head h reads group h // (H/G)); K = d_conv.

The two layouts do not compute quite the same model; the fields below hold what differs:
- mamba_ssm's gated RMSNorm uses eps 1e-5 whatever the block norms use (Mamba2 hard-codes it); transformers
  uses layer_norm_epsilon for both (`gated_norm_eps`).
- transformers always gates before the norm, rmsnorm(y·silu(z)), whatever its config's `norm_before_gate` says
  (its torch path and its fused kernel call both hard-code it); mamba_ssm follows ssm_cfg.norm_before_gate
  (default False).
- both clamp the step size to `dt_limit` (transformers: time_step_limit) in the chunked forward only; their
  one-token decoding steps do not. Mamba2Mixer.step clamps too, so that decoding continues the forward exactly.
- transformers has no LayerNorm variant, no ungated-norm variant (mamba_ssm's `rmsnorm=False`) and no per-channel D
  (`D_has_hdim`); those configs are mamba_ssm-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..common import LMConfigMixin, mamba_ssm_config
from ...errors import CheckpointError, ConfigError

NO_DT_LIMIT = (0.0, math.inf)
# mamba_ssm's Mamba2 layer arguments that only shape the initialisation or the kernels used: accepted, not kept.
_MAMBA_SSM_IGNORED = {"conv_init", "A_init_range", "dt_min", "dt_max", "dt_init_floor", "use_mem_eff_path",
                      "layer_idx", "process_group", "sequence_parallel"}
_MAMBA_SSM_KEYS = {"layer", "d_state", "d_conv", "expand", "headdim", "d_ssm", "ngroups", "D_has_hdim", "rmsnorm",
                   "norm_before_gate", "dt_limit", "bias", "conv_bias", "chunk_size"} | _MAMBA_SSM_IGNORED


_SPECIAL_FLOATS = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _json_float(v):
    """transformers >= 5 writes inf into config.json as {"__float__": "Infinity"}; older writers as a bare Infinity
    (which Python's json reads as inf)."""
    if isinstance(v, dict) and set(v) == {"__float__"} and v["__float__"] in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[v["__float__"]]
    return v


def _dt_limit(value) -> tuple:
    """A stored (lo, hi) step-size limit; absent or null means none. Bad values are left to the validation."""
    if value is None:
        return NO_DT_LIMIT
    return tuple(_json_float(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Mamba2Config(LMConfigMixin):
    """Shape of a Mamba-2 language model (notation in the module docstring)."""

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    rms_norm: bool = True  # the block and final norms: RMSNorm, else LayerNorm
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    conv_bias: bool = True
    bias: bool = False
    D_has_hdim: bool = False  # D per channel [D] instead of per head [H]
    gated_rmsnorm: bool = True  # mamba_ssm's ssm_cfg.rmsnorm: y -> norm(y, z); else y·silu(z), no norm
    norm_before_gate: bool = False  # gated norm: rmsnorm(y)·silu(z) if True, rmsnorm(y·silu(z)) if False
    gated_norm_eps: float = 1e-5
    dt_limit: tuple[float, float] = NO_DT_LIMIT  # delta clamped to [lo, hi] after the softplus

    def __post_init__(self):
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "headdim", "ngroups",
                     "chunk_size", "pad_vocab_size_multiple"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"config field {name} must be a positive integer, got {v!r}")
        if self.d_inner % self.headdim:
            raise ConfigError(f"d_inner = expand*d_model = {self.d_inner} is not a multiple of headdim {self.headdim}")
        if self.nheads % self.ngroups:
            raise ConfigError(f"the {self.nheads} heads cannot be split into ngroups = {self.ngroups} groups")
        for name in ("norm_eps", "gated_norm_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"config field {name} must be > 0, got {getattr(self, name)!r}")
        try:
            lo, hi = (float(v) for v in self.dt_limit)
        except (TypeError, ValueError):
            raise ConfigError(f"dt_limit must be a pair (lo, hi), got {self.dt_limit!r}") from None
        if not 0.0 <= lo <= hi:
            raise ConfigError(f"dt_limit must satisfy 0 <= lo <= hi, got {self.dt_limit!r}")
        object.__setattr__(self, "dt_limit", (lo, hi))

    @property
    def architecture(self) -> str:
        """The name `simba_convert.arch` knows this model by."""
        return "mamba2"

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x, B and C together (D + 2·G·N)."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self) -> int:
        """in_proj's output features, in the order [z, x, B, C, dt]: 2·D + 2·G·N + H."""
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads

    @property
    def group_size(self) -> int:
        """Channels per group of the gated RMSNorm (D / G)."""
        return self.d_inner // self.ngroups

    @property
    def has_dt_limit(self) -> bool:
        return self.dt_limit != NO_DT_LIMIT

    # --- the mamba_ssm layout (state-spaces/mamba2-*) --------------------------------------------
    @classmethod
    def from_mamba_ssm(cls, cfg: dict[str, Any]) -> "Mamba2Config":
        ssm = dict(cfg.get("ssm_cfg") or {})
        layer = ssm.get("layer", "Mamba1")
        if layer != "Mamba2":
            raise CheckpointError(f"found a {layer} checkpoint (ssm_cfg.layer={layer!r}); expected Mamba2")
        if cfg.get("attn_layer_idx"):
            raise CheckpointError(
                "found a hybrid Mamba/attention checkpoint (attn_layer_idx); hybrids are not supported yet")
        if cfg.get("d_intermediate", 0):
            raise CheckpointError("found a Mamba-2 checkpoint with MLP blocks (d_intermediate>0); not supported")
        unknown = sorted(set(ssm) - _MAMBA_SSM_KEYS)
        if unknown:
            raise CheckpointError(f"ssm_cfg has the field {unknown[0]!r}, unknown to the Mamba2 layer")
        try:
            d_model, expand = int(cfg["d_model"]), int(ssm.get("expand", 2))
            if ssm.get("d_ssm") is not None and int(ssm["d_ssm"]) != expand * d_model:
                raise CheckpointError(
                    f"ssm_cfg.d_ssm={ssm['d_ssm']} (a gated MLP beside the SSM) is not supported; only d_ssm = d_inner")
            return cls(
                d_model=d_model,
                n_layer=int(cfg["n_layer"]),
                vocab_size=int(cfg["vocab_size"]),
                d_state=int(ssm.get("d_state", 128)),
                d_conv=int(ssm.get("d_conv", 4)),
                expand=expand,
                headdim=int(ssm.get("headdim", 64)),
                ngroups=int(ssm.get("ngroups", 1)),
                chunk_size=int(ssm.get("chunk_size", 256)),
                rms_norm=bool(cfg.get("rms_norm", True)),
                norm_eps=float(cfg.get("norm_epsilon", 1e-5)),
                residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
                pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 8)),
                tie_embeddings=bool(cfg.get("tie_embeddings", True)),
                conv_bias=bool(ssm.get("conv_bias", True)),
                bias=bool(ssm.get("bias", False)),
                D_has_hdim=bool(ssm.get("D_has_hdim", False)),
                gated_rmsnorm=bool(ssm.get("rmsnorm", True)),
                norm_before_gate=bool(ssm.get("norm_before_gate", False)),
                gated_norm_eps=1e-5,  # mamba_ssm's Mamba2 builds RMSNormGated(eps=1e-5), not from the config
                dt_limit=_dt_limit(ssm.get("dt_limit")),
            )
        except KeyError as e:
            raise CheckpointError(f"config.json lacks the field {e.args[0]!r} of a mamba_ssm config") from None

    def to_mamba_ssm(self) -> dict[str, Any]:
        if self.gated_norm_eps != 1e-5:
            raise ConfigError(f"mamba_ssm's Mamba2 fixes the gated norm's eps at 1e-5; this model uses "
                              f"{self.gated_norm_eps:g} (save it in the transformers layout)")
        ssm: dict[str, Any] = {"layer": "Mamba2", "d_state": self.d_state, "d_conv": self.d_conv,
                               "expand": self.expand, "headdim": self.headdim, "ngroups": self.ngroups,
                               "chunk_size": self.chunk_size}
        if not self.conv_bias:
            ssm["conv_bias"] = False
        if self.bias:
            ssm["bias"] = True
        if self.D_has_hdim:
            ssm["D_has_hdim"] = True
        if not self.gated_rmsnorm:
            ssm["rmsnorm"] = False
        if self.norm_before_gate:
            ssm["norm_before_gate"] = True
        if self.has_dt_limit:
            ssm["dt_limit"] = list(self.dt_limit)
        return mamba_ssm_config(self, ssm)

    # --- the transformers layout (model_type "mamba2", e.g. mistralai/Mamba-Codestral-7B-v0.1) -----
    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "Mamba2Config":
        mt = cfg.get("model_type")
        if mt != "mamba2":
            raise CheckpointError(f"found model_type={mt!r}; expected 'mamba2'")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise CheckpointError(f"hidden_act {act!r} is not supported; Mamba-2 uses silu")
        try:
            hidden, expand = int(cfg["hidden_size"]), int(cfg.get("expand", 2))
            head_dim = int(cfg.get("head_dim", 64))
            heads = int(cfg.get("num_heads", expand * hidden // head_dim))
            if heads * head_dim != expand * hidden:
                raise CheckpointError(f"num_heads*head_dim = {heads}*{head_dim} is not expand*hidden_size = "
                                      f"{expand}*{hidden}; the config is inconsistent")
            eps = float(cfg.get("layer_norm_epsilon", 1e-5))
            # transformers stores the padded vocabulary size; padding to 1 keeps it as is. Its defaults (n_groups 8,
            # untied head) are those of its Mamba2Config, not of mamba_ssm.
            return cls(
                d_model=hidden,
                n_layer=int(cfg["num_hidden_layers"]),
                vocab_size=int(cfg["vocab_size"]),
                d_state=int(cfg.get("state_size", 128)),
                d_conv=int(cfg.get("conv_kernel", 4)),
                expand=expand,
                headdim=head_dim,
                ngroups=int(cfg.get("n_groups", 8)),
                chunk_size=int(cfg.get("chunk_size", 256)),
                rms_norm=True,
                norm_eps=eps,
                residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
                pad_vocab_size_multiple=1,
                tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                conv_bias=bool(cfg.get("use_conv_bias", True)),
                bias=bool(cfg.get("use_bias", False)),
                gated_norm_eps=eps,
                norm_before_gate=False,  # what transformers computes, whatever cfg["norm_before_gate"] says
                dt_limit=_dt_limit(cfg.get("time_step_limit")),
            )
        except KeyError as e:
            raise CheckpointError(
                f"config.json lacks the field {e.args[0]!r} of a transformers Mamba2 config") from None

    def to_hf(self) -> dict[str, Any]:
        why = None
        if not self.rms_norm:
            why = "has LayerNorm block norms"
        elif not self.gated_rmsnorm:
            why = "has no gated RMSNorm (mamba_ssm rmsnorm=False)"
        elif self.norm_before_gate:
            why = "normalises before the gate (norm_before_gate)"
        elif self.D_has_hdim:
            why = "has a per-channel D (D_has_hdim)"
        elif self.gated_norm_eps != self.norm_eps:
            why = f"uses eps {self.gated_norm_eps:g} in the gated norm and {self.norm_eps:g} in the block norms"
        if why:
            raise ConfigError(f"the transformers Mamba2 layout cannot hold this model: it {why}")
        return {
            "architectures": ["Mamba2ForCausalLM"],
            "model_type": "mamba2",
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layer,
            "vocab_size": self.padded_vocab_size,
            "state_size": self.d_state,
            "conv_kernel": self.d_conv,
            "expand": self.expand,
            "num_heads": self.nheads,
            "head_dim": self.headdim,
            "n_groups": self.ngroups,
            "chunk_size": self.chunk_size,
            "layer_norm_epsilon": self.norm_eps,
            "residual_in_fp32": self.residual_in_fp32,
            "tie_word_embeddings": self.tie_embeddings,
            "use_conv_bias": self.conv_bias,
            "use_bias": self.bias,
            "time_step_limit": list(self.dt_limit),
            "hidden_act": "silu",
            # read by older transformers configs only (their models computed this anyway)
            "norm_before_gate": False,
            "rms_norm": True,
        }
