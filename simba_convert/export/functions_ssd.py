"""Model-local ONNX reference bodies of Mamba-2's `simba` ops (SsdScan, SsdScanScore), so stock onnxruntime runs an
exported Mamba-2 file as is (functions.py has the Mamba-1 ones and attaches both).

Heads are handled in groups: x [B, L, H, P] is read as [B, L, G, J, P] (J = H/G heads per group, head h = g·J + j
reads group g, as `ssd_scan_ref` and `impact_score_ssd_ref` have it), so B and C [B, L, G, N] broadcast over the
group's heads and are never repeated per head. The scan is a `Scan` over positions with the state [B, G, J, P, N]
(the recurrence of ops/ssd.py, one step per position; its chunked form only groups the same sums differently); the
`last` score needs no scan (a reverse CumSum of delta), the `global` one a reverse `Scan` over G [B, G, J, N]. Both
compute in fp32 and cast y back to x's type.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .functions import _Builder, _scan_body, _softplus, max_contribution, protected, score_settings
from .onnx_ops import DOMAIN

_INPUTS = ["x", "dt", "A", "B", "C", "D", "dt_bias"]


def _by_group(b: _Builder, t: str, G: str, channels: bool) -> str:
    """[B, L, H] -> [B, L, G, J], or [B, L, H, P] -> [B, L, G, J, P] (channels)."""
    parts = [b.shape(t, 0, 2), G, b.const([-1])] + ([b.shape(t, 3, 4)] if channels else [])
    return b.op("Reshape", t, b.op("Concat", *parts, axis=0))


def _prologue(b: _Builder, dt_softplus: bool):
    """fp32 x [B, L, H, P] and, grouped, x [B, L, G, J, P], delta [B, L, G, J], A [G, J], B, C [B, L, G, N] and G."""
    x, Bm, Cm = (b.op("Cast", t, to=TensorProto.FLOAT) for t in ("x", "B", "C"))
    G = b.shape("B", 2, 3)
    delta = b.op("Add", "dt", "dt_bias")
    if dt_softplus:
        delta = _softplus(b, delta)
    Ag = b.op("Reshape", "A", b.op("Concat", G, b.const([-1]), axis=0))
    return x, _by_group(b, x, G, True), _by_group(b, delta, G, False), Ag, Bm, Cm, G


def _emit_ssd_scan(b: _Builder, x: str, xg: str, dg: str, Ag: str, Bm: str, Cm: str, G: str) -> tuple[str, str]:
    """Nodes of the scan; returns (y [B, L, H, P] fp32, the final state [B, H, P, N])."""
    dA = b.op("Exp", b.op("Mul", dg, Ag))  # [B, L, G, J]: one decay per head and position
    dx = b.op("Mul", b.unsqueeze(dg, -1), xg)  # delta_t · x_t [B, L, G, J, P]

    def step(g: _Builder):
        decay = g.op("Unsqueeze", "dA_t", g.const([3, 4]))  # [B, G, J, 1, 1]
        inp = g.op("Mul", g.unsqueeze("dx_t", -1), g.op("Unsqueeze", "B_t", g.const([2, 3])))  # [B, G, J, P, N]
        g.op("Add", g.op("Mul", decay, "h_in"), inp, outputs=["h_out"])
        g.op("ReduceSum", g.op("Mul", "h_out", g.op("Unsqueeze", "C_t", g.const([2, 3]))), g.const([-1]),
             keepdims=0, outputs=["y_t"])

    body = _scan_body("ssd_scan_step", ["h_in", "dA_t", "dx_t", "B_t", "C_t"], ["h_out", "y_t"], step)
    h0 = b.zeros(b.shape(xg, 0, 1), b.shape(xg, 2, 5), b.shape("B", 3, 4))  # [B, G, J, P, N]
    h_last, ys = b.op("Scan", h0, dA, dx, Bm, Cm, outputs=2, body=body, num_scan_inputs=4,
                      scan_input_axes=[1, 1, 1, 1], scan_output_axes=[1])
    Dg = b.op("Reshape", "D", b.op("Concat", G, b.const([-1, 1]), axis=0))  # [G, J, 1]
    y = b.op("Reshape", b.op("Add", ys, b.op("Mul", Dg, xg)), b.op("Shape", x))
    state_shape = b.op("Concat", b.shape(x, 0, 1), b.shape(x, 2, 4), b.shape("B", 3, 4), axis=0)
    return y, b.op("Reshape", h_last, state_shape)


def _emit_ssd_score(b: _Builder, xg: str, dg: str, Ag: str, Bm: str, Cm: str, criterion: str, signed: bool) -> str:
    """Nodes of `impact_score_ssd_ref`'s `criterion` on the grouped fp32 tensors; returns the score [B, L]."""
    if criterion == "last":
        # R_t = Σ_{k>t} delta_k; w_t = C_T·B_t, shared by a group's heads
        R = b.op("CumSum", dg, b.const(1, dims=[]), exclusive=1, reverse=1)
        CT = b.op("Gather", Cm, b.const(-1, dims=[]), axis=1)  # [B, G, N]
        w = b.reduce_last("ReduceSum", b.op("Mul", Bm, b.unsqueeze(CT, 1)))  # [B, L, G]
        coef = b.op("Mul", b.op("Mul", b.unsqueeze(w, -1), b.op("Exp", b.op("Mul", Ag, R))), dg)
    elif criterion == "global":
        # G_t = C_t + exp(delta_{t+1} A) G_{t+1} from the end (delta past the end is 0); reach_t = B_t·G_t
        tail = b.op("Slice", dg, b.const([1]), b.const([2**62]), b.const([1]))
        decay = b.op("Exp", b.op("Mul", b.op("Pad", tail, b.const([0, 0, 0, 0, 0, 1, 0, 0])), Ag))

        def step(g: _Builder):
            g.op("Add", g.unsqueeze("C_t", 2), g.op("Mul", g.unsqueeze("dn_t", -1), "G_in"), outputs=["G_out"])
            g.op("ReduceSum", g.op("Mul", "G_out", g.unsqueeze("B_t", 2)), g.const([-1]), keepdims=0,
                 outputs=["reach_t"])

        body = _scan_body("ssd_global_step", ["G_in", "dn_t", "C_t", "B_t"], ["G_out", "reach_t"], step)
        G0 = b.zeros(b.shape(dg, 0, 1), b.shape(dg, 2, 4), b.shape(Bm, 3, 4))  # [B, G, J, N]
        _, reach = b.op("Scan", G0, decay, Cm, Bm, outputs=2, body=body, num_scan_inputs=3,
                        scan_input_axes=[1, 1, 1], scan_input_directions=[1, 1, 1], scan_output_axes=[1],
                        scan_output_directions=[1])
        coef = b.op("Mul", reach, dg)
    else:
        raise ValueError(f"the Mamba-2 impact score has reference bodies for 'last' and 'global', not {criterion!r}")
    return max_contribution(b, b.op("Mul", b.unsqueeze(coef, -1), xg), signed)  # max over (heads, p)


def ssd_scan_function(opset: int, dt_softplus: bool) -> onnx.FunctionProto:
    """SsdScan(x, dt, A, B, C, D, dt_bias) -> (y, final_state), as `ssd_scan_ref` computes it."""
    b = _Builder("ssd_")
    x, xg, dg, Ag, Bm, Cm, G = _prologue(b, dt_softplus)
    y, state = _emit_ssd_scan(b, x, xg, dg, Ag, Bm, Cm, G)
    b.op("CastLike", y, "x", outputs=["y"])
    b.op("Identity", state, outputs=["final_state"])
    return helper.make_function(DOMAIN, "SsdScan", _INPUTS, ["y", "final_state"], b.nodes,
                                [helper.make_opsetid("", opset)], attributes=["dt_softplus"])


def ssd_scan_score_function(opset: int, dt_softplus: bool, criterion: str, signed: bool,
                            protect: int) -> onnx.FunctionProto:
    """SsdScanScore(x, dt, A, B, C, D, dt_bias) -> (y, final_state, score): the two bodies on one delta, the score
    +inf at the last `protect` positions."""
    b = _Builder("ssds_")
    x, xg, dg, Ag, Bm, Cm, G = _prologue(b, dt_softplus)
    y, state = _emit_ssd_scan(b, x, xg, dg, Ag, Bm, Cm, G)
    score = protected(b, _emit_ssd_score(b, xg, dg, Ag, Bm, Cm, criterion, signed), "x", protect)
    b.op("CastLike", y, "x", outputs=["y"])
    b.op("Identity", state, outputs=["final_state"])
    b.op("Identity", score, outputs=["score"])
    return helper.make_function(DOMAIN, "SsdScanScore", _INPUTS, ["y", "final_state", "score"], b.nodes,
                                [helper.make_opsetid("", opset)],
                                attributes=["dt_softplus", "criterion", "signed", "protect"])


# as functions._BODIES: op type -> (builder, the node's settings)
SSD_BODIES = {
    "SsdScan": (ssd_scan_function, lambda node, attrs: (bool(attrs.get("dt_softplus", 0)),)),
    "SsdScanScore": (ssd_scan_score_function,
                     lambda node, attrs: (bool(attrs.get("dt_softplus", 0)), *score_settings(attrs))),
}
