"""The Mamba-2 scan (SSD, "state space duality"): the readable fp32 reference and one decoding step.

Shapes (heads H of P channels each, G groups of N states; head h reads group h // (H // G)):
x [B, L, H, P]; dt [B, L, H] (raw); A [H] (negative, fp32); B, C [B, L, G, N]; D (skip) [H];
dt_bias [H]; state [B, H, P, N] fp32. Per head the step size and the decay are scalars:

    delta_t = softplus(dt_t + dt_bias) (dt_softplus) or dt_t + dt_bias, in fp32
    h_t = exp(delta_t · A) h_{t-1} + delta_t · x_t ⊗ B_t        [P, N] per head
    y_t = h_t · C_t + D · x_t                                    [P] per head

`ssd_scan_ref` computes this chunk by chunk (the SSD algorithm): inside a chunk of T tokens the output is a
masked "attention" y = (L ∘ C Bᵀ) (delta · x) with L[t, s] = exp(Σ_{s<k≤t} delta_k A), plus the carried state
read through C; the state is then carried across the chunk in one step. Memory is bounded by the chunk:
[B, H, T, T] for L, [B, T, H, N] for the expanded B and C.

Why the chunk form equals the recurrence: unrolling it inside a chunk,
    h_t = Σ_{s≤t} exp(Σ_{s<k≤t} delta_k A) delta_s x_s ⊗ B_s + exp(Σ_{k≤t} delta_k A) h_start,
so y_t = Σ_s L[t, s] (C_t·B_s) delta_s x_s + exp(Σ_{k≤t} delta_k A) h_start·C_t, and the state at the chunk's
end is the same sum taken at t = T-1.
"""

from __future__ import annotations

import torch

from ...errors import ShapeError
from .._common import step_size


def _check(x, dt, A, B, C, D, dt_bias, state, *, step: bool) -> tuple[int, int, int, int]:
    """(H, P, G, N) after checking every shape against x; a one-line ShapeError otherwise."""
    want = 3 if step else 4
    if x.dim() != want:
        raise ShapeError(f"x must be [B, {'' if step else 'L, '}H, P], got shape {tuple(x.shape)}")
    lead = tuple(x.shape[:-2])  # (B,) or (B, L)
    H, P = x.shape[-2:]
    if B.dim() != want or tuple(B.shape[:-2]) != lead or B.shape != C.shape:
        raise ShapeError(f"B and C must be [{', '.join(map(str, lead))}, G, N], "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    G, N = B.shape[-2:]
    if G < 1 or H % G:
        raise ShapeError(f"the {H} heads cannot be split into {G} groups (H must be a multiple of G)")
    if tuple(dt.shape) != lead + (H,):
        raise ShapeError(f"dt must be {list(lead + (H,))}, got {tuple(dt.shape)}")
    for name, t in (("A", A), ("D", D), ("dt_bias", dt_bias)):
        if t is not None and tuple(t.shape) != (H,):
            raise ShapeError(f"{name} must be [H] = [{H}], got {tuple(t.shape)}")
    if state is not None and tuple(state.shape) != (x.shape[0], H, P, N):
        raise ShapeError(f"the state must be [B, H, P, N] = {[x.shape[0], H, P, N]}, got {tuple(state.shape)}")
    return H, P, G, N


def _by_head(t: torch.Tensor, H: int) -> torch.Tensor:
    """[..., G, N] -> [..., H, N]: each group's row repeated for its H // G heads (head h reads group h // (H//G))."""
    return t.repeat_interleave(H // t.shape[-2], dim=-2)


def segment_sum(a: torch.Tensor) -> torch.Tensor:
    """a [..., T] -> S [..., T, T] with S[t, s] = Σ_{s<k≤t} a_k for s ≤ t and -inf above the diagonal.

    Summed directly (a cumulative sum of a masked copy) rather than as cumsum_t - cumsum_s: the difference of two
    long sums loses the small ones to cancellation, and exp(S) is the decay between two tokens.
    """
    T = a.shape[-1]
    strictly_lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    terms = a[..., :, None].expand(*a.shape, T).masked_fill(~strictly_lower, 0.0)  # [..., k, s]: a_k if k > s
    S = terms.cumsum(dim=-2)
    return S.masked_fill(~strictly_lower.logical_or(torch.eye(T, dtype=torch.bool, device=a.device)), float("-inf"))


def ssd_scan_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 64,
):
    """The Mamba-2 scan in fp32, chunk by chunk: y [B, L, H, P] in x's dtype (and the final state [B, H, P, N]
    fp32 when return_final_state). The recurrence and shapes are in the module docstring."""
    H, P, G, N = _check(x, dt, A, B, C, D, dt_bias, initial_state, step=False)
    if chunk_size < 1:
        raise ShapeError(f"chunk_size must be >= 1, got {chunk_size}")
    bsz, L = x.shape[:2]
    delta = step_size(dt, dt_bias, dt_softplus)  # [B, L, H]
    A = A.float()
    state = x.new_zeros(bsz, H, P, N, dtype=torch.float32) if initial_state is None else initial_state.float()
    ys = []
    for start in range(0, L, chunk_size):
        end = min(start + chunk_size, L)
        xc = x[:, start:end].float()  # [B, T, H, P]
        dc = delta[:, start:end]  # [B, T, H]
        Bc = _by_head(B[:, start:end].float(), H)  # [B, T, H, N]
        Cc = _by_head(C[:, start:end].float(), H)
        a = (dc * A).transpose(1, 2)  # [B, H, T]: log-decay of each token
        decay = torch.exp(segment_sum(a))  # [B, H, T(t), T(s)]: exp(Σ_{s<k≤t} a_k), 0 above the diagonal
        into_chunk = torch.exp(a.cumsum(-1))  # [B, H, T]: decay from the chunk start through token t
        to_end = decay[..., -1, :]  # [B, H, T]: decay from after token s to the chunk end
        dx = xc * dc[..., None]  # delta_s · x_s
        # within the chunk: y_t = Σ_{s≤t} decay[t, s] (C_t·B_s) delta_s x_s
        scores = torch.einsum("bthn,bshn->bhts", Cc, Bc) * decay
        y = torch.einsum("bhts,bshp->bthp", scores, dx)
        # from before the chunk: y_t += into_chunk_t · (state · C_t)
        y = y + torch.einsum("bhpn,bthn->bthp", state, Cc) * into_chunk.transpose(1, 2)[..., None]
        # the state after the chunk: decayed across it, plus every token's input decayed to the end
        state = state * into_chunk[..., -1, None, None] + torch.einsum("bhs,bshp,bshn->bhpn", to_end, dx, Bc)
        if D is not None:
            y = y + D.float()[:, None] * xc
        ys.append(y)
    y = torch.cat(ys, dim=1) if ys else x.new_zeros(bsz, 0, H, P, dtype=torch.float32)
    y = y.to(x.dtype)
    return (y, state) if return_final_state else y


def ssd_step_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence: x [B, H, P], dt [B, H], B, C [B, G, N], state [B, H, P, N] ->
    (y [B, H, P] in x's dtype, new state [B, H, P, N] fp32). `state` is not modified."""
    H, P, G, N = _check(x, dt, A, B, C, D, dt_bias, state, step=True)
    delta = step_size(dt, dt_bias, dt_softplus)  # [B, H]
    xf = x.float()
    Bh, Ch = _by_head(B.float(), H), _by_head(C.float(), H)  # [B, H, N]
    dA = torch.exp(delta * A.float())[..., None, None]
    new = dA * state.float() + (delta[..., None] * xf)[..., None] * Bh[:, :, None, :]
    y = (new * Ch[:, :, None, :]).sum(-1)
    if D is not None:
        y = y + D.float()[:, None] * xf
    return y.to(x.dtype), new
