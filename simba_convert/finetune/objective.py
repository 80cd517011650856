"""The distillation loss and the validation metrics, both at the protected positions.

Logits of the student (pruned) and teacher (dense) are compared at the last P positions, which the
pruned model always keeps (SIMBA.md §4): both run their head there only ([B, P, V], `num_last=P`),
and log-softmax runs in fp32.
KL(dense ‖ sparse) = Σ_v p_dense(v) · (log p_dense(v) − log p_sparse(v)), averaged over B·P tokens.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch


def amp_context(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled, else nothing (fp32)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def protected_logp(logits: torch.Tensor, P: int) -> torch.Tensor:
    """logits [B, T, V] (T >= P) -> fp32 log-probabilities of the last P positions [B, P, V]."""
    return torch.log_softmax(logits[:, -P:].float(), dim=-1)


def distill_loss(student_logits: torch.Tensor, teacher_logp: torch.Tensor, targets: torch.Tensor,
                 lm_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, kl): mean KL(teacher ‖ student) per protected token + lm_weight · mean NLL of targets [B, P]."""
    P = targets.shape[1]
    s = protected_logp(student_logits, P)
    kl = (teacher_logp.exp() * (teacher_logp - s)).sum(-1).mean()
    if lm_weight == 0:
        return kl, kl.detach()
    nll = -s.gather(-1, targets[:, :, None]).mean()
    return kl + lm_weight * nll, kl.detach()


@torch.no_grad()
def evaluate(model, teacher, windows: torch.Tensor, P: int, *, batch_size: int, amp: bool) -> dict:
    """KL and perplexities at the protected positions of `windows` [W, L+1] (teacher recomputed per batch).

    Returns {"kl", "nll", "ppl" (the sparse student), "dense_nll", "dense_ppl" (the teacher)}; sums
    are taken in fp64 in window order.
    """
    dev = model.device
    kl = nll = dense_nll = 0.0
    n = 0
    for batch in windows.split(batch_size):
        batch = batch.to(dev)
        inputs, targets = batch[:, :-1], batch[:, -P:, None]
        with amp_context(dev, amp):
            t = protected_logp(teacher(inputs, num_last=P), P)
            s = protected_logp(model(inputs, num_last=P), P)
        kl += float((t.exp() * (t - s)).sum(-1).double().sum())
        nll -= float(s.gather(-1, targets).double().sum())
        dense_nll -= float(t.gather(-1, targets).double().sum())
        n += targets.numel()
    kl, nll, dense_nll = kl / n, nll / n, dense_nll / n
    return {"kl": kl, "nll": nll, "ppl": _exp(nll), "dense_nll": dense_nll, "dense_ppl": _exp(dense_nll)}


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
