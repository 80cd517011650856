"""Fine-tuning data: every disjoint window of a token stream, a deterministic train/valid split, and
an endless, seeded stream of micro-batches.

Windows are [W, L+1] int64: L inputs and, in the last column, the target of the last position.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch

from ..errors import DataError


def all_windows(ids, seq_len: int) -> torch.Tensor:
    """Token ids [n] -> every disjoint window [n // (seq_len+1), seq_len+1], in text order."""
    if seq_len < 2:
        raise DataError(f"fine-tuning windows need seq_len >= 2, got {seq_len}")
    t = torch.as_tensor(ids, dtype=torch.long).flatten()
    w = t.numel() // (seq_len + 1)
    if w < 2:
        raise DataError(
            f"the fine-tuning text has {t.numel()} tokens: fewer than two windows of seq_len+1 = {seq_len + 1} "
            "(one to train on, one to validate); give more calibration text or a shorter seq_len",
            option=("calib", "seq_len"))
    return t[: w * (seq_len + 1)].view(w, seq_len + 1)


def _unit_hash(seed: int, i: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, i), the same on every platform and Python version."""
    h = hashlib.sha256(f"simba-finetune:{seed}:{i}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_windows(windows: torch.Tensor, valid_fraction: float = 0.1, seed: int = 0,
                  max_valid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train [Wt, L+1], valid [Wv, L+1]): window i is held out when hash(seed, i) < valid_fraction.

    Deciding by index hash rather than by position keeps the held-out windows spread over the whole text,
    and adding text at the end never moves an earlier window between the two sets. Both sets are made
    non-empty; `max_valid` keeps the held-out windows with the smallest hashes.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    W = windows.shape[0]
    if W < 2:
        raise DataError(f"need at least two windows to split into train and valid, got {W}")
    h = torch.tensor([_unit_hash(seed, i) for i in range(W)], dtype=torch.float64)
    order = torch.argsort(h)  # ascending hash: the first ones are the most "valid"
    n_valid = int((h < valid_fraction).sum())
    n_valid = min(max(n_valid, 1), W - 1)
    if max_valid is not None:
        n_valid = min(n_valid, max_valid)
    is_valid = torch.zeros(W, dtype=torch.bool)
    is_valid[order[:n_valid]] = True
    return windows[~is_valid], windows[is_valid]


def micro_batches(train: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless micro-batches [b, L+1] of `train`: a fresh seeded permutation per epoch, read in order.

    A batch may straddle two epochs, so every batch has exactly min(batch_size, Wt) windows.
    """
    W = train.shape[0]
    b = min(batch_size, W)
    g = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while pending.numel() < b:
            pending = torch.cat([pending, torch.randperm(W, generator=g)])
        idx, pending = pending[:b], pending[b:]
        yield train[idx]
