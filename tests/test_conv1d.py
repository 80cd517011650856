"""Causal depthwise conv1d: the Triton forward against `causal_conv1d_ref`, strided inputs, the dispatcher.

Triton kernels run compiled on CUDA and interpreted on the CPU (TRITON_INTERPRET=1, set by conftest.py; tiny shapes).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from simba_convert.errors import BackendError
from simba_convert.ops.conv1d import causal_conv1d, causal_conv1d_ref
from tolerance import assert_matches, poison_like
from triton_helpers import kernel_module, no_launch

KERNEL_MODULE = "simba_convert.ops.conv1d.triton"
SHAPES = [(1, 1, 1), (3, 2, 7), (1, 3, 33), (3, 63, 130), (1, 100, 33)]  # (B, L, D)
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def kernels():
    """The Triton module: compiled on CUDA, interpreted on the CPU."""
    return kernel_module(KERNEL_MODULE)


def make_inputs(bsz, L, D, K=4, *, bias=True, state=False, strided=True, dtype=torch.float32, device=DEV, seed=0):
    """x as the first half of an in_proj-like [B, L, 2D] output (strides (L·2D, 2D, 1)) when `strided`."""
    g = torch.Generator().manual_seed(seed)
    # Slice after moving: a copy to another device is contiguous, and the kernel must see the strided view.
    xz = torch.randn(bsz, L, 2 * D if strided else D, generator=g).to(device=device, dtype=dtype)
    x = xz[..., :D] if strided else xz
    w = torch.randn(D, K, generator=g) * 0.5
    b = torch.randn(D, generator=g) if bias else None
    s = torch.randn(bsz, D, K - 1, generator=g) if state else None
    to = dict(device=device)
    return (x, w.to(**to), None if b is None else b.to(**to),
            None if s is None else s.to(dtype=dtype, **to))


def reference(x, w, b, s, activation="silu"):
    """The fp32 reference on the same (possibly low-precision) values, on the CPU."""
    return causal_conv1d_ref(x.float().cpu(), w.float().cpu(), None if b is None else b.float().cpu(),
                             None if s is None else s.float().cpu(), activation)


# ---- kernel vs reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}L{}D{}".format(*s))
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("state", [False, True], ids=["zero", "state"])
def test_kernel_matches_reference_fp32(kernels, shape, bias, state):
    x, w, b, s = make_inputs(*shape, bias=bias, state=state)
    assert x.stride(-1) == 1 and (shape[2] == 1 or x.stride(1) == 2 * shape[2])
    out = poison_like(torch.empty(shape, device=DEV))
    res = kernels.causal_conv1d_triton(x, w, b, s, "silu", out=out)
    assert res is out
    assert_matches(out.cpu(), reference(x, w, b, s))


def test_a_kernel_that_writes_nothing_is_caught(kernels, monkeypatch):
    """After a real call, a launch that writes nothing leaves the freshly allocated output poisoned (conftest.py)."""
    x, w, b, s = make_inputs(2, 9, 33, state=True)
    ref = reference(x, w, b, s)
    assert_matches(kernels.causal_conv1d_triton(x, w, b, s).cpu(), ref)
    stub = no_launch(monkeypatch, kernels, "_causal_conv1d_fwd_kernel")
    out = kernels.causal_conv1d_triton(x, w, b, s)
    assert stub.launches == 1 and torch.isnan(out).all()
    with pytest.raises(AssertionError, match="NaN"):
        assert_matches(out.cpu(), ref)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 8])
def test_kernel_kernel_widths(kernels, K):
    """d_conv as a compile-time constant: widths from 1 (no state) to 8, longer than some sequences here."""
    for L in (3, 20):
        x, w, b, s = make_inputs(2, L, 9, K, state=True)
        assert_matches(kernels.causal_conv1d_triton(x, w, b, s).cpu(), reference(x, w, b, s))


@pytest.mark.parametrize("cfg", [(1, 4, 1), (2, 8, 1), (16, 32, 2)], ids=lambda c: "L{}D{}w{}".format(*c))
def test_kernel_launch_configs(kernels, cfg):
    """Time blocks shorter than the K-1 steps of state (the state then spans several blocks) and partial
    channel blocks."""
    config = kernels.LaunchConfig(*cfg)
    for K in (4, 8):
        x, w, b, s = make_inputs(2, 11, 9, K, state=True)
        out = kernels.causal_conv1d_triton(x, w, b, s, out=poison_like(torch.empty(2, 11, 9, device=DEV)), config=config)
        assert_matches(out.cpu(), reference(x, w, b, s))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("state", [False, True], ids=["zero", "state"])
def test_kernel_low_precision(kernels, dtype, state):
    x, w, b, s = make_inputs(3, 63, 130, state=state, dtype=dtype)
    out = kernels.causal_conv1d_triton(x, w, b, s)
    assert out.dtype == dtype and out.is_contiguous()
    ref = reference(x, w, b, s)
    assert_matches(out.float().cpu(), ref, dtype)
    # Rounded to nearest like torch's cast: only the fp32 summation order may flip an element (truncation
    # would change about half of them).
    assert (out.cpu() != ref.to(dtype)).float().mean() <= 0.01


def test_kernel_casts_state_to_x_dtype(kernels):
    """An fp32 state with bf16 x is used as its bf16 value, as the reference and the decoding step do."""
    x, w, b, _ = make_inputs(2, 5, 33, dtype=torch.bfloat16)
    s = torch.randn(2, 33, 3, device=DEV)
    out = kernels.causal_conv1d_triton(x, w, b, s)
    assert_matches(out.float().cpu(), reference(x, w, b, s.to(torch.bfloat16)), torch.bfloat16)


def test_kernel_without_activation(kernels):
    x, w, b, s = make_inputs(2, 17, 7, state=True)
    assert_matches(kernels.causal_conv1d_triton(x, w, b, s, activation=None).cpu(), reference(x, w, b, s, None))


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_kernel_reads_any_strides(kernels, layout):
    """x stored contiguously, or channels-first ([B, D, L] memory seen as [B, L, D]), and a strided weight."""
    x, w, b, s = make_inputs(2, 11, 7, state=True, strided=False)
    if layout == "transposed":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    w = w.t().contiguous().t()
    assert_matches(kernels.causal_conv1d_triton(x, w, b, s).cpu(), reference(x, w, b, s))


def test_kernel_writes_only_its_out_view(kernels):
    """A strided out (half of a wider buffer) is filled and the other half is left untouched."""
    x, w, b, s = make_inputs(3, 9, 33, state=True)
    buf = poison_like(torch.empty(3, 9, 66, device=DEV))
    out = buf[..., 33:]
    kernels.causal_conv1d_triton(x, w, b, s, out=out)
    assert_matches(out.cpu(), reference(x, w, b, s))
    assert torch.isnan(buf[..., :33]).all()


def test_kernel_empty_and_bad_inputs(kernels):
    x, w, b, _ = make_inputs(2, 0, 5)
    assert kernels.causal_conv1d_triton(x, w, b).shape == (2, 0, 5)
    x, w, b, _ = make_inputs(2, 4, 5)
    with pytest.raises(ValueError, match="activation"):
        kernels.causal_conv1d_triton(x, w, b, activation="relu")
    with pytest.raises(ValueError, match="weight"):
        kernels.causal_conv1d_triton(x, w[:4], b)
    with pytest.raises(ValueError, match="initial_state"):
        kernels.causal_conv1d_triton(x, w, b, torch.zeros(2, 5, 4, device=DEV))
    with pytest.raises(ValueError, match="out"):
        kernels.causal_conv1d_triton(x, w, b, out=torch.empty(2, 4, 5, dtype=torch.float64, device=DEV))


# ---- dispatch --------------------------------------------------------------------------------------

@pytest.fixture
def kernel_calls(kernels, monkeypatch):
    """Counts calls of the Triton entry point that the dispatcher imports at call time."""
    calls = []
    real = kernels.causal_conv1d_triton

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(kernels, "causal_conv1d_triton", spy)
    return calls


@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
def test_dispatch_choice(kernel_calls, backend):
    """auto: Triton on CUDA, the reference elsewhere (also under the interpreter); triton: the kernel."""
    x, w, b, s = make_inputs(2, 7, 5, state=True)
    out = causal_conv1d(x, w, b, s, backend=backend)
    expect_kernel = backend == "triton" or (backend == "auto" and DEV == "cuda")
    assert len(kernel_calls) == int(expect_kernel)
    assert_matches(out.cpu(), reference(x, w, b, s))


def test_dispatch_errors(monkeypatch):
    x, w, b, _ = make_inputs(1, 3, 5, device="cpu")
    with pytest.raises(BackendError, match="unknown backend"):
        causal_conv1d(x, w, b, backend="cuda-graphs")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # interpret_mode() reads the variable on each call
    with pytest.raises(BackendError, match="triton"):
        causal_conv1d(x, w, b, backend="triton")


@pytest.mark.parametrize("which", ["x", "weight", "bias", "initial_state"])
def test_grad_falls_back_to_reference(kernel_calls, which):
    """With an input requiring grad the Triton backend runs the reference, and gradients reach every input."""
    inputs = dict(zip(("x", "weight", "bias", "initial_state"), make_inputs(2, 9, 7, state=True)))
    inputs[which] = inputs[which].detach().clone().requires_grad_()
    out = causal_conv1d(**inputs, backend="triton")
    assert kernel_calls == [] and out.requires_grad
    dy = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * dy).sum(), inputs[which])
    ref_in = {k: v.detach().clone().requires_grad_(k == which) for k, v in inputs.items()}
    (g_ref,) = torch.autograd.grad((causal_conv1d_ref(**ref_in) * dy).sum(), ref_in[which])
    assert_matches(g, g_ref)
    with torch.no_grad():
        causal_conv1d(**inputs, backend="triton")
    assert kernel_calls == [1]


def test_reference_works_without_triton():
    """ops/conv1d is the CPU path: it imports, and its reference runs through the dispatcher, with triton absent."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from simba_convert.ops.conv1d import causal_conv1d\n"
        "print(causal_conv1d(torch.randn(1, 3, 2), torch.randn(2, 4)).shape)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "torch.Size([1, 3, 2])"


# ---- GPU ----------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_kernel_realistic_shape_gpu(kernels):
    """The 1.4B mixer's conv: B=2, L=2048, D=4096, bf16, x strided as in_proj's first half, a state."""
    x, w, b, s = make_inputs(2, 2048, 4096, state=True, dtype=torch.bfloat16, device="cuda")
    out = kernels.causal_conv1d_triton(x, w, b, s, out=poison_like(torch.empty(x.shape, dtype=x.dtype, device="cuda")))
    assert_matches(out.float().cpu(), reference(x, w, b, s), torch.bfloat16)
