"""Selective scan: Triton kernel (fwd + bwd) and chunked PyTorch scan against the step-by-step reference.

On a CPU box the Triton kernels run under TRITON_INTERPRET=1 (set here before triton is imported,
because `triton.jit` picks the interpreter when a kernel is defined); on a GPU box the same small
cases run on CUDA, plus the `gpu`-marked realistic shapes.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from simba_convert.errors import BackendError  # noqa: E402
from simba_convert.ops import scan as ss  # noqa: E402
from simba_convert.ops.scan.chunked import selective_scan_chunked  # noqa: E402
from tests.tolerance import assert_matches  # noqa: E402
from tests.triton_helpers import no_launch  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(bsz, L, d, N, *, D=True, z=True, bias=True, h0=False, device="cpu", dtype=torch.float64):
    """Random inputs in `dtype` (fp64 by default); A is fp32-representable and negative."""
    g = dict(device=device, dtype=dtype)
    return {
        "u": torch.randn(bsz, L, d, **g),
        "delta": torch.randn(bsz, L, d, **g) * 0.5 - 1.0,
        "A": -(torch.rand(d, N, device=device) * 3 + 0.1).to(dtype),
        "B": torch.randn(bsz, L, N, **g),
        "C": torch.randn(bsz, L, N, **g),
        "D": torch.randn(d, **g) if D else None,
        "z": torch.randn(bsz, L, d, **g) if z else None,
        "delta_bias": torch.randn(d, **g) * 0.5 if bias else None,
        "initial_state": torch.randn(bsz, d, N, **g) if h0 else None,
    }


def run_with_grads(fn, inputs, softplus, dy, *, last=False):
    """Call fn(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, last) and back-propagate dy."""
    xs = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    out = fn(*(xs[k] for k in NAMES[:8]), softplus, xs["initial_state"], last)
    y, h = out if last else (out, None)
    (y.double() * dy.double()).sum().backward()
    y, h = y.detach(), (h.detach() if h is not None else None)
    return y, h, {k: v.grad for k, v in xs.items() if v is not None}


def cast(inputs, dtype):
    """Activations (u, delta, z, B, C) in `dtype`; parameters and state in fp32, as the model passes them."""
    lowp = {"u", "delta", "z", "B", "C"}
    return {k: (v.to(dtype if k in lowp else torch.float32) if v is not None else None) for k, v in inputs.items()}


def triton_fn(*args):
    from simba_convert.ops.scan.triton import selective_scan_triton

    return selective_scan_triton(*args)


def assert_triton_grads_match(inp, dy):
    """The Triton scan in fp32 against the fp64 reference with softplus and the last state: outputs and every
    gradient; returns the Triton y."""
    y_ref, h_ref, g_ref = run_with_grads(ss.selective_scan_ref, inp, True, dy, last=True)
    y, h, g = run_with_grads(triton_fn, cast(inp, torch.float32), True, dy, last=True)
    assert_matches(y, y_ref, torch.float32)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], torch.float32)
    return y


# The seq forward under test: 8 channels a program so that D = 17 spans a partial block, and 3 stages
# (a path that rotates every prefetched value); test_seq_forward_matches_chunk covers the others.
SEQ_ENV = "8,1,8,4,seq,3"


@pytest.fixture(params=["chunk", "seq"])
def fwd_kind(request, monkeypatch):
    """Run a test with each Triton forward kind (selected through SIMBA_SCAN_CONFIG, as a user would)."""
    monkeypatch.setenv("SIMBA_SCAN_CONFIG", SEQ_ENV if request.param == "seq" else "16,4,8,4,chunk")
    return request.param


CASES = [
    # bsz, L, d, N, D, z, bias, softplus, h0
    (1, 1, 5, 4, True, True, True, True, False),
    (2, 7, 5, 16, False, False, False, False, False),
    (2, 63, 17, 4, True, True, True, True, True),
    (1, 100, 5, 16, True, False, True, True, True),
    (2, 17, 9, 3, False, True, False, True, False),  # N not a power of two
    (1, 32, 5, 4, True, True, True, True, True),  # whole chunks only: no partial last chunk
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}-L{}-D{}-N{}".format(*c[:4]))
def test_triton_matches_reference_fp32(case, fwd_kind):
    bsz, L, d, N, D, z, bias, sp, h0 = case
    inp = make_inputs(bsz, L, d, N, D=D, z=z, bias=bias, h0=h0, device=DEV)
    dy = torch.randn(bsz, L, d, device=DEV, dtype=torch.float64)
    y_ref, h_ref, g_ref = run_with_grads(ss.selective_scan_ref, inp, sp, dy, last=True)
    y, h, g = run_with_grads(triton_fn, cast(inp, torch.float32), sp, dy, last=True)
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    assert_matches(y, y_ref, torch.float32)
    assert_matches(h, h_ref, torch.float32)
    assert set(g) == set(g_ref)
    for k in g_ref:
        assert g[k].dtype == torch.float32, k
        assert_matches(g[k], g_ref[k], torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision_inputs(dtype, fwd_kind):
    inp = cast(make_inputs(1, 45, 7, 16, h0=True, device=DEV), dtype)
    dy = torch.randn(1, 45, 7, device=DEV, dtype=torch.float64).to(dtype)
    ref_in = {k: (v.double() if v is not None else None) for k, v in inp.items()}
    y_ref, _, g_ref = run_with_grads(ss.selective_scan_ref, ref_in, True, dy)
    y, _, g = run_with_grads(triton_fn, inp, True, dy)
    assert y.dtype == dtype
    assert_matches(y, y_ref, dtype)
    for k in g_ref:
        assert g[k].dtype == inp[k].dtype, k
        assert_matches(g[k], g_ref[k], dtype)


def test_triton_non_contiguous_inputs(fwd_kind):
    """z and u as halves of one projection, B/C as slices of x_proj's output, as the mixer passes them."""
    bsz, L, d, N = 2, 20, 6, 4
    xz = torch.randn(bsz, L, 2 * d, device=DEV)
    u, z = xz.chunk(2, dim=-1)
    xbc = torch.randn(bsz, L, 3 + 2 * N, device=DEV)
    _, Bm, Cm = torch.split(xbc, [3, N, N], dim=-1)
    delta = torch.randn(bsz, L, d, device=DEV).transpose(0, 1).contiguous().transpose(0, 1)
    A = -torch.rand(d, N, device=DEV) - 0.5
    args = (u, delta, A, Bm, Cm, torch.randn(d, device=DEV), z, torch.randn(d, device=DEV), True)
    assert_matches(triton_fn(*args), ss.selective_scan_ref(*args))


def allocations(monkeypatch):
    """Record every buffer the kernels get from `_alloc.empty` (still poisoned by conftest.py)."""
    from simba_convert.ops import _alloc

    made = []
    poisoned = _alloc.empty

    def spy(*s, device, dtype):
        made.append(poisoned(*s, device=device, dtype=dtype))
        return made[-1]

    monkeypatch.setattr(_alloc, "empty", spy)
    return made


def test_triton_writes_every_output_element(monkeypatch, fwd_kind):
    """Outputs, partial buffers and state gradients start as NaN (conftest.py): any element left unwritten fails.
    The y compared is the kernel's own output buffer, not a copy made after it."""
    made = allocations(monkeypatch)
    inp = make_inputs(2, 20, 9, 16, h0=True, device=DEV)
    dy = torch.randn(2, 20, 9, device=DEV, dtype=torch.float64)
    y = assert_triton_grads_match(inp, dy)
    assert len(made) == 12  # y, last, checkpoints; du, d delta, dz, dB, dC, dA, dD, d bias, d h0 partials
    assert y.data_ptr() in {t.data_ptr() for t in made}


@pytest.mark.parametrize("kind", ["chunk", "seq", "split"])
def test_a_forward_that_writes_nothing_is_caught(monkeypatch, kind):
    """After a real call, forward launches that write nothing leave y and the last state poisoned (conftest.py)."""
    from simba_convert.ops.scan import triton as sst
    from simba_convert.ops.scan import triton_seq as seq

    cfg = split_config(3) if kind == "split" else sst.LaunchConfig(8, 1, 8, 4, kind, 3)
    x = cast(make_inputs(2, 40, 9, 4, h0=True, device=DEV), torch.float32)
    args = [x[k] for k in NAMES[:8]] + [True, x["initial_state"], True, False]
    y_ref, h_ref = ss.selective_scan_ref(*(x[k] for k in NAMES[:8]), True, x["initial_state"], True)
    y, h, _ = sst.scan_forward(*args, config=cfg)
    assert_matches(y, y_ref)
    assert_matches(h, h_ref)
    stub = no_launch(monkeypatch, sst, "_scan_fwd_kernel")
    no_launch(monkeypatch, seq, "_scan_fwd_seq_kernel", stub=stub)
    y, h, _ = sst.scan_forward(*args, config=cfg)
    assert stub.launches == (2 if kind == "split" else 1)
    for got, ref in ((y, y_ref), (h, h_ref)):
        assert torch.isnan(got).all()
        with pytest.raises(AssertionError, match="NaN"):
            assert_matches(got, ref)


def test_a_backward_that_writes_nothing_is_caught(monkeypatch):
    """After a real backward, a backward launch that writes nothing leaves every gradient NaN: the ones written
    directly (du, d delta, dz) and the ones reduced from poisoned partial buffers."""
    from simba_convert.ops.scan import triton as sst

    monkeypatch.setenv("SIMBA_SCAN_CONFIG", SEQ_ENV)
    inp = make_inputs(1, 17, 5, 4, h0=True, device=DEV)
    dy = torch.randn(1, 17, 5, device=DEV, dtype=torch.float64)
    assert_triton_grads_match(inp, dy)
    stub = no_launch(monkeypatch, sst, "_scan_bwd_kernel")
    _, _, grads = run_with_grads(triton_fn, cast(inp, torch.float32), True, dy, last=True)
    assert stub.launches == 1
    assert sorted(grads) == sorted(k for k, v in inp.items() if v is not None)
    for name, g in grads.items():
        assert torch.isnan(g).all(), name


def test_triton_no_checkpoints_without_grad(monkeypatch, fwd_kind):
    """Inference (no tensor needs a gradient) must not allocate the [B, L/CHUNK, D, N] checkpoints."""
    from simba_convert.ops.scan import triton as sst

    made = allocations(monkeypatch)
    inp = cast(make_inputs(1, 40, 4, 4, device=DEV), torch.float32)
    sst.selective_scan_triton(*(inp[k] for k in NAMES[:8]), True)
    assert made and all(t.dim() != 4 for t in made), [tuple(t.shape) for t in made]


@pytest.mark.parametrize("stages", [1, 2, 4])
@pytest.mark.parametrize("L,N", [(1, 16), (16, 3), (37, 16)])
def test_seq_forward_matches_chunk(L, N, stages):
    """Outputs, last state and the checkpoints `_scan_bwd_kernel` reads agree between the two forwards."""
    from simba_convert.ops.scan import triton as sst

    inp = cast(make_inputs(1, L, 11, N, h0=True, device=DEV), torch.float32)
    args = [inp[k] for k in NAMES[:8]] + [True, inp["initial_state"], True, True]
    y, last, chk = sst.scan_forward(*args, config=sst.LaunchConfig(fwd_kind="chunk"))
    y2, last2, chk2 = sst.scan_forward(*args, config=sst.LaunchConfig(4, 1, 8, 4, "seq", stages))
    assert chk.shape == chk2.shape == (1, -(-L // sst.CHUNK), 11, N)
    assert_matches(y2, y)
    assert_matches(last2, last)
    assert_matches(chk2, chk)
    y_ref, last_ref = ss.selective_scan_ref(*args[:10], True)
    assert_matches(y2, y_ref)
    assert_matches(last2, last_ref)


def test_launch_config_from_env(monkeypatch):
    from simba_convert.errors import ConfigError
    from simba_convert.ops.scan.triton import LaunchConfig

    monkeypatch.setenv("SIMBA_SCAN_CONFIG", "32,8,16,4")  # the original four-value form
    assert LaunchConfig.from_env() == LaunchConfig(32, 8, 16, 4, "chunk")
    assert LaunchConfig.from_env().fwd_kind == "chunk"
    monkeypatch.setenv("SIMBA_SCAN_CONFIG", "64,2,8,4,seq")
    assert LaunchConfig.from_env() == LaunchConfig(64, 2, 8, 4, "seq", LaunchConfig().fwd_stages)
    monkeypatch.setenv("SIMBA_SCAN_CONFIG", "32, 1, 8, 4, seq, 4")
    assert LaunchConfig.from_env() == LaunchConfig(32, 1, 8, 4, fwd_kind="seq", fwd_stages=4)
    monkeypatch.setenv("SIMBA_SCAN_CONFIG", "32,1,8,4,split,3,8")
    assert LaunchConfig.from_env() == LaunchConfig(32, 1, 8, 4, fwd_kind="split", fwd_stages=3, fwd_splits=8)
    bad_specs = ("32,1,8", "32,1,8,4,scan", "32,1,8,4,seq,0", "32,1,8,4,seq,5", "32,x,8,4", "1,2,3,4,seq,2,7,1",
                 "32,1,8,4,split,3,-1", "32,1,8,4,split,3,x")
    for bad in bad_specs:
        monkeypatch.setenv("SIMBA_SCAN_CONFIG", bad)
        with pytest.raises(ConfigError):
            LaunchConfig.from_env()
    assert LaunchConfig().fwd_kind == "auto" and LaunchConfig().fwd_splits == 0


def test_auto_forward_picks_seq_only_with_enough_programs():
    from simba_convert.ops.scan.triton import SEQ_MIN_PROGRAMS, LaunchConfig, resolve_forward

    auto = LaunchConfig()
    small = resolve_forward(auto, 1, 32 * (SEQ_MIN_PROGRAMS - 1), 2048, save_checkpoints=True)
    big = resolve_forward(auto, 2, 32 * (SEQ_MIN_PROGRAMS // 2), 2048, save_checkpoints=True)
    assert (small.fwd_kind, small.fwd_block_d, small.fwd_warps) == ("chunk", auto.fwd_block_d, auto.fwd_warps)
    assert (big.fwd_kind, big.fwd_block_d, big.fwd_warps, big.fwd_stages) == ("seq", 32, 1, 3)
    # Without checkpoints, fewer than SPLIT_BELOW_PROGRAMS programs split the sequence; from there on, seq.
    assert resolve_forward(auto, 2, 32 * (SEQ_MIN_PROGRAMS // 2), 2048, save_checkpoints=False).fwd_kind == "split"
    assert resolve_forward(auto, 8, 4096, 2048, save_checkpoints=False) == big
    explicit = LaunchConfig(fwd_kind="chunk")
    assert resolve_forward(explicit, 64, 4096, 2048, save_checkpoints=False) is explicit


# ----------------------------------------------------------------------------------- split forward
def test_auto_forward_picks_split_only_with_few_programs_and_no_checkpoints():
    from simba_convert.ops.scan import triton as sst

    auto = sst.LaunchConfig()
    # The 1.4B layer at B=1 (128 programs): 16 segments of 128 steps, the fastest measured.
    b1 = sst.resolve_forward(auto, 1, 4096, 2048, save_checkpoints=False)
    assert (b1.fwd_kind, b1.fwd_splits, b1.fwd_block_d, b1.fwd_warps, b1.fwd_stages) == ("split", 16, 32, 1, 3)
    assert sst.resolve_forward(auto, 4, 4096, 2048, save_checkpoints=False).fwd_splits == 16
    assert sst.resolve_forward(auto, 8, 4096, 2048, save_checkpoints=False).fwd_kind == "seq"  # 1024 programs
    assert sst.resolve_forward(auto, 1, 4096, 2048, save_checkpoints=True).fwd_kind == "chunk"  # autograd
    assert sst.resolve_forward(auto, 1, 4096, sst.SPLIT_MIN_LEN - 1, save_checkpoints=False).fwd_kind == "chunk"
    assert sst.resolve_forward(auto, 16, 4096, 2048, save_checkpoints=False).fwd_kind == "seq"  # enough programs
    # Segments stay >= SPLIT_MIN_STEPS long and at most SPLIT_MAX_SEGMENTS: 256 // 64 = 4; 1 program: 16.
    assert sst.resolve_forward(auto, 1, 4096, 256, save_checkpoints=False).fwd_splits == 4
    assert sst.resolve_forward(auto, 1, 32, 1 << 16, save_checkpoints=False).fwd_splits == sst.SPLIT_MAX_SEGMENTS
    # An explicit split count is kept (rounded to the segments that are not empty) ...
    explicit = sst.LaunchConfig(32, 1, 8, 4, "split", 3, 3)
    assert sst.resolve_forward(explicit, 8, 4096, 4, save_checkpoints=False).fwd_splits == 2  # 2 + 2 steps
    assert sst.resolve_forward(explicit, 8, 4096, 4, save_checkpoints=False).fwd_kind == "split"
    # ... and becomes the seq forward (same kernel, one pass) when it is one segment or checkpoints are needed.
    assert sst.resolve_forward(explicit, 1, 32, 1, save_checkpoints=False).fwd_kind == "seq"
    assert sst.resolve_forward(explicit, 1, 32, 2048, save_checkpoints=True) == replace(explicit, fwd_kind="seq")


def test_auto_split_follows_gradients_end_to_end(monkeypatch):
    """Through the autograd entry point: split without gradients (and right), chunk when backward will follow."""
    from simba_convert.ops.scan import triton as sst

    monkeypatch.setattr(sst, "SPLIT_MIN_LEN", 16)
    monkeypatch.setattr(sst, "SPLIT_MIN_STEPS", 8)
    monkeypatch.delenv("SIMBA_SCAN_CONFIG", raising=False)
    kinds = []
    real = sst.resolve_forward
    monkeypatch.setattr(sst, "resolve_forward", lambda *a, **k: kinds.append(real(*a, **k)) or kinds[-1])
    inp = cast(make_inputs(1, 20, 5, 4, device=DEV), torch.float32)
    args = [inp[k] for k in NAMES[:8]] + [True]
    y = sst.selective_scan_triton(*args)
    assert [(c.fwd_kind, c.fwd_splits) for c in kinds] == [("split", 2)]
    assert_matches(y, ss.selective_scan_ref(*args))
    args[0] = args[0].clone().requires_grad_()
    sst.selective_scan_triton(*args)
    assert kinds[-1].fwd_kind == "chunk"


# bsz, L, d, N, segments asked, segments made, D, z, bias, softplus, h0, last, stages. d = 9 spans a partial
# second block of 8 channels; N = 3 is not a power of two. L=1 makes one segment (run as seq); L=5 in 3 makes
# 2+2+1, L=63 in 2 makes 32+31, L=100 in 7 makes 6·15+10, L=130 in 3 makes 44+44+42.
SPLIT_CASES = [
    (1, 1, 5, 4, 3, 1, True, True, True, True, True, True, 3),
    (2, 5, 9, 16, 3, 3, True, True, True, True, True, True, 3),
    (1, 63, 5, 3, 2, 2, False, False, False, False, False, False, 1),
    (1, 100, 5, 16, 7, 7, True, False, True, True, True, True, 4),
    (1, 130, 5, 4, 3, 3, False, True, False, True, True, False, 2),
]


def split_config(splits, stages=3):
    from simba_convert.ops.scan.triton import LaunchConfig

    return LaunchConfig(8, 1, 8, 4, "split", stages, splits)


@pytest.fixture
def poisoned(monkeypatch):
    """Every buffer the kernels write (outputs and segment summaries) starts as NaN (conftest.py); the buffers."""
    return allocations(monkeypatch)


@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda c: "B{}-L{}-D{}-N{}-S{}".format(*c[:5]))
def test_split_forward_matches_reference_fp32(case, poisoned):
    from simba_convert.ops.scan import triton as sst

    bsz, L, d, N, asked, made, D, z, bias, sp, h0, last, stages = case
    inp = make_inputs(bsz, L, d, N, D=D, z=z, bias=bias, h0=h0, device=DEV)
    if not sp:  # a delta taken as is must be positive, as the model's is, or h grows past fp32 over 63 steps
        inp["delta"] = torch.nn.functional.softplus(inp["delta"])
    cfg = split_config(asked, stages)
    resolved = sst.resolve_forward(cfg, bsz, d, L, save_checkpoints=False)
    assert (resolved.fwd_kind, resolved.fwd_splits) == (("split", made) if made > 1 else ("seq", 0))
    x = cast(inp, torch.float32)
    y, h, chk = sst.scan_forward(*(x[k] for k in NAMES[:8]), sp, x["initial_state"], last, False, config=cfg)
    out_ref = ss.selective_scan_ref(*(inp[k] for k in NAMES[:8]), sp, inp["initial_state"], last)
    y_ref, h_ref = out_ref if last else (out_ref, None)
    assert chk is None and (h is None) == (not last)
    assert y.dtype == torch.float32
    assert_matches(y, y_ref, torch.float32)
    if last:
        assert_matches(h, h_ref, torch.float32)
    shapes = [tuple(t.shape) for t in poisoned]
    assert ((bsz, made - 1, d, N) in shapes) == ((bsz, made - 1, d) in shapes) == (made > 1)  # summaries


def test_split_forward_bf16(poisoned):
    from simba_convert.ops.scan import triton as sst

    inp = cast(make_inputs(1, 100, 7, 16, h0=True, device=DEV), torch.bfloat16)
    ref_in = {k: (v.double() if v is not None else None) for k, v in inp.items()}
    args = [inp[k] for k in NAMES[:8]] + [True, inp["initial_state"], True, False]
    y, h, _ = sst.scan_forward(*args, config=split_config(4))
    y_ref, h_ref = ss.selective_scan_ref(*(ref_in[k] for k in NAMES[:8]), True, ref_in["initial_state"], True)
    assert y.dtype == torch.bfloat16
    assert_matches(y, y_ref, torch.bfloat16)
    assert_matches(h, h_ref, torch.float32)


def test_split_through_env_runs_as_seq_under_autograd(monkeypatch):
    """A split config set for inference still trains: with a backward to follow it runs the seq forward."""
    monkeypatch.setenv("SIMBA_SCAN_CONFIG", "8,1,8,4,split,3,3")
    inp = make_inputs(1, 20, 5, 4, h0=True, device=DEV)
    dy = torch.randn(1, 20, 5, device=DEV, dtype=torch.float64)
    assert_triton_grads_match(inp, dy)


@pytest.mark.parametrize("chunk", [1, 4, 32])
@pytest.mark.parametrize("L", [1, 7, 100])
def test_chunked_matches_reference(L, chunk):
    inp = make_inputs(2, L, 5, 16, h0=True)
    dy = torch.randn(2, L, 5, dtype=torch.float64)
    y_ref, h_ref, g_ref = run_with_grads(ss.selective_scan_ref, inp, True, dy, last=True)
    fn = lambda *a: selective_scan_chunked(*a, chunk=chunk)  # noqa: E731
    y, h, g = run_with_grads(fn, cast(inp, torch.float32), True, dy, last=True)
    assert_matches(y, y_ref, torch.float32)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], torch.float32)


def test_chunked_is_finite_with_large_decay():
    """Large delta·|A| (a_t underflows to 0) must not produce inf/NaN: every exponent is <= 0."""
    inp = cast(make_inputs(1, 70, 3, 4, h0=True), torch.float32)
    inp["delta"] = inp["delta"].abs() * 50
    inp["A"] = inp["A"] * 20
    y = selective_scan_chunked(*(inp[k] for k in NAMES[:8]), False, inp["initial_state"])
    assert_matches(y, ss.selective_scan_ref(*(inp[k] for k in NAMES[:8]), False, inp["initial_state"]))


def test_reference_backend_uses_chunked_for_long_sequences_under_autograd(monkeypatch):
    import simba_convert.ops.scan.chunked as ssc

    calls = []
    real = ssc.selective_scan_chunked
    monkeypatch.setattr(ssc, "selective_scan_chunked", lambda *a, **k: calls.append(1) or real(*a, **k))
    inp = cast(make_inputs(1, ss.CHUNKED_MIN_LEN, 3, 4), torch.float32)
    args = [inp[k] for k in NAMES[:8]]
    with torch.no_grad():
        ss.selective_scan(*args, True, backend="reference")
    assert calls == [], "without gradients the loop is used"
    args[0] = args[0].clone().requires_grad_()
    y = ss.selective_scan(*args, True, backend="reference")
    assert calls == [1]
    assert_matches(y.detach(), ss.selective_scan_ref(*[a.detach() if a is not None else a for a in args], True))
    short = [t[:, :5] if t is not None and t.dim() == 3 else t for t in args]
    ss.selective_scan(*short, True, backend="reference")
    assert calls == [1]


def test_auto_on_cpu_is_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    from simba_convert.ops.backend import resolve

    assert resolve("selective_scan", "auto", torch.device("cpu")) == "reference"


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    inp = cast(make_inputs(1, 3, 2, 4), torch.float32)
    with pytest.raises(BackendError):
        ss.selective_scan(*(inp[k] for k in NAMES[:8]), backend="triton")


def test_dispatch_triton_is_differentiable(fwd_kind):
    inp = make_inputs(1, 9, 3, 4, device=DEV)
    dy = torch.randn(1, 9, 3, device=DEV, dtype=torch.float64)
    _, _, g_ref = run_with_grads(ss.selective_scan_ref, inp, True, dy)
    fn = lambda *a: ss.selective_scan(*a, backend="triton")  # noqa: E731
    _, _, g = run_with_grads(fn, cast(inp, torch.float32), True, dy)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], torch.float32)


def test_import_does_not_load_triton():
    import subprocess
    import sys

    code = "import sys, simba_convert.ops.scan; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_tiny_model_trains_through_triton():
    """A 2-layer model: logits and every parameter gradient agree between backends."""
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.mamba import MambaLM

    cfg = MambaConfig(d_model=8, n_layer=2, vocab_size=32, d_state=4)
    model = MambaLM(cfg).to(DEV)
    ids = torch.randint(0, 32, (2, 11), device=DEV)
    grads = {}
    for backend in ("reference", "triton"):
        model.zero_grad()
        logits = model.set_backend(backend)(ids)
        logits.float().logsumexp(-1).sum().backward()
        grads[backend] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert_matches(grads["triton"][0], grads["reference"][0])
    for n, gref in grads["reference"][1].items():
        # 1e-5 is relative to each tensor's max: a few parameters see sums of ~100 fp32 products.
        assert_matches(grads["triton"][1][n], gref, scale=4.0)


# ----------------------------------------------------------------------------------- GPU shapes
@pytest.mark.gpu
@pytest.mark.parametrize("d", [1536, 4096])
def test_gpu_realistic_shapes_bf16(d, fwd_kind):
    bsz, L, N = 2, 1024, 16
    inp = cast(make_inputs(bsz, L, d, N, h0=True, device="cuda", dtype=torch.float32), torch.bfloat16)
    dy = torch.randn(bsz, L, d, device="cuda").to(torch.bfloat16)
    ref_in = {k: (v.float() if v is not None else None) for k, v in inp.items()}
    y_ref, h_ref, g_ref = run_with_grads(selective_scan_chunked, ref_in, True, dy, last=True)
    y, h, g = run_with_grads(lambda *a: ss.selective_scan(*a, backend="auto"), inp, True, dy, last=True)
    assert_matches(y, y_ref, torch.bfloat16)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], inp[k].dtype)


@pytest.mark.gpu
def test_gpu_split_forward_b1_bf16(monkeypatch):
    """The 1.4B layer at B=1 without gradients: `auto` picks split (16 segments), and it matches the reference."""
    from simba_convert.ops.scan import triton as sst

    monkeypatch.delenv("SIMBA_SCAN_CONFIG", raising=False)
    bsz, L, d, N = 1, 2048, 4096, 16
    resolved = sst.resolve_forward(sst.LaunchConfig(), bsz, d, L, save_checkpoints=False)
    assert (resolved.fwd_kind, resolved.fwd_splits) == ("split", 16)
    inp = cast(make_inputs(bsz, L, d, N, h0=True, device="cuda", dtype=torch.float32), torch.bfloat16)
    args = [inp[k] for k in NAMES[:8]] + [True, inp["initial_state"], True]
    with torch.no_grad():
        y, h = ss.selective_scan(*args, backend="auto")
        y_ref, h_ref = selective_scan_chunked(*(a.float() if a is not None else None for a in args[:8]), *args[8:])
    assert_matches(y, y_ref, torch.bfloat16)
    assert_matches(h, h_ref, torch.float32)
