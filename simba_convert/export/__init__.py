"""ONNX export of the sparsified prefill (custom `simba` ops with portable reference functions).

`export_onnx(model, path, protect=...)` writes the prefill file and its decoding step (`<stem>_step.onnx`) and
returns a JSON-serialisable report; `run_onnx(path, input_ids)` runs the prefill in onnxruntime, with
libsimba_ort_ops (kernels/) when it is found; `generate_onnx(path, input_ids, n)` decodes greedily with both.
Both import onnx/onnxscript/onnxruntime lazily (the `onnx` extra) and raise MissingExtraError without them.
"""

from __future__ import annotations

from .exporter import export_onnx
from .runtime import generate_onnx, run_onnx

__all__ = ["export_onnx", "generate_onnx", "run_onnx"]
