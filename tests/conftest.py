import os
import sys

import pytest
import torch

# Triton chooses interpreter or compiler when @triton.jit decorates a function, its own library included, so
# without CUDA the interpreter must be switched on before anything imports triton (CONTRIBUTING.md: Triton
# kernels are tested on the CPU under TRITON_INTERPRET=1).
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with the device tool)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(int(os.environ.get("SIMBA_TEST_SEED", "0")))


@pytest.fixture(autouse=True)
def _poison_kernel_buffers(monkeypatch):
    """Every buffer a Triton kernel writes comes from `simba_convert.ops._alloc.empty`: here it starts as NaN
    (integers: the dtype's minimum), so an element a kernel leaves unwritten cannot pass as a stale result.
    Only allocation changes, so this costs nothing where no kernel runs."""
    from simba_convert.ops import _alloc
    from tolerance import poisoned_empty

    monkeypatch.setattr(_alloc, "empty", poisoned_empty)
