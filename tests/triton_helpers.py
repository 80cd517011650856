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
