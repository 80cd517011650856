"""The `simba` ONNX domain on the export side: op schemas and the exporter's translations to bare nodes.

The translations emit one bare `simba::SelectiveScan` / `simba::ImpactScore` node per call. They must
be bodiless: the exporter inlines every model-local function it meets (ONNX.md pitfall 1), so the
reference bodies (`functions.py`) are attached only after export.

Op contracts (also kernels/README.md):
  SelectiveScan(u, delta, A, B, C, D, z, delta_bias) -> (y, last_state)
      T in {float, float16} for u, delta, B, C, z, y; A, D, delta_bias, last_state are float.
      delta is RAW; the op computes softplus(delta + delta_bias) in fp32; y = (C·h + D⊙u) ⊙ silu(z).
  ImpactScore(u, delta, A, B, C) -> score [B, L] float; attributes criterion ("last"|"global"), signed (0|1)
      T for u, B, C; delta (post-softplus) and A are float.
"""

from __future__ import annotations

DOMAIN = "simba"
VERSION = 1

_T = ("T", ["tensor(float)", "tensor(float16)"], "activations: fp32 or fp16 (computed in fp32)")
_F = ("F", ["tensor(float)"], "parameters and fp32 results")


def register_schemas() -> None:
    """Register the domain's OpSchemas with onnx (idempotent), so the exporter and the checker know them."""
    import onnx
    from onnx.defs import OpSchema

    def param(name, ty):
        return OpSchema.FormalParameter(name, ty)

    schemas = [
        OpSchema(
            "SelectiveScan", DOMAIN, VERSION,
            doc="Mamba-1 selective scan over [B, L, D] with softplus(delta + delta_bias) fused.",
            inputs=[param("u", "T"), param("delta", "T"), param("A", "F"), param("B", "T"), param("C", "T"),
                    param("D", "F"), param("z", "T"), param("delta_bias", "F")],
            outputs=[param("y", "T"), param("last_state", "F")],
            type_constraints=[_T, _F],
        ),
        OpSchema(
            "ImpactScore", DOMAIN, VERSION,
            doc="Simba token impact score [B, L] (SIMBA.md §3) from post-softplus delta.",
            inputs=[param("u", "T"), param("delta", "F"), param("A", "F"), param("B", "T"), param("C", "T")],
            outputs=[param("score", "F")],
            type_constraints=[_T, _F],
            attributes=[
                OpSchema.Attribute("criterion", OpSchema.AttrType.STRING, "'last' or 'global'"),
                OpSchema.Attribute("signed", OpSchema.AttrType.INT, "1: max of the signed contribution"),
            ],
        ),
    ]
    for s in schemas:
        if not onnx.defs.has(s.name, s.domain):
            onnx.defs.register_schema(s)


def translation_table() -> dict:
    """`custom_translation_table` for torch.onnx.export: our torch custom ops -> bare `simba` nodes."""
    import onnxscript
    import torch

    from . import torch_ops  # noqa: F401  (registers torch.ops.simba.*)

    register_schemas()
    simba = onnxscript.values.Opset(DOMAIN, VERSION)

    def selective_scan(u, delta, A, B, C, D, z, delta_bias):
        return simba.SelectiveScan(u, delta, A, B, C, D, z, delta_bias)

    def impact_score(u, delta, A, B, C, criterion: str, signed: bool):
        return simba.ImpactScore(u, delta, A, B, C, criterion=criterion, signed=int(bool(signed)))

    return {
        torch.ops.simba.selective_scan.default: selective_scan,
        torch.ops.simba.impact_score.default: impact_score,
    }
