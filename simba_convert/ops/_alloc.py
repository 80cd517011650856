"""The one allocator of buffers a Triton kernel writes (outputs and intermediates).

Kernels call `_alloc.empty` through the module, so tests/conftest.py can swap in NaN-filled buffers (integer
ones: the dtype's minimum) and any element a kernel leaves unwritten fails the comparison with the reference.
"""

from __future__ import annotations

import torch


def empty(*shape: int, device, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(*shape, device=device, dtype=dtype)
