"""The brief fine-tune (SIMBA.md §7): distil the pruned model from its dense original, ratios fixed.

The student is the pruned model itself (its `.dense` weights are trained in place); the teacher is a
frozen deep copy of those weights taken before the first step. Gradients flow through the gathers of
the hidden and residual streams; which tokens are kept (top-k of the impact scores) is a discrete
choice, recomputed from the current weights at every step and never differentiated.
"""

from __future__ import annotations

import copy
import time

import torch

from ..errors import ConfigError, DataError
from . import params as trainable
from .config import FinetuneConfig, lr_factor
from .data import micro_batches
from .objective import amp_context, distill_loss, evaluate, protected_logp

MAX_CURVE_POINTS = 200


def frozen_teacher(dense):
    """A deep copy of `dense` that shares no storage with it, in eval mode, with no trainable parameters."""
    teacher = copy.deepcopy(dense).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _check(model, teacher, train: torch.Tensor, valid: torch.Tensor) -> None:
    for name, w in (("train", train), ("valid", valid)):
        if w.dim() != 2 or w.shape[0] < 1 or w.shape[1] < 3 or w.dtype != torch.long:
            raise DataError(f"{name} windows must be a non-empty int64 tensor [W, L+1] with L >= 2, got "
                            f"{tuple(w.shape)} {w.dtype}")
    if train.shape[1] != valid.shape[1]:
        raise DataError(f"train and valid windows differ in length ({train.shape[1]} vs {valid.shape[1]})")
    vocab = model.config.padded_vocab_size
    if int(train.max()) >= vocab or int(valid.max()) >= vocab or int(train.min()) < 0 or int(valid.min()) < 0:
        raise DataError(f"window token ids must lie in [0, {vocab})")
    student = {p.data_ptr() for p in model.dense.parameters()}
    if any(p.data_ptr() in student for p in teacher.parameters()):
        raise ConfigError("the teacher shares weights with the student; pass a deep copy (see frozen_teacher)")


def _thin(values: list[float]) -> tuple[list[int], list[float]]:
    """At most MAX_CURVE_POINTS (step, value) pairs, evenly spaced, the last step always included."""
    n = len(values)
    stride = max(1, -(-n // MAX_CURVE_POINTS))
    steps = list(range(stride - 1, n, stride))
    if steps and steps[-1] != n - 1:
        steps[-1] = n - 1
    return [s + 1 for s in steps], [values[s] for s in steps]


def _progress(total: int, enabled: bool):
    from ..pipeline.progress import bar

    return bar(None, "finetune", enabled, total=total)


def _train_step(model, teacher, opt, params, stream, cfg: FinetuneConfig, P: int, amp: bool) -> float:
    """One optimizer step over `grad_accum` micro-batches; returns the mean loss."""
    dev = model.device
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(cfg.grad_accum):
        batch = next(stream).to(dev)
        inputs, targets = batch[:, :-1], batch[:, -P:]
        with torch.no_grad(), amp_context(dev, amp):
            t_logp = protected_logp(teacher(inputs, num_last=P), P)
        with amp_context(dev, amp):
            logits = model(inputs, num_last=P)  # the head runs on the P scored positions only
        loss, _ = distill_loss(logits, t_logp, targets, cfg.lm_weight)
        (loss / cfg.grad_accum).backward()
        total += float(loss.detach()) / cfg.grad_accum
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    return total


def finetune(model, train_windows: torch.Tensor, valid_windows: torch.Tensor, cfg: FinetuneConfig, *,
             teacher=None) -> dict:
    """Distil `model` (a PrunedMambaLM, trained in place) on windows [W, L+1]; returns the report.

    The report holds: steps done, the per-step loss curve (≤ 200 points), validation KL and perplexity
    at the protected positions before and after (and at every evaluation), early-stop information,
    trainable parameter count, wall time and training tokens per second.
    """
    t_start = time.perf_counter()
    if not getattr(model, "is_pruned", False):
        raise ConfigError("finetune needs a pruned model (PrunedMambaLM); wrap the dense model with a PruningSpec")
    teacher = frozen_teacher(model.dense) if teacher is None else teacher.eval()
    _check(model, teacher, train_windows, valid_windows)
    if cfg.max_valid_windows is not None:
        valid_windows = valid_windows[: cfg.max_valid_windows]
    dev = model.device
    L = train_windows.shape[1] - 1
    P = min(max(1, model.spec.protect), L)
    amp = (cfg.autocast and dev.type == "cuda") or trainable.low_precision(model.dense)

    def validate():
        return evaluate(model, teacher, valid_windows, P, batch_size=cfg.batch_size, amp=amp)

    losses, evals = [], []
    stop = {"stopped_early": False, "reason": None, "best_step": 0, "best_valid_kl": None}
    train_s = eval_s = 0.0
    with trainable.training_state(model, cfg) as params:
        n_train = trainable.count(params)
        t0 = time.perf_counter()
        before = validate()
        eval_s += time.perf_counter() - t0
        evals.append({"step": 0, **before})
        best_kl, best_step, stale = before["kl"], 0, 0
        best_weights = [p.detach().to("cpu", copy=True) for p in params] if cfg.restore_best else None
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay) if params else None
        stream = micro_batches(train_windows, cfg.batch_size, cfg.seed)
        step = 0
        with _progress(cfg.steps, cfg.progress) as bar:
            while step < cfg.steps and opt is not None:
                t0 = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
                step_loss = _train_step(model, teacher, opt, params, stream, cfg, P, amp)
                step += 1
                losses.append(step_loss)
                train_s += time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix_str(f"loss {step_loss:.4f}")
                if not torch.isfinite(torch.tensor(step_loss)):
                    stop.update(stopped_early=True, reason="non-finite loss")
                    break
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    t0 = time.perf_counter()
                    ev = validate()
                    eval_s += time.perf_counter() - t0
                    evals.append({"step": step, **ev})
                    if ev["kl"] < best_kl - cfg.min_delta:
                        best_kl, best_step, stale = ev["kl"], step, 0
                        if best_weights is not None:
                            best_weights = [p.detach().to("cpu", copy=True) for p in params]
                    else:
                        stale += 1
                        if cfg.patience and stale >= cfg.patience and step < cfg.steps:
                            stop.update(stopped_early=True, reason=f"no validation improvement in {stale} evaluations")
                            break
        # with restore_best, the weights of the best evaluation win (and a diverged run is rolled back)
        restored = best_weights is not None and (
            best_step != evals[-1]["step"] or stop["reason"] == "non-finite loss")
        if restored:
            with torch.no_grad():
                for p, w in zip(params, best_weights):
                    p.copy_(w.to(p.device))
    stop.update(best_step=best_step, best_valid_kl=best_kl, restored_best=restored)
    t0 = time.perf_counter()
    after = validate()  # the final weights, in their storage dtype, LoRA merged: what gets saved
    eval_s += time.perf_counter() - t0
    loss_steps, loss_values = _thin(losses)
    tokens = step * cfg.grad_accum * min(cfg.batch_size, train_windows.shape[0]) * L
    return {
        "version": cfg.version,
        "config": cfg.to_dict(),
        "steps": step,
        "steps_requested": cfg.steps,
        "trainable": cfg.trainable,
        "trainable_params": n_train,
        "total_params": sum(p.numel() for p in model.dense.parameters()),
        "seq_len": L,
        "protect": P,
        "train_windows": int(train_windows.shape[0]),
        "valid_windows": int(valid_windows.shape[0]),
        "autocast_bf16": amp,
        "loss_steps": loss_steps,
        "losses": loss_values,
        "evals": evals,
        "before": before,
        "after": after,
        "early_stop": stop,
        "wall_s": time.perf_counter() - t_start,
        "train_s": train_s,
        "eval_s": eval_s,
        "s_per_step": train_s / step if step else None,
        "tokens_per_s": tokens / train_s if train_s > 0 else None,
    }
