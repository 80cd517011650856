"""Perplexity of the protected suffix: the protocol under which a pruned model is exact.

The text is tokenized once into ids t_0 .. t_{n-1} and cut into disjoint windows of L+1 tokens:
window k is t_{k(L+1)} .. t_{k(L+1)+L}. The model reads the first L tokens of a window ([W, L] input);
the logits at the last P input positions L-P .. L-1 predict window tokens L-P+1 .. L, and only those
P tokens are scored (a pruned model keeps exactly those positions, SIMBA.md §4). `windows=N` takes
the first N windows of the text, in order (fewer if the text has fewer; the result says how many).

    perplexity = exp(mean NLL over the W·P scored tokens)

Log-softmax runs in fp32 on the scored logits; per-token NLLs are summed in fp64 in window order, so
the result does not depend on the batch size beyond what the model's own arithmetic does.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, DataError
from ._common import check_positive, encoder, eval_mode, last_logits, progress_bar, resolve_device


def split_windows(ids: list[int] | torch.Tensor, seq_len: int, windows: int | None = None) -> torch.Tensor:
    """Token ids [n] -> disjoint windows [W, seq_len + 1] (the first `windows` of them, or all)."""
    check_positive("seq_len", seq_len)
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    available = ids.numel() // (seq_len + 1)
    if available == 0:
        raise DataError(
            f"text too short: {ids.numel()} tokens, one window needs seq_len + 1 = {seq_len + 1}"
        )
    w = available if windows is None else min(check_positive("windows", windows), available)
    return ids[: w * (seq_len + 1)].view(w, seq_len + 1)


@torch.no_grad()
def perplexity_from_ids(
    model,
    ids: list[int] | torch.Tensor,
    *,
    seq_len: int,
    protect: int,
    windows: int | None = None,
    batch_size: int = 8,
    device=None,
    progress: bool | None = None,
) -> dict:
    """Perplexity of `model` over token ids (see the module docstring for the windows and scored positions).

    Returns {"perplexity", "nll" (mean, nats), "tokens_scored" (= windows·protect), "windows",
    "windows_available", "seq_len", "protect"}.
    """
    check_positive("seq_len", seq_len)
    check_positive("protect", protect)
    check_positive("batch_size", batch_size)
    if protect > seq_len:
        raise ConfigError(f"protect ({protect}) must not exceed seq_len ({seq_len})")
    total_windows = torch.as_tensor(ids).numel() // (seq_len + 1)
    chunks = split_windows(ids, seq_len, windows)
    dev = resolve_device(model, device)
    W, P = chunks.shape[0], protect

    nll = torch.empty(W, P, dtype=torch.float64)
    with eval_mode(model), progress_bar(W, "perplexity", progress) as bar:
        for start in range(0, W, batch_size):
            batch = chunks[start : start + batch_size].to(dev)
            inputs, targets = batch[:, :-1], batch[:, -P:]  # [b, L], [b, P]
            mask = torch.ones_like(inputs)
            logits = last_logits(model, inputs, mask, protect, P)  # [b, P, V]
            logp = torch.log_softmax(logits.float(), dim=-1)
            tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [b, P]
            nll[start : start + batch.shape[0]] = -tok.double().cpu()
            bar.update(batch.shape[0])

    mean_nll = float(nll.sum() / nll.numel())
    return {
        "perplexity": math.exp(mean_nll) if mean_nll < 700 else float("inf"),
        "nll": mean_nll,
        "tokens_scored": W * P,
        "windows": W,
        "windows_available": total_windows,
        "seq_len": seq_len,
        "protect": P,
    }


def perplexity(
    model,
    tokenizer,
    text: str,
    *,
    seq_len: int,
    protect: int,
    windows: int | None = None,
    batch_size: int = 8,
    device=None,
    progress: bool | None = None,
) -> dict:
    """Perplexity of `model` on `text` (a string), tokenized once with `tokenizer`; see perplexity_from_ids."""
    if not text:
        raise DataError("text is empty")
    ids = encoder(tokenizer)(text)
    return perplexity_from_ids(
        model, ids, seq_len=seq_len, protect=protect, windows=windows,
        batch_size=batch_size, device=device, progress=progress,
    )
