"""Torch helpers shared by several ops' references (leaf: imports torch only).

Shapes: delta [..., D] (Mamba-1: [B, L, D] or [B, D]; Mamba-2: dt [..., H], one step size per head).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """Run a loop of small CPU ops on one thread.

    Each step's tensors are a few hundred kB: splitting them over threads costs more in synchronisation
    than it saves, and on a busy machine far more (measured 0.38 s on one thread against 12.6 s on two
    for B=8, L=512, D=512, N=16 with other jobs running). The setting is process-wide, so it is restored.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def step_size(delta, delta_bias=None, delta_softplus: bool = False) -> torch.Tensor:
    """delta [..., D] in fp32 with its bias [D] and softplus applied, as the scans (and the impact scores) use it:
    softplus(delta + delta_bias) or delta + delta_bias."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    return F.softplus(delta) if delta_softplus else delta
