"""Autoregressive decoding over any model with `prefill(ids) -> (logits [B, V], states)` and `step(token, states)`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

from ..errors import ShapeError


def _sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator | None):
    logits = logits.float() / max(temperature, 1e-6)
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | None = None,
    seed: int | None = None,
    cuda_graph: bool | None = None,
    stop: Callable[[torch.Tensor], torch.Tensor | bool] | None = None,
) -> torch.Tensor:
    """Greedy (default) or sampled decoding; input_ids [B, L] -> [B, L + new] (stops early when all hit eos).

    stop: called after each new token with the tokens generated so far [B, new]; returns which rows are done
    (a bool tensor [B], or one bool for all). Decoding ends when every row is done, by eos or by `stop`; after
    that a row's tokens are eos_token_id when one is given (lm-eval's stop strings: `evaluate.lm_eval_adapter`).

    cuda_graph (default: when the model is on CUDA and its dense LM does not set `graphed_step = False`) replays
    the decoding step as a CUDA graph captured once per batch size and kept on the model (`cuda_graph.GraphedStep`),
    and the prefill as a CUDA graph once a prompt shape [B, L] comes back (`cuda_graph.GraphedPrefill`; the first
    prompt of a shape runs eager, so one-off lengths never pay a capture; the `PREFILL_GRAPHS` most recent shapes
    are kept). The tokens are the same either way.
    """
    if max_new_tokens < 0:
        raise ShapeError("max_new_tokens must be >= 0")
    gen = None
    if do_sample and seed is not None:
        gen = torch.Generator(device=input_ids.device).manual_seed(seed)
    out = input_ids
    if max_new_tokens == 0:
        return out
    if cuda_graph is None:
        cuda_graph = model.device.type == "cuda" and getattr(getattr(model, "dense", model), "graphed_step", True)
    logits, states = _prefill(model, input_ids) if cuda_graph else model.prefill(input_ids)
    stepper = _graphed_step(model, states) if cuda_graph else None
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for i in range(max_new_tokens):
        nxt = _sample(logits, temperature, top_k, top_p, gen) if do_sample else logits.argmax(-1)
        if eos_token_id is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos_token_id), nxt)
            finished |= nxt == eos_token_id
        out = torch.cat([out, nxt[:, None]], dim=1)
        if stop is not None:
            finished |= torch.as_tensor(stop(out[:, input_ids.shape[1]:]), dtype=torch.bool, device=finished.device)
        if i == max_new_tokens - 1 or ((eos_token_id is not None or stop is not None) and bool(finished.all())):
            break
        if stepper is not None:
            logits = stepper(nxt)
        else:
            logits, states = model.step(nxt, states)
    return out


PREFILL_GRAPHS = 4  # captured prompt shapes kept per model; each holds its activations' memory


def _backend_key(model):
    layers = getattr(model, "dense", model).backbone.layers
    # a graph replays the kernels (and the pruning spec) it captured
    return model.dtype, layers[0].mixer.backend, id(getattr(model, "spec", None))


def _prefill(model, input_ids):
    """The prefill, replayed from a CUDA graph when this prompt shape was seen before (captured on its second use)."""
    from .cuda_graph import GraphedPrefill

    spec = getattr(model, "spec", None)
    if spec is not None and spec.criterion == "random":
        return model.prefill(input_ids)
    graphs = model.__dict__.setdefault("_graphed_prefills", OrderedDict())
    seen = model.__dict__.setdefault("_prefill_shapes_seen", set())
    key = (tuple(input_ids.shape), *_backend_key(model))
    graph = graphs.get(key)
    if graph is None:
        if key not in seen:
            seen.add(key)
            return model.prefill(input_ids)
        graph = graphs[key] = GraphedPrefill(model, *input_ids.shape)
        while len(graphs) > PREFILL_GRAPHS:
            graphs.popitem(last=False)
    graphs.move_to_end(key)
    return graph(input_ids)


def _graphed_step(model, states):
    """The model's captured decoding step for this batch size, loaded with `states` (captured on first use)."""
    from .cuda_graph import GraphedStep

    cache = model.__dict__.setdefault("_graphed_steps", {})
    key = (states[0][0].shape[0], *_backend_key(model))
    stepper = cache.get(key)
    if stepper is None or not stepper.matches(states):
        stepper = cache[key] = GraphedStep(model, states)
    else:
        stepper.load(states)
    return stepper
