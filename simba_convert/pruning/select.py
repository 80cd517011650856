"""Choosing and moving the tokens a pruned layer keeps (SIMBA.md §4): pure tensor functions.

Each sample's alive tokens are held compacted and right-padded: slot j of row b is one original position.
Slots stay in original order, so sorting chosen slot numbers restores that order.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError


def compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real positions of each sample packed to the left: pos [B, n] (L in padded slots), valid [B, n], lengths [B]."""
    bsz, L = mask.shape
    lengths = mask.sum(1)
    n = int(lengths.max()) if bsz else 0
    ar = torch.arange(L, device=mask.device).expand(bsz, L)
    key = torch.where(mask, ar, ar + L)  # real positions first, in order
    pos = key.sort(dim=1).values[:, :n]
    valid = torch.arange(n, device=mask.device)[None] < lengths[:, None]
    return torch.where(valid, pos, L), valid, lengths


def gather_slots(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, k, ...] at slots idx [B, k'] -> [B, k', ...] (small tensors: positions, flags)."""
    return torch.gather(x, 1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:]))


def gather_rows(slots: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each x [B, k, d] at slots [B, k'] -> [B, k', d], as one row copy over the flattened [B·k, d].

    A row index makes whole d-vectors move together (coalesced copies); an element-wise gather with an
    expanded index computes an offset per element and is several times slower on the GPU for the streams.
    """
    bsz, kk = slots.shape
    k = xs[0].shape[1]
    flat = slots if bsz == 1 else (slots + torch.arange(bsz, device=slots.device)[:, None] * k)
    flat = flat.reshape(-1)
    return tuple(x.reshape(bsz * k, *x.shape[2:]).index_select(0, flat).view(bsz, kk, *x.shape[2:]) for x in xs)


def select_kept(
    scores: torch.Tensor, valid: torch.Tensor, protected: torch.Tensor, k_next: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots to keep for the next layer, in original order: (slots [B, K], valid [B, K]) with K = max(k_next).

    k_next holds each sample's count on the host, so choosing costs no device-to-host synchronisation.
    Protected slots (the last `protect` real tokens, and always the last) win over any score; padded
    slots never win.
    """
    key = scores.float().masked_fill(protected, float("inf")).masked_fill_(~valid, float("-inf"))
    K = max(k_next)
    if min(k_next) == K:  # every sample keeps K: the order of the top K is not needed (same set as sorted=True)
        top = torch.topk(key, K, dim=1, sorted=False).indices
        return top.sort(dim=1).values, torch.ones_like(top, dtype=torch.bool)
    top = torch.topk(key, K, dim=1, sorted=True).indices  # best first
    keep = torch.arange(K, device=key.device)[None] < torch.tensor(k_next, device=key.device)[:, None]
    order_key = torch.where(keep, top, top.new_full(top.shape, key.shape[1]))
    slots = order_key.sort(dim=1).values  # original order (slots are in position order), padding last
    kept_valid = slots < key.shape[1]
    return torch.where(kept_valid, slots, 0), kept_valid


def select_kept_dense_rows(scores: torch.Tensor, n_protected: int, k_next: int, *, backend: str = "auto") -> torch.Tensor:
    """Slots [B, k_next] int64 in original order: the contract of `select_kept_dense_rows_ref`.

    `backend` is auto | triton | reference (ops.backend). `triton` runs `select_kept_dense_rows_triton`
    (one launch; the same kept set on scores without ties; ties at the threshold keep the lowest positions,
    NaN ranks as -inf; `scores` is not written); rows longer than its one-block limit run the reference under
    `auto`. Both paths require 0 <= n_protected <= k_next <= L: more protected slots than k_next leaves the
    kept set undefined.
    """
    from ..ops.backend import resolve

    check_dense_counts(scores.shape[-1], n_protected, k_next)
    if resolve("select_kept", backend, scores.device) == "triton":
        from . import select_triton

        if backend == "triton" or scores.shape[-1] <= select_triton.MAX_L:
            return select_triton.select_kept_dense_rows_triton(scores, n_protected, k_next)
    return select_kept_dense_rows_ref(scores, n_protected, k_next)


def check_dense_counts(L: int, n_protected: int, k_next: int) -> None:
    """Protected slots always win, so more of them than k_next leaves the kept set undefined."""
    if not 0 <= n_protected <= k_next <= L:
        raise ShapeError(f"select_kept_dense_rows: need 0 <= n_protected ({n_protected}) <= k_next ({k_next}) "
                         f"<= L ({L})")


def select_kept_dense_rows_ref(scores: torch.Tensor, n_protected: int, k_next: int) -> torch.Tensor:
    """`select_kept` for rows without padding that all keep k_next: slots [B, k_next], in original order.

    Without padding the protected tokens are exactly the last n_protected slots of every row (they are
    the last real tokens and are never dropped): they are given +inf in `scores` (overwritten in place;
    the model owns it) and the top k_next are taken. The same set as `select_kept`, with fewer launches.
    Ties at the threshold keep the lowest positions, as the Triton kernel and ONNX's TopK do (topk's rule is
    unspecified): Mamba-2's `delta` scores tie wherever a token repeats, its dt being a projection of the token
    alone, and the exported graph must keep the same tokens.
    """
    scores[:, scores.shape[1] - n_protected:] = float("inf")
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k_next]
    return top.sort(dim=1).values
