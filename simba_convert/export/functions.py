"""Model-local ONNX reference bodies for the `simba` ops, so stock onnxruntime runs the file as is.

The scan and the scores get FunctionProtos built from `Scan` (state [B, D, N], one step per position, nothing
of size [B, L, D, N] materialised); the conv one of K shifted products. onnxruntime inlines a model-local function when no registered kernel
claims the node; when libsimba_ort_ops is registered its kernel runs instead (ONNX.md §3.1).
The bodies compute in fp32 and cast the outputs back (CastLike), so one body serves fp32 and fp16.

`ImpactScore`'s body is generated for the criterion, sign and delta form (post-softplus, or raw with the
optional delta_bias) the model's nodes use, `SelectiveScanScore`'s for their criterion, sign and protected
suffix, `CausalConv1d`'s for their kernel size (a function can switch neither on a string attribute nor on an
input's presence); Mamba-2's SsdScan / SsdScanScore likewise (functions_ssd.py). `attach_reference_functions`
refuses a model whose nodes disagree.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .onnx_ops import DOMAIN, VERSION

MIN_OPSET = 18  # Reduce* ops with axes as an input, Pad with pads as an input


class _Builder:
    """Collects nodes with fresh names; `op` returns the single output name (or names)."""

    def __init__(self, prefix: str):
        self.nodes: list[onnx.NodeProto] = []
        self._prefix, self._n = prefix, 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{self._prefix}{hint}_{self._n}"

    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, **attrs):
        outs = outputs if isinstance(outputs, list) else [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, dtype=TensorProto.INT64, dims=None) -> str:
        vals = value if isinstance(value, (list, tuple)) else [value]
        shape = [len(vals)] if dims is None else dims
        return self.op("Constant", value=helper.make_tensor(self.fresh("c"), dtype, shape, vals))

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.const([axis]))

    def reduce_last(self, op_type: str, x: str) -> str:
        return self.op(op_type, x, self.const([-1]), keepdims=0)

    def shape(self, x: str, start: int, end: int) -> str:
        """Dims [start, end) of x's shape (int64 [end - start])."""
        return self.op("Shape", x, start=start, end=end)

    def zeros(self, *dims: str) -> str:
        """fp32 zeros of the shape that the int64 pieces `dims` concatenate to."""
        shape = self.op("Concat", *dims, axis=0)
        return self.op("ConstantOfShape", shape, value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))

    def zeros_state(self, like_bld: str, A: str) -> str:
        """Zeros [B, D, N] from u-like [B, L, D] and A [D, N]."""
        return self.zeros(self.shape(like_bld, 0, 1), self.shape(like_bld, 2, 3), self.shape(A, 1, 2))


def _f32(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _scan_body(name, inputs, outputs, build) -> onnx.GraphProto:
    b = _Builder(f"{name}_")
    build(b)
    return helper.make_graph(b.nodes, name, [_f32(i) for i in inputs], [_f32(o) for o in outputs])


def _softplus(b: _Builder, x: str) -> str:
    """torch's softplus: x itself above 20."""
    return b.op("Where", b.op("Greater", x, b.const(20.0, TensorProto.FLOAT, [])), x, b.op("Softplus", x))


def _emit_scan(b: _Builder, u: str, dl: str, Bm: str, Cm: str, z: str) -> tuple[str, str]:
    """Nodes of the scan over fp32 u, post-softplus dl [B, L, D], B, C [B, L, N], z; inputs A, D by name.
    Returns (y fp32, last state)."""
    du = b.op("Mul", dl, u)

    def step(g: _Builder):
        dA = g.op("Exp", g.op("Mul", g.unsqueeze("dl_t", -1), "A"))  # [B, D, N]
        dBu = g.op("Mul", g.unsqueeze("du_t", -1), g.unsqueeze("B_t", 1))
        g.op("Add", g.op("Mul", dA, "h_in"), dBu, outputs=["h_out"])
        g.op("ReduceSum", g.op("Mul", "h_out", g.unsqueeze("C_t", 1)), g.const([-1]), keepdims=0, outputs=["y_t"])

    body = _scan_body("selective_scan_step", ["h_in", "dl_t", "du_t", "B_t", "C_t"], ["h_out", "y_t"], step)
    h_last, ys = b.op("Scan", b.zeros_state("u", "A"), dl, du, Bm, Cm, outputs=2, body=body,
                      num_scan_inputs=4, scan_input_axes=[1, 1, 1, 1], scan_output_axes=[1])
    y = b.op("Add", ys, b.op("Mul", u, "D"))
    return b.op("Mul", y, b.op("Mul", z, b.op("Sigmoid", z))), h_last


def _emit_score(b: _Builder, u: str, delta: str, Bm: str, Cm: str, criterion: str, signed: bool) -> str:
    """Nodes of `impact_score_ref`'s `criterion` over fp32 u, post-softplus delta, B, C; input A by name.
    Returns the score [B, L]."""
    if criterion == "last":
        # R_t = Σ_{k>t} delta_k; the readout C_T of the last position weights every B_t
        R = b.op("CumSum", delta, b.const(1, dims=[]), exclusive=1, reverse=1)
        CT = b.op("Gather", Cm, b.const(-1, dims=[]), axis=1)  # [B, N]
        BC = b.op("Mul", Bm, b.unsqueeze(CT, 1))

        def step(g: _Builder):
            decay = g.op("Exp", g.op("Mul", g.unsqueeze("R_t", -1), "A"))
            g.op("ReduceSum", g.op("Mul", decay, g.unsqueeze("BC_t", 1)), g.const([-1]), keepdims=0,
                 outputs=["reach_t"])

        body = _scan_body("impact_last_step", ["R_t", "BC_t"], ["reach_t"], step)
        reach = b.op("Scan", R, BC, body=body, num_scan_inputs=2, scan_input_axes=[1, 1], scan_output_axes=[1])
    elif criterion == "global":
        # G_t = C_t + exp(delta_{t+1} ⊗ A) ⊙ G_{t+1}, scanned from the end; delta past the end is 0
        tail = b.op("Slice", delta, b.const([1]), b.const([2**62]), b.const([1]))
        dnext = b.op("Pad", tail, b.const([0, 0, 0, 0, 1, 0]))

        def step(g: _Builder):
            decay = g.op("Exp", g.op("Mul", g.unsqueeze("dn_t", -1), "A"))
            g.op("Add", g.unsqueeze("C_t", 1), g.op("Mul", decay, "G_in"), outputs=["G_out"])
            g.op("ReduceSum", g.op("Mul", "G_out", g.unsqueeze("B_t", 1)), g.const([-1]), keepdims=0,
                 outputs=["reach_t"])

        body = _scan_body("impact_global_step", ["G_in", "dn_t", "C_t", "B_t"], ["G_out", "reach_t"], step)
        _, reach = b.op("Scan", b.zeros_state("u", "A"), dnext, Cm, Bm, outputs=2, body=body,
                        num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_input_directions=[1, 1, 1],
                        scan_output_axes=[1], scan_output_directions=[1])
    else:
        raise ValueError(f"the impact score has reference bodies for 'last' and 'global', not {criterion!r}")
    contrib = b.op("Mul", b.op("Mul", u, delta), reach)
    if not signed:
        contrib = b.op("Abs", contrib)
    return b.op("ReduceMax", contrib, b.const([-1]), keepdims=0)


def protected(b: _Builder, score: str, like: str, protect: int) -> str:
    """score [B, L] with +inf at the last `protect` positions (L from the input `like`, [B, L, ...])."""
    if protect <= 0:
        return score
    L = b.op("Gather", b.op("Shape", like), b.const(1, dims=[]), axis=0)
    pos = b.op("Range", b.const(0, dims=[]), L, b.const(1, dims=[]))
    tail = b.op("GreaterOrEqual", pos, b.op("Sub", L, b.const(protect, dims=[])))
    return b.op("Where", tail, b.const(float("inf"), TensorProto.FLOAT, []), score)


def max_contribution(b: _Builder, contrib: str, signed: bool) -> str:
    """[B, L, ...] -> [B, L]: the max over everything after L, of |·| unless signed."""
    if not signed:
        contrib = b.op("Abs", contrib)
    flat = b.op("Reshape", contrib, b.op("Concat", b.shape(contrib, 0, 2), b.const([-1]), axis=0))
    return b.reduce_last("ReduceMax", flat)


def selective_scan_function(opset: int) -> onnx.FunctionProto:
    """SelectiveScan(u, delta, A, B, C, D, z, delta_bias) -> (y, last_state), as `selective_scan_ref` computes it."""
    b = _Builder("ss_")
    u, dt, Bm, Cm, z = (b.op("Cast", x, to=TensorProto.FLOAT) for x in ("u", "delta", "B", "C", "z"))
    y, h_last = _emit_scan(b, u, _softplus(b, b.op("Add", dt, "delta_bias")), Bm, Cm, z)
    b.op("CastLike", y, "u", outputs=["y"])
    b.op("Identity", h_last, outputs=["last_state"])
    return helper.make_function(
        DOMAIN, "SelectiveScan", ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"], ["y", "last_state"],
        b.nodes, [helper.make_opsetid("", opset)],
    )


def impact_score_function(opset: int, criterion: str, signed: bool, raw_delta: bool = False) -> onnx.FunctionProto:
    """ImpactScore(u, delta, A, B, C[, delta_bias]) -> score [B, L], as `impact_score_ref` computes `criterion`.

    raw_delta: the body of the 6-input form, whose delta is raw (softplus(delta + delta_bias) is formed here)."""
    b = _Builder("is_")
    u, Bm, Cm = (b.op("Cast", x, to=TensorProto.FLOAT) for x in ("u", "B", "C"))
    delta = _softplus(b, b.op("Add", "delta", "delta_bias")) if raw_delta else "delta"
    b.op("Identity", _emit_score(b, u, delta, Bm, Cm, criterion, signed), outputs=["score"])
    inputs = ["u", "delta", "A", "B", "C"] + (["delta_bias"] if raw_delta else [])
    return helper.make_function(
        DOMAIN, "ImpactScore", inputs, ["score"], b.nodes,
        [helper.make_opsetid("", opset)], attributes=["criterion", "signed"],
    )


def selective_scan_score_function(opset: int, criterion: str, signed: bool, protect: int) -> onnx.FunctionProto:
    """SelectiveScanScore(u, delta, A, B, C, D, z, delta_bias) -> (y, last_state, score): the two bodies above on
    one softplus, score +inf at the last `protect` positions."""
    b = _Builder("sss_")
    u, dt, Bm, Cm, z = (b.op("Cast", x, to=TensorProto.FLOAT) for x in ("u", "delta", "B", "C", "z"))
    dl = _softplus(b, b.op("Add", dt, "delta_bias"))
    y, h_last = _emit_scan(b, u, dl, Bm, Cm, z)
    score = protected(b, _emit_score(b, u, dl, Bm, Cm, criterion, signed), "u", protect)
    b.op("CastLike", y, "u", outputs=["y"])
    b.op("Identity", h_last, outputs=["last_state"])
    b.op("Identity", score, outputs=["score"])
    return helper.make_function(
        DOMAIN, "SelectiveScanScore", ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"],
        ["y", "last_state", "score"], b.nodes, [helper.make_opsetid("", opset)],
        attributes=["criterion", "signed", "protect"],
    )


def causal_conv1d_function(opset: int, kernel_size: int, silu: bool) -> onnx.FunctionProto:
    """CausalConv1d(x, weight, bias) -> u, as `causal_conv1d_ref` computes it, in x's layout [B, L, D]: the sum of K
    shifted copies of x (zero-padded at the front) times the weight's columns, plus the bias."""
    b = _Builder("cc_")
    K = int(kernel_size)
    xp = b.op("Pad", b.op("Cast", "x", to=TensorProto.FLOAT), b.const([0, K - 1, 0, 0, 0, 0]))
    L = b.op("Shape", "x", start=1, end=2)
    acc = "bias"
    for k in range(K):
        shifted = b.op("Slice", xp, b.const([k]), b.op("Add", L, b.const([k])), b.const([1]))
        acc = b.op("Add", acc, b.op("Mul", shifted, b.op("Gather", "weight", b.const(k, dims=[]), axis=1)))
    if silu:
        acc = b.op("Mul", acc, b.op("Sigmoid", acc))
    b.op("CastLike", acc, "x", outputs=["u"])
    return helper.make_function(DOMAIN, "CausalConv1d", ["x", "weight", "bias"], ["u"], b.nodes,
                                [helper.make_opsetid("", opset)], attributes=["kernel_size", "silu"])


def select_kept_function(opset: int, protect: int) -> onnx.FunctionProto:
    """SelectKept(score, k) -> slots [B, k]: the top k of the score with the last `protect` positions +inf (TopK keeps
    the lower position of a tie), their positions put in order by a second TopK (smallest first). Differs from the
    kernels only where a real score is +inf or NaN (the kernels rank protected positions above +inf, NaN as -inf)."""
    b = _Builder("sk_")
    key = protected(b, "score", "score", protect)
    _, top = b.op("TopK", key, "k", outputs=2, axis=-1, largest=1, sorted=1)
    b.op("TopK", top, "k", outputs=["slots", b.fresh("order")], axis=-1, largest=0, sorted=1)
    return helper.make_function(DOMAIN, "SelectKept", ["score", "k"], ["slots"], b.nodes,
                                [helper.make_opsetid("", opset)], attributes=["protect"])


def node_attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, strings decoded."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}


def score_settings(attrs: dict) -> tuple:
    """(criterion, signed, protect) of a scan+score node."""
    return attrs.get("criterion", "last"), bool(attrs.get("signed", 0)), int(attrs.get("protect", 0))


# op type -> (the body's builder, the node's settings it is built for: what a function cannot switch on).
# ImpactScore's settings include whether the node gives the optional delta_bias (raw delta).
_BODIES = {
    "SelectiveScan": (selective_scan_function, lambda node, attrs: ()),
    "ImpactScore": (impact_score_function, lambda node, attrs: (
        *score_settings(attrs)[:2], len(node.input) > 5 and node.input[5] != "")),
    "SelectiveScanScore": (selective_scan_score_function, lambda node, attrs: score_settings(attrs)),
    "CausalConv1d": (causal_conv1d_function, lambda node, attrs: (
        int(attrs["kernel_size"]), bool(attrs.get("silu", 1)))),
    "SelectKept": (select_kept_function, lambda node, attrs: (int(attrs.get("protect", 0)),)),
}


def attach_reference_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add (in place) a reference FunctionProto for every `simba` op the graph uses; returns the model.

    Call it last: any later inliner or optimiser pass would replace the custom nodes by the bodies.
    """
    from .functions_ssd import SSD_BODIES  # it builds on this module's helpers

    bodies = {**_BODIES, **SSD_BODIES}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise ValueError(f"the reference bodies need opset >= {MIN_OPSET}, the model imports {opset}")
    used = [n for n in model.graph.node if n.domain == DOMAIN]
    kinds = {n.op_type for n in used}
    unknown = kinds - set(bodies)
    if unknown:
        raise ValueError(f"no reference body for simba ops {sorted(unknown)}")
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    for kind, (make, settings) in bodies.items():
        if kind not in kinds:
            continue
        variants = {settings(n, node_attributes(n)) for n in used if n.op_type == kind}
        if len(variants) != 1:
            raise ValueError(f"{kind} nodes use several attribute/input settings (one reference body serves all "
                             f"of a model's nodes): {sorted(variants)}")
        model.functions.append(make(opset, *variants.pop()))
    if used and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, VERSION))
    return model
