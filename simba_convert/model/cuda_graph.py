"""A prefill captured once as a CUDA graph and replayed: no per-kernel launch cost on the host.

A pruned forward launches about twice the kernels of a dense one, many of them small (selection, gathers),
so at small batch sizes the host, not the GPU, sets its pace. Without an attention mask every count of a
pruned forward is known on the host before it starts (no device-to-host synchronisation), which is what
makes it capturable: the graph holds one shape [B, L] and one `num_last`.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, ShapeError


class _GraphedIds:
    """`fn(input_ids)` for input_ids [B, L] on CUDA, captured once and replayed per call; its output (a tensor or
    nested tuples/lists of tensors) lives in the graph's static buffers and is overwritten by the next call."""

    def __init__(self, model, batch: int, seq_len: int, fn, *, warmup: int = 2):
        if model.device.type != "cuda" or not torch.cuda.is_available():
            raise ConfigError(f"a CUDA graph needs the model on a CUDA device; this one is on {model.device}")
        spec = getattr(model, "spec", None)
        if spec is not None and spec.criterion == "random":
            raise ConfigError("criterion 'random' cannot be captured in a CUDA graph (its generator state would freeze)")
        if batch < 1 or seq_len < 1:
            raise ConfigError(f"batch and seq_len must be positive, got {batch} and {seq_len}")
        self.model = model
        self.shape = (batch, seq_len)
        self._ids = torch.zeros(self.shape, dtype=torch.long, device=model.device)
        side = torch.cuda.Stream(device=model.device)
        side.wait_stream(torch.cuda.current_stream(model.device))
        with torch.no_grad(), torch.cuda.stream(side):  # compiles kernels and fills the allocator outside capture
            for _ in range(max(1, warmup)):
                fn(self._ids)
        torch.cuda.current_stream(model.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self._out = fn(self._ids)

    def _replay(self, input_ids: torch.Tensor):
        if tuple(input_ids.shape) != self.shape:
            raise ShapeError(f"this graph was captured for input_ids of shape {list(self.shape)}, got {list(input_ids.shape)}")
        self._ids.copy_(input_ids)
        self.graph.replay()
        return self._out


class GraphedForward(_GraphedIds):
    """`model(input_ids, num_last=n)` for input_ids [B, L] on CUDA, captured once and replayed per call.

    Works for `MambaLM` and `PrunedMambaLM` (criteria other than `random`, whose generator the graph would
    replay with a frozen state). The returned logits [B, n, V] live in the graph's static output and are
    overwritten by the next call: clone them to keep them.
    """

    def __init__(self, model, batch: int, seq_len: int, *, num_last: int | None = None, warmup: int = 2):
        self.num_last = num_last
        super().__init__(model, batch, seq_len, lambda ids: model(ids, num_last=num_last), warmup=warmup)

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._replay(input_ids)


class GraphedPrefill(_GraphedIds):
    """`model.prefill(input_ids)` (no attention mask) for input_ids [B, L] on CUDA, captured once and replayed.

    Returns last-position logits [B, V] and the per-layer states, all in the graph's static buffers: the next
    call overwrites them, so copy what must outlive it (generate() copies the states into its step graph).
    """

    def __init__(self, model, batch: int, seq_len: int, *, warmup: int = 2):
        super().__init__(model, batch, seq_len, model.prefill, warmup=warmup)

    def __call__(self, input_ids: torch.Tensor):
        return self._replay(input_ids)


class GraphedStep:
    """`model.step(token, states)` for a fixed batch on CUDA, captured once and replayed per decoded token.

    The recurrent states live in the graph's own buffers and are advanced in place by each call (the dense
    step has no data-dependent control flow, so one capture serves every token). `load(states)` copies a
    prefill's states in; each call returns logits [B, V] that the next call overwrites.
    """

    def __init__(self, model, states: list, *, warmup: int = 2):
        if model.device.type != "cuda" or not torch.cuda.is_available():
            raise ConfigError(f"a CUDA graph needs the model on a CUDA device; this one is on {model.device}")
        self.model = model
        self.batch = states[0][0].shape[0]
        self.token = torch.zeros(self.batch, dtype=torch.long, device=model.device)
        self.states = [(c.clone(), s.clone()) for c, s in states]
        side = torch.cuda.Stream(device=model.device)
        side.wait_stream(torch.cuda.current_stream(model.device))
        with torch.no_grad(), torch.cuda.stream(side):  # warm-up leaves the static states untouched
            for _ in range(max(1, warmup)):
                model.step(self.token, self.states)
        torch.cuda.current_stream(model.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.logits, new = model.step(self.token, self.states)
            for (c, s), (nc, ns) in zip(self.states, new):
                c.copy_(nc)
                s.copy_(ns)
        self.load(states)

    def matches(self, states: list) -> bool:
        """True when `states` have the shapes and dtypes this graph was captured for."""
        return len(states) == len(self.states) and all(
            c.shape == sc.shape and c.dtype == sc.dtype and s.shape == ss.shape and s.dtype == ss.dtype
            for (c, s), (sc, ss) in zip(states, self.states))

    def load(self, states: list) -> None:
        for (c, s), (nc, ns) in zip(self.states, states):
            c.copy_(nc)
            s.copy_(ns)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        self.graph.replay()
        return self.logits
