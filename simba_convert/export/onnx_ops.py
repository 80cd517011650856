"""The `simba` ONNX domain on the export side: op schemas and the exporter's translations to bare nodes.

The translations emit one bare `simba` node per call (SelectiveScan, ImpactScore, SelectiveScanScore,
CausalConv1d, SsdScan, SsdScanScore, SelectKept; `gather_rows` becomes a standard GatherND). They must be
bodiless: the exporter inlines every model-local function it meets (ONNX.md pitfall 1), so the reference bodies
(`functions.py`, `functions_ssd.py`) are attached only after export.

Op contracts (also kernels/README.md):
  SelectiveScan(u, delta, A, B, C, D, z, delta_bias) -> (y, last_state)
      T in {float, float16} for u, delta, B, C, z, y; A, D, delta_bias, last_state are float.
      delta is RAW; the op computes softplus(delta + delta_bias) in fp32; y = (C·h + D⊙u) ⊙ silu(z).
  ImpactScore(u, delta, A, B, C[, delta_bias]) -> score [B, L] float; attributes criterion ("last"|"global"),
      signed (0|1). T for u, B, C; delta, A, delta_bias are float. Without delta_bias, delta is post-softplus;
      with it, delta is RAW and the op computes softplus(delta + delta_bias) (the exporter's form: the graph
      then holds no separate softplus of a [B, L, D] tensor).
  SelectiveScanScore(u, delta, A, B, C, D, z, delta_bias) -> (y, last_state, score): SelectiveScan and the
      ImpactScore of its raw delta in one node (attributes criterion, signed, protect >= 0), score +inf at the last
      `protect` positions. The kernel takes the score's decays from the scan's (kernels/README.md); what a pruned
      layer of the exported graph runs.
  CausalConv1d(x, weight, bias) -> u: SiLU (attribute silu=1) of the causal depthwise conv of x [B, L, D] with weight
      [D, K] (attribute kernel_size = K) and bias [D] (float), in x's layout: no transposes around a grouped Conv.
  SsdScan(x, dt, A, B, C, D, dt_bias) -> (y, final_state): the Mamba-2 scan (`ssd_scan_ref`) from a zero state.
      T for x [B, L, H, P], B, C [B, L, G, N] and y; dt [B, L, H], A, D, dt_bias [H] and final_state [B, H, P, N] are
      float. Attribute dt_softplus (0|1): delta = softplus(dt + dt_bias) or dt + dt_bias. No chunk length: the
      chunked and the sequential forms of the scan differ only in how sums are grouped.
  SsdScanScore(x, dt, A, B, C, D, dt_bias) -> (y, final_state, score): SsdScan and the layer's Mamba-2 impact score
      (`impact_score_ssd_ref`, attributes criterion, signed, protect as SelectiveScanScore's) of the same delta.
  SelectKept(score, k) -> slots: score [B, L] float, k [1] int64 (read on the host: a CPU input on every
      provider) with protect <= k <= L; slots [B, k] int64, ascending: the last min(protect, L) positions and
      the best of the rest, ties at the threshold to the lowest positions, NaN ranked as -inf
      (`pruning.select.select_kept_dense_rows`, the PyTorch model's choice). Attribute protect >= 0.
"""

from __future__ import annotations

DOMAIN = "simba"
VERSION = 1
OP_TYPES = ("SelectiveScan", "ImpactScore", "SelectiveScanScore", "CausalConv1d", "SsdScan", "SsdScanScore",
            "SelectKept")

_T = ("T", ["tensor(float)", "tensor(float16)"], "activations: fp32 or fp16 (computed in fp32)")
_F = ("F", ["tensor(float)"], "parameters and fp32 results")


def _score_attributes(OpSchema) -> list:
    return [
        OpSchema.Attribute("criterion", OpSchema.AttrType.STRING, "'last' or 'global'"),
        OpSchema.Attribute("signed", OpSchema.AttrType.INT, "1: max of the signed contribution"),
        OpSchema.Attribute("protect", OpSchema.AttrType.INT, "positions at the end scored +inf"),
    ]


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
            doc="Simba token impact score [B, L] (SIMBA.md §3); delta post-softplus, or raw with delta_bias given.",
            inputs=[param("u", "T"), param("delta", "F"), param("A", "F"), param("B", "T"), param("C", "T"),
                    OpSchema.FormalParameter("delta_bias", "F", param_option=OpSchema.FormalParameterOption.Optional)],
            outputs=[param("score", "F")],
            type_constraints=[_T, _F],
            attributes=[
                OpSchema.Attribute("criterion", OpSchema.AttrType.STRING, "'last' or 'global'"),
                OpSchema.Attribute("signed", OpSchema.AttrType.INT, "1: max of the signed contribution"),
            ],
        ),
        OpSchema(
            "SelectiveScanScore", DOMAIN, VERSION,
            doc="SelectiveScan and its layer's ImpactScore in one node; score +inf at the last `protect` positions.",
            inputs=[param("u", "T"), param("delta", "T"), param("A", "F"), param("B", "T"), param("C", "T"),
                    param("D", "F"), param("z", "T"), param("delta_bias", "F")],
            outputs=[param("y", "T"), param("last_state", "F"), param("score", "F")],
            type_constraints=[_T, _F],
            attributes=_score_attributes(OpSchema),
        ),
        OpSchema(
            "CausalConv1d", DOMAIN, VERSION,
            doc="Causal depthwise conv1d (+ SiLU) over x [B, L, D] in that layout.",
            inputs=[param("x", "T"), param("weight", "F"), param("bias", "F")],
            outputs=[param("u", "T")],
            type_constraints=[_T, _F],
            attributes=[
                OpSchema.Attribute("kernel_size", OpSchema.AttrType.INT, "K, the weight's second dim"),
                OpSchema.Attribute("silu", OpSchema.AttrType.INT, "1: SiLU of the conv"),
            ],
        ),
    ]
    ssd_inputs = [param("x", "T"), param("dt", "F"), param("A", "F"), param("B", "T"), param("C", "T"),
                  param("D", "F"), param("dt_bias", "F")]
    dt_softplus = OpSchema.Attribute("dt_softplus", OpSchema.AttrType.INT, "1: delta = softplus(dt + dt_bias)")
    schemas += [
        OpSchema(
            "SsdScan", DOMAIN, VERSION,
            doc="Mamba-2 (SSD) scan over x [B, L, H, P] with B, C [B, L, G, N], from a zero state.",
            inputs=ssd_inputs, outputs=[param("y", "T"), param("final_state", "F")],
            type_constraints=[_T, _F], attributes=[dt_softplus],
        ),
        OpSchema(
            "SsdScanScore", DOMAIN, VERSION,
            doc="SsdScan and its layer's Mamba-2 impact score in one node; score +inf at the last `protect` positions.",
            inputs=ssd_inputs, outputs=[param("y", "T"), param("final_state", "F"), param("score", "F")],
            type_constraints=[_T, _F],
            attributes=[dt_softplus, *_score_attributes(OpSchema)],
        ),
    ]
    schemas.append(OpSchema(
        "SelectKept", DOMAIN, VERSION,
        doc="Slots [B, k] (ascending) of the k tokens a pruned layer keeps: the protected suffix, then the best.",
        inputs=[param("score", "F"), param("k", "I")], outputs=[param("slots", "I")],
        type_constraints=[_F, ("I", ["tensor(int64)"], "counts and positions")],
        attributes=[OpSchema.Attribute("protect", OpSchema.AttrType.INT, "positions at the end always kept")],
    ))
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
    op = onnxscript.opset18

    def selective_scan(u, delta, A, B, C, D, z, delta_bias):
        return simba.SelectiveScan(u, delta, A, B, C, D, z, delta_bias)

    def impact_score(u, delta, A, B, C, delta_bias, criterion: str, signed: bool):
        if delta_bias is None:
            return simba.ImpactScore(u, delta, A, B, C, criterion=criterion, signed=int(bool(signed)))
        return simba.ImpactScore(u, delta, A, B, C, delta_bias, criterion=criterion, signed=int(bool(signed)))

    def selective_scan_score(u, delta, A, B, C, D, z, delta_bias, criterion: str, signed: bool, protect: int):
        return simba.SelectiveScanScore(u, delta, A, B, C, D, z, delta_bias, criterion=criterion,
                                        signed=int(bool(signed)), protect=int(protect))

    def ssd_scan(x, dt, A, B, C, D, dt_bias, dt_softplus: bool):
        return simba.SsdScan(x, dt, A, B, C, D, dt_bias, dt_softplus=int(bool(dt_softplus)))

    def ssd_scan_score(x, dt, A, B, C, D, dt_bias, dt_softplus: bool, criterion: str, signed: bool, protect: int):
        return simba.SsdScanScore(x, dt, A, B, C, D, dt_bias, dt_softplus=int(bool(dt_softplus)), criterion=criterion,
                                  signed=int(bool(signed)), protect=int(protect))

    def gather_rows(x, slots):  # standard ops: no custom node, no reference body
        return op.GatherND(x, op.Unsqueeze(slots, op.Constant(value_ints=[-1])), batch_dims=1)

    def select_kept(score, k, protect: int):
        count = op.Constant(value_ints=[k]) if isinstance(k, int) else op.Reshape(k, op.Constant(value_ints=[-1]))
        return simba.SelectKept(score, count, protect=int(protect))

    def causal_conv1d(x, weight, bias, kernel_size: int):
        return simba.CausalConv1d(x, weight, bias, kernel_size=int(kernel_size), silu=1)

    return {
        torch.ops.simba.causal_conv1d.default: causal_conv1d,
        torch.ops.simba.gather_rows.default: gather_rows,
        torch.ops.simba.select_kept.default: select_kept,
        torch.ops.simba.selective_scan.default: selective_scan,
        torch.ops.simba.impact_score.default: impact_score,
        torch.ops.simba.selective_scan_score.default: selective_scan_score,
        torch.ops.simba.ssd_scan.default: ssd_scan,
        torch.ops.simba.ssd_scan_score.default: ssd_scan_score,
    }
