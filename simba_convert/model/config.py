"""The Mamba-1 architecture configuration, and its mapping to the mamba_ssm and transformers layouts.

FalconMamba (transformers model_type "falcon_mamba", tiiuae/falcon-mamba-*) is Mamba-1 with a parameter-free
RMSNorm on dt (the low-rank step, before dt_proj), B and C: `bcdt_rms` with eps `mixer_rms_eps`. mamba_ssm's
config has no such field, so a FalconMamba config has the transformers layout only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..arch.common import LMConfigMixin, mamba_ssm_config
from ..errors import CheckpointError, ConfigError

HF_MODEL_TYPES = ("mamba", "falcon_mamba")


@dataclass(frozen=True)
class MambaConfig(LMConfigMixin):
    """Shape of a Mamba-1 language model (SIMBA.md §2 notation: d, D = expand·d, N, R, K)."""

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    rms_norm: bool = True
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    conv_bias: bool = True
    bias: bool = False
    bcdt_rms: bool = False  # FalconMamba: weightless RMSNorm on dt (before dt_proj), B and C
    mixer_rms_eps: float = 1e-6  # its eps (read only when bcdt_rms)

    def __post_init__(self):
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"config field {name} must be a positive integer, got {v!r}")
        if self.dt_rank is None:
            object.__setattr__(self, "dt_rank", math.ceil(self.d_model / 16))
        if self.pad_vocab_size_multiple < 1:
            raise ConfigError("pad_vocab_size_multiple must be >= 1")
        if not isinstance(self.bcdt_rms, bool):
            raise ConfigError(f"config field bcdt_rms must be true or false, got {self.bcdt_rms!r}")
        eps = self.mixer_rms_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
            raise ConfigError(f"config field mixer_rms_eps must be a positive number, got {eps!r}")
        object.__setattr__(self, "mixer_rms_eps", float(eps))

    @property
    def architecture(self) -> str:
        """The name `simba_convert.arch` knows this model by: "falcon_mamba" with the B/C/dt norms, else "mamba1"."""
        return "falcon_mamba" if self.bcdt_rms else "mamba1"

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    # --- the mamba_ssm layout (state-spaces/mamba-*) ---------------------------------------------
    @classmethod
    def from_mamba_ssm(cls, cfg: dict[str, Any]) -> "MambaConfig":
        ssm = dict(cfg.get("ssm_cfg") or {})
        layer = ssm.pop("layer", "Mamba1")
        if layer != "Mamba1":
            raise CheckpointError(
                f"found a {layer} checkpoint (ssm_cfg.layer={layer!r}); only Mamba-1 is supported"
            )
        if cfg.get("attn_layer_idx"):
            raise CheckpointError("found a hybrid Mamba/attention checkpoint; only pure Mamba-1 is supported")
        if cfg.get("d_intermediate", 0):
            raise CheckpointError("found a Mamba checkpoint with MLP blocks (d_intermediate>0); not supported")
        try:
            return cls(
                d_model=int(cfg["d_model"]),
                n_layer=int(cfg["n_layer"]),
                vocab_size=int(cfg["vocab_size"]),
                d_state=int(ssm.get("d_state", 16)),
                d_conv=int(ssm.get("d_conv", 4)),
                expand=int(ssm.get("expand", 2)),
                dt_rank=None if ssm.get("dt_rank", "auto") == "auto" else int(ssm["dt_rank"]),
                rms_norm=bool(cfg.get("rms_norm", True)),
                norm_eps=float(cfg.get("norm_epsilon", 1e-5)),
                residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
                pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 8)),
                tie_embeddings=bool(cfg.get("tie_embeddings", True)),
                conv_bias=bool(ssm.get("conv_bias", True)),
                bias=bool(ssm.get("bias", False)),
            )
        except KeyError as e:
            raise CheckpointError(f"config.json lacks the field {e.args[0]!r} of a mamba_ssm config") from None

    def to_mamba_ssm(self) -> dict[str, Any]:
        if self.bcdt_rms:
            # mamba_ssm would read such a config as plain Mamba-1 and silently drop the norms.
            raise ConfigError("FalconMamba (B/C/dt RMSNorm) has no mamba_ssm layout; save it in the 'hf' layout",
                              option="layout")
        ssm: dict[str, Any] = {"d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand}
        if self.dt_rank != math.ceil(self.d_model / 16):
            ssm["dt_rank"] = self.dt_rank
        if not self.conv_bias:
            ssm["conv_bias"] = False
        if self.bias:
            ssm["bias"] = True
        return mamba_ssm_config(self, ssm)

    # --- the transformers layout (model_type "mamba" / "falcon_mamba") ---------------------------
    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "MambaConfig":
        """A transformers config dict -> MambaConfig. Fields that only steer initialisation or training
        (time_step_*, rescale_prenorm_residual, initializer_range, use_mambapy, use_associative_scan) do not
        change the forward pass and are not kept."""
        mt = cfg.get("model_type")
        if mt not in HF_MODEL_TYPES:
            raise CheckpointError(f"found model_type={mt!r}; only Mamba-1 ('mamba', 'falcon_mamba') is supported")
        falcon = mt == "falcon_mamba"
        try:
            hidden = int(cfg["hidden_size"])
            expand = int(cfg.get("expand", 2))
            inter = int(cfg.get("intermediate_size", expand * hidden))
            if inter != expand * hidden:
                raise CheckpointError(
                    f"intermediate_size {inter} is not expand*hidden_size ({expand}*{hidden}); not supported"
                )
            rank = cfg.get("time_step_rank", "auto")
            # transformers stores the padded vocabulary size; padding to 1 keeps it as is.
            return cls(
                d_model=hidden,
                n_layer=int(cfg["num_hidden_layers"]),
                vocab_size=int(cfg["vocab_size"]),
                d_state=int(cfg.get("state_size", 16)),
                d_conv=int(cfg.get("conv_kernel", 4)),
                expand=expand,
                dt_rank=None if rank == "auto" else int(rank),
                rms_norm=True,
                norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
                residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
                pad_vocab_size_multiple=1,
                tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                conv_bias=bool(cfg.get("use_conv_bias", True)),
                bias=bool(cfg.get("use_bias", False)),
                bcdt_rms=falcon,
                mixer_rms_eps=float(cfg.get("mixer_rms_eps", 1e-6)) if falcon else 1e-6,
            )
        except KeyError as e:
            raise CheckpointError(f"config.json lacks the field {e.args[0]!r} of a transformers Mamba config") from None

    def to_hf(self) -> dict[str, Any]:
        if not self.rms_norm:
            raise ConfigError("the transformers Mamba layout has RMSNorm only; this model uses LayerNorm")
        out = {
            "architectures": ["FalconMambaForCausalLM" if self.bcdt_rms else "MambaForCausalLM"],
            "model_type": "falcon_mamba" if self.bcdt_rms else "mamba",
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layer,
            "vocab_size": self.padded_vocab_size,
            "state_size": self.d_state,
            "conv_kernel": self.d_conv,
            "expand": self.expand,
            "intermediate_size": self.d_inner,
            "time_step_rank": self.dt_rank,
            "layer_norm_epsilon": self.norm_eps,
            "residual_in_fp32": self.residual_in_fp32,
            "tie_word_embeddings": self.tie_embeddings,
            "use_conv_bias": self.conv_bias,
            "use_bias": self.bias,
            "hidden_act": "silu",
            "pad_token_id": 0,
            "bos_token_id": 0,
            "eos_token_id": 0,
        }
        if self.bcdt_rms:
            out["mixer_rms_eps"] = self.mixer_rms_eps
        return out
