"""Loading a Triton kernel module for tests: compiled on CUDA, interpreted on the CPU."""

from __future__ import annotations

import importlib

import pytest
import torch


def kernel_module(name: str):
    """Import the kernel module `name`; on the CPU fail loudly unless Triton runs under its interpreter
    (conftest.py sets TRITON_INTERPRET=1 before anything imports triton)."""
    if torch.cuda.is_available():
        return importlib.import_module(name)
    triton = pytest.importorskip("triton")
    if type(triton.language.standard._sum_combine).__name__ != "InterpretedFunction":
        pytest.fail(f"triton was imported without TRITON_INTERPRET=1; run: TRITON_INTERPRET=1 pytest (module {name})")
    return importlib.import_module(name)


class NoLaunch:
    """Stands in for a `@triton.jit` kernel: `kernel[grid](...)` launches nothing, so the buffers the kernel
    should have written keep what they were allocated with. Counts the launches it swallowed."""

    def __init__(self):
        self.launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1

        return launch


def no_launch(monkeypatch, module, *names: str, stub: NoLaunch | None = None) -> NoLaunch:
    """Replace the kernels `names` of `module` with one `NoLaunch` (`stub`, or a new one); undone after the test."""
    stub = stub or NoLaunch()
    for name in names:
        assert hasattr(module, name), f"{module.__name__} has no kernel {name}"
        monkeypatch.setattr(module, name, stub)
    return stub
