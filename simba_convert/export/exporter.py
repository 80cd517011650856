"""`export_onnx`: the sparsified (or dense) prefill of a model as one ONNX file, and its decoding step beside it.

The prefill file has input `input_ids [batch, seq]` (int64, both dims dynamic) and outputs
  logits      [batch, n_protect, vocab]   for the last n_protect = min(max(1, P), seq) positions,
  kept_mask   [n_layer, batch, seq]       (bool) True where layer l processed original position t,
  conv_states [n_layer, batch, C, K-1]    each layer's conv window after its own (compacted) sequence,
  ssm_states  [n_layer, batch, ...]       (fp32) each layer's SSM state, as `PrunedMambaLM.prefill` returns them.
State shapes per architecture: Mamba-1 conv [D, K-1], ssm [D, N]; Mamba-2 conv [D + 2GN, K-1], ssm [H, P, N].
The step file (`<stem>_step.onnx`) takes `token [batch]`, `conv_states`, `ssm_states` and returns
`logits [batch, vocab]`, `next_conv_states`, `next_ssm_states`: the dense LM's `step` (dense decoding, SIMBA.md §8).
The conv, the scan and the impact scores are `simba` custom nodes, each with a model-local reference
function, so stock onnxruntime runs the file; with libsimba_ort_ops registered the C++ kernels run.
The step graph is standard ONNX only.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from ..errors import ConfigError, require

log = logging.getLogger("simba_convert.export")

DEFAULT_OPSET = 18
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GiB limit, with room for the graph itself
_DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "float16": "float16", "fp16": "float16", "half": "float16"}


def _export_dtype(model_dtype, dtype):
    """torch dtype of the exported file: `dtype` if given, else the model's (float32 for a bf16 model)."""
    import torch

    if dtype is None:
        name = str(model_dtype).replace("torch.", "")
        if name not in _DTYPES:
            log.info("ONNX export: the model is %s; exporting float32 (pass dtype='float16' for half)", name)
            name = "float32"
    else:
        name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        why = (": onnxruntime's CPU execution provider has no bfloat16 kernels for MatMul, Add, Exp, Sigmoid or "
               "ReduceMean (verified with 1.32)" if "bfloat16" in name else "")
        raise ConfigError(f"ONNX export supports float32 and float16, not {name}{why}; pass dtype='float32' or "
                          f"'float16'")
    return getattr(torch, _DTYPES[name])


def _prefill_graph(model, protect, dtype):
    """The PrefillGraph for a PrunedMambaLM or a dense LM (MambaLM, Mamba2LM), traced on the CPU (a copy of the
    weights when the model lives elsewhere or the dtype changes). The graph records no device, and CUDA's fake
    conv1d guards on 32-bit indexing of the data-dependent pruned length, which torch.export cannot decide."""
    from .graph import PrefillGraph

    if getattr(model, "is_pruned", False):
        dense, spec = model.dense, model.spec
        ratios, criterion, signed = spec.keep_ratios, spec.criterion, spec.signed
        P = spec.protect if protect is None else int(protect)
    else:
        dense, ratios, criterion, signed = model, (1.0,) * model.config.n_layer, "last", False
        P = 1 if protect is None else int(protect)
    if dense.dtype != dtype or dense.device.type != "cpu":
        dense = copy.deepcopy(dense).to(device="cpu", dtype=dtype)
    return PrefillGraph(dense, ratios, criterion=criterion, signed=signed, protect=P).eval()


def _dynamic_dims():
    import torch

    dyn = getattr(torch.export.Dim, "DYNAMIC", None)
    # Named Dims turn export-time guards (e.g. seq >= P from slicing the suffix) into errors; DYNAMIC
    # only records them. The ONNX ops (Slice clamps) stay valid for every length either way.
    return (dyn, dyn) if dyn is not None else (torch.export.Dim("batch"), torch.export.Dim("seq"))


def _name_dims(model, first=("batch", "seq")) -> None:
    """Readable symbolic dims on the graph inputs/outputs: batch, seq, n_protect (the exporter's are s0, u2, ...)."""
    names = {}
    for d, new in zip(model.graph.input[0].type.tensor_type.shape.dim, first):
        if d.dim_param:
            names[d.dim_param] = new
            d.dim_param = new
    for vi in list(model.graph.output) + list(model.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = names[d.dim_param]
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if out.name == "logits" and len(dims) == 3 and not dims[1].dim_value:
            dims[1].dim_param = "n_protect"


def step_path(path) -> Path:
    """Where the decoding-step graph of the prefill file `path` goes: `<stem>_step.onnx` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}_step{path.suffix or '.onnx'}")


def _save(prog, path: Path, *, external: bool, section, check: bool, first_dims, functions: bool):
    """Write an exported program to `path` atomically (data file first); returns the final ModelProto (no weights)."""
    import onnx

    from .functions import attach_reference_functions

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = tmp / path.name
        prog.save(str(staged), external_data=external)
        proto = onnx.load(str(staged), load_external_data=False)
        if functions:  # after every exporter/optimiser pass: they would inline the functions (ONNX.md pitfall 1)
            attach_reference_functions(proto)
        _name_dims(proto, first_dims)
        if section is not None:
            from ..format import SECTION, to_json

            entry = proto.metadata_props.add()
            entry.key, entry.value = SECTION, to_json(section)
        onnx.save(proto, str(staged))
        if check:
            onnx.checker.check_model(str(staged), full_check=True)
        for f in sorted(tmp.iterdir(), key=lambda p: p == staged):  # the .onnx last: it names its data file
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return proto


def _export_step(graph, path: Path, *, opset: int, external: bool, section, check: bool):
    """The decoding step of `graph.dense` (StepGraph) at `path`; returns its ModelProto."""
    import torch

    from .graph import StepGraph

    cfg = graph.dense.config
    step = StepGraph(graph.dense).eval()
    conv, ssm = step.arch.state_shapes(cfg)
    bsz, dt = 2, graph.dense.dtype
    example = (torch.zeros(bsz, dtype=torch.long),
               torch.zeros(cfg.n_layer, bsz, *conv, dtype=dt),
               torch.zeros(cfg.n_layer, bsz, *ssm, dtype=torch.float32))
    batch = torch.export.Dim("batch")
    with torch.no_grad(), warnings.catch_warnings():
        # one Dim shared by the three inputs: the exporter notes that it names them once
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
        prog = torch.onnx.export(
            step, example, dynamo=True, opset_version=opset, verbose=False,
            input_names=list(STEP_INPUTS), output_names=list(STEP_OUTPUTS),
            dynamic_shapes={"token": {0: batch}, "conv_states": {1: batch}, "ssm_states": {1: batch}},
        )
    return _save(prog, path, external=external, section=section, check=check, first_dims=("batch",), functions=False)


PREFILL_OUTPUTS = ("logits", "kept_mask", "conv_states", "ssm_states")
STEP_INPUTS = ("token", "conv_states", "ssm_states")
STEP_OUTPUTS = ("logits", "next_conv_states", "next_ssm_states")


def export_onnx(model, path, *, protect=None, opset: int = DEFAULT_OPSET, dtype=None, check: bool = True,
                library=None, verify_seq: int | None = None, section=None, step: bool = True) -> dict:
    """Export `model` (PrunedMambaLM or a dense LM of any architecture) to `path`; returns a JSON-serialisable report.

    protect: the protected suffix P (default: the model's spec, or 1 for a dense model).
    dtype: float32 | float16 (default: the model's; float32 for bf16). check: run onnx.checker (full) and compare
    onnxruntime with PyTorch (`verify.verify_export`: several batch sizes and lengths, kept sets, decoding),
    without the library and (when found, or library=True) with it.
    library: None/"auto", True, False or a path to libsimba_ort_ops.so, for the verification run.
    verify_seq: one length to verify at instead of the default three.
    section: the checkpoint's `format.SimbaSection`, stored as JSON in the files' metadata under "simba" so that
    they carry their spec and provenance.
    step: also write the decoding-step graph beside it (`step_path(path)`; it carries its own copy of the weights).
    """
    require("onnx", "onnx")
    require("onnxscript", "onnx")
    import torch

    from .functions import MIN_OPSET
    from .onnx_ops import DOMAIN, translation_table

    if not MIN_OPSET <= opset <= 23:
        raise ConfigError(f"opset must be in [{MIN_OPSET}, 23], got {opset}")
    dt = _export_dtype(model.dtype, dtype)
    graph = _prefill_graph(model, protect, dt)
    cfg = graph.dense.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() * p.element_size() for p in graph.dense.parameters())
    external = n_params > EXTERNAL_DATA_BYTES
    P = graph.protect
    example = torch.randint(0, cfg.vocab_size, (2, P + 17), device=graph.dense.device)
    batch, seq = _dynamic_dims()

    t0 = time.perf_counter()
    with torch.no_grad():
        prog = torch.onnx.export(
            graph, (example,), dynamo=True, opset_version=opset, verbose=False,
            input_names=["input_ids"], output_names=list(PREFILL_OUTPUTS),
            dynamic_shapes={"input_ids": {0: batch, 1: seq}},
            custom_translation_table=translation_table(),
        )
    proto = _save(prog, path, external=external, section=section, check=check, first_dims=("batch", "seq"),
                  functions=True)
    spath = step_path(path) if step else None
    if step:
        _export_step(graph, spath, opset=opset, external=external, section=section, check=check)
    seconds = time.perf_counter() - t0

    counts = {}
    for n in proto.graph.node:
        if n.domain == DOMAIN:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    V = cfg.padded_vocab_size
    conv, ssm = ([cfg.n_layer, "batch", *dims] for dims in graph.arch.state_shapes(cfg))
    report = {
        "path": str(path),
        "opset": opset,
        "ir_version": proto.ir_version,
        "dtype": str(dt).replace("torch.", ""),
        "dense": all(r == 1.0 for r in graph.ratios),
        "keep_ratios": list(graph.ratios),
        "criterion": graph.criterion,
        "protect": P,
        "inputs": {"input_ids": ["batch", "seq"]},
        "outputs": {"logits": ["batch", "n_protect", V], "kept_mask": [cfg.n_layer, "batch", "seq"],
                    "conv_states": conv, "ssm_states": ssm},
        "custom_nodes": counts,
        "functions": [f"{f.domain}.{f.name}" for f in proto.functions],
        "step": None if not step else {
            "path": str(spath),
            "inputs": {"token": ["batch"], "conv_states": conv, "ssm_states": ssm},
            "outputs": {"logits": ["batch", V], "next_conv_states": conv, "next_ssm_states": ssm},
            "size_bytes": sum(f.stat().st_size for f in spath.parent.glob(spath.name + "*")),
        },
        "external_data": external,
        "size_bytes": sum(f.stat().st_size for f in path.parent.glob(path.name + "*")),
        "export_seconds": round(seconds, 2),
        "checker": "passed" if check else "skipped",
    }
    if check:
        from .verify import verify_export

        report["verify"] = verify_export(model, path, dtype=dt, protect=P, library=library, seq=verify_seq,
                                         step=spath)
        report["passed"] = report["verify"]["passed"]
        if not report["passed"]:
            log.warning("ONNX export %s does not match PyTorch: %s", path, report["verify"])
    log.info("exported %s (%s, %d bytes, %.1f s)", path, report["dtype"], report["size_bytes"], seconds)
    return report
