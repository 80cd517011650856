"""Our Triton kernels compiled ahead of time for the ONNX Runtime library (simba_convert/ops/aot.py,
kernels/aot_ops.cu): the argument lists the launchers pass, offline compilation for sm_90, the generated table,
the launch plans against the PyTorch side's rules, a clean refusal without a GPU, and (GPU) parity with the
JIT-compiled kernels the PyTorch model runs."""

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simba_convert.ops import aot

from tolerance import assert_matches, poison_like

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("triton")


def run_clean(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter without TRITON_INTERPRET (conftest sets it on CPU machines): Triton's
    compiler only takes real JIT functions."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def test_kernel_arguments_match_the_launchers_and_a_change_fails():
    r = run_clean(
        "import dataclasses, json\n"
        "from simba_convert.ops import aot\n"
        "for s in aot.specs(): aot._kernel(s)\n"
        "bad = dataclasses.replace(aot.specs()[0], args=aot.specs()[0].args[:-1])\n"
        "try:\n    aot._kernel(bad)\nexcept SystemExit as e:\n    print(json.dumps(str(e)))\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "arguments changed" in json.loads(r.stdout.strip().splitlines()[-1])


def test_compiles_offline_for_sm90():
    r = run_clean(
        "import json\nfrom simba_convert.ops import aot\n"
        "out = []\n"
        "for i in (0, 5):\n"
        "    k = aot.compile_spec(aot.specs()[i], 90, 1, 1)\n"
        "    out.append(dict(elf=k.cubin[:4].hex(), size=len(k.cubin), fn=k.function, threads=k.threads,\n"
        "                    scratch=k.scratch_params, shared=k.shared))\n"
        "print(json.dumps(out))\n")
    if r.returncode != 0 and "ptxas" in r.stderr:
        pytest.skip(f"this triton cannot assemble for sm_90 here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    scan, score = json.loads(r.stdout.strip().splitlines()[-1])
    assert scan["elf"] == "7f454c46" and score["elf"] == "7f454c46"  # cubins are ELF files
    assert scan["fn"] == "_scan_fwd_seq_kernel" and score["fn"] == "_last_kernel"
    assert scan["threads"] == 32 and score["threads"] == 128  # the specs' warps: 1 and 4
    assert scan["scratch"] in (0, 1, 2) and scan["size"] > 1000


def test_c_table_lists_every_cubin():
    ks = [aot.Compiled(0, v, 90, 1, 1, bytes([1, 2, 3 + v]), "_scan_fwd_seq_kernel", 0, 32, 2) for v in range(3)]
    header, source = aot.c_sources(ks, "9.9.9")
    assert "simba_aot_kernel" in header and "int scratch_params;" in header
    assert source.count("static const unsigned char cubin_") == 3
    assert "cubin_2[3] = {1,2,5};" in source
    assert '{0, 1, 90, 1, 1, cubin_1, sizeof(cubin_1), "_scan_fwd_seq_kernel", 0u, 32u, 2},' in source
    assert "simba_aot_kernel_count = 3;" in source and '"9.9.9"' in source


_built: dict = {}


@pytest.fixture(scope="module")
def aot_lib(tmp_path_factory) -> ctypes.CDLL:
    """libsimba_ort_ops.so built with --aot (sm_90 only, to halve the build): prebuilt by SIMBA_AOT_LIB, else
    built here when nvcc and g++ are present."""
    if os.environ.get("SIMBA_AOT_LIB"):
        return load(Path(os.environ["SIMBA_AOT_LIB"]))
    if "lib" not in _built:
        if shutil.which("nvcc") is None or shutil.which("g++") is None:
            pytest.skip("no nvcc/g++ to build kernels/ with --aot")
        out = tmp_path_factory.mktemp("aotlib")
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env.update(SIMBA_AOT_ARCHS="90", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        r = subprocess.run(["bash", str(ROOT / "kernels" / "build.sh"), "--aot", "--out", str(out)],
                           capture_output=True, text=True, timeout=900, env=env)
        if r.returncode != 0 and "headers" in r.stderr:
            pytest.skip(f"kernels/build.sh could not get the ONNX Runtime headers: {r.stderr.strip()[-300:]}")
        assert r.returncode == 0, r.stderr[-3000:]
        _built["lib"] = load(out / "libsimba_ort_ops.so")
    return _built["lib"]


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i64, c = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.simba_aot_scan_segments.argtypes = [i64, i64, i64, ctypes.POINTER(i64)]
    lib.simba_aot_scan_segments.restype = i64
    lib.simba_aot_score_plan.argtypes = [i64, i64, i64, ctypes.POINTER(i64)]
    lib.simba_aot_selective_scan.argtypes = [c] + [p] * 10 + [i64, i64, i64, c, p, ctypes.c_size_t, p]
    lib.simba_aot_impact_score_last.argtypes = [c] + [p] * 7 + [i64, i64, i64, c, i64, p, ctypes.c_size_t, p]
    lib.simba_aot_causal_conv1d.argtypes = [c] + [p] * 4 + [i64, i64, i64, c, c, p]
    lib.simba_aot_select_kept.argtypes = [p, p, i64, i64, i64, i64, p]
    lib.simba_cuda_select_kept_host.argtypes = [p, p, i64, i64, i64, i64, p]
    lib.simba_aot_last_error.restype = ctypes.c_char_p
    return lib


SHAPES = [(1, 1, 4096), (1, 255, 4096), (1, 256, 4096), (1, 2048, 4096), (4, 2048, 4096), (16, 2048, 4096),
          (1, 8192, 1536), (3, 1000, 100), (1, 127, 768), (2, 128, 768), (8, 4096, 2048), (64, 512, 1536)]


@pytest.mark.parametrize("B,L,D", SHAPES)
def test_scan_plan_is_scan_forwards(aot_lib, B, L, D):
    from simba_convert.ops.scan import triton as st

    cfg = st.resolve_forward(st.LaunchConfig(), B, D, L, save_checkpoints=False)
    want = cfg.fwd_splits if cfg.fwd_kind == "split" else 1  # "seq" and "chunk" are one pass in the library
    seg_len = ctypes.c_int64()
    assert aot_lib.simba_aot_scan_segments(B, L, D, ctypes.byref(seg_len)) == want
    assert seg_len.value == (st._segments(L, want)[0] if want > 1 else L)


@pytest.mark.parametrize("B,L,D", SHAPES)
def test_score_plan_is_impact_score_tritons(aot_lib, B, L, D):
    from simba_convert.ops.score import triton as sc

    cfg = sc.default_config("last", B * -(-D // 32), True, L)
    n_tiles = -(-L // cfg["block_t"])
    chunks = max(1, min(cfg.get("chunks", 1), n_tiles))
    chunk_tiles = -(-n_tiles // chunks)
    chunks = -(-n_tiles // chunk_tiles)
    variant = 0 if chunks > 1 else {4: 1, 2: 2}[cfg["num_warps"]]
    out = (ctypes.c_int64 * 4)()
    aot_lib.simba_aot_score_plan(B, L, D, out)
    assert list(out) == [variant, cfg["block_d"], chunks, chunk_tiles if chunks > 1 else n_tiles]


def test_without_a_gpu_the_launch_is_refused_cleanly(aot_lib):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert aot_lib.simba_aot_available() == 0
    rc = aot_lib.simba_aot_selective_scan(0, *([None] * 10), 1, 64, 32, 16, None, 0, None)
    assert rc == -1 or rc > 0  # unsupported (no driver library) or a CUDA error code: never a crash
    if rc == -1:
        assert aot_lib.simba_aot_last_error().decode()
    rc = aot_lib.simba_aot_selective_scan(0, *([None] * 10), 1, 64, 32, 8, None, 0, None)
    assert rc == -1 and b"d_state 16" in aot_lib.simba_aot_last_error()
    rc = aot_lib.simba_aot_causal_conv1d(0, *([None] * 4), 1, 64, 32, 3, 1, None)
    assert rc == -1 and b"width 4" in aot_lib.simba_aot_last_error()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("B,L,D", [(1, 2048, 1536), (2, 100, 96), (1, 300, 64), (4, 63, 256)])
def test_gpu_aot_kernels_match_the_jit_ones(aot_lib, dtype, B, L, D):
    from simba_convert.ops.conv1d import causal_conv1d
    from simba_convert.ops.scan import selective_scan
    from simba_convert.ops.score import impact_score

    if not aot_lib.simba_aot_available():
        pytest.skip("no cubin for this GPU in the library")
    N, P = 16, 8
    g = torch.Generator(device="cuda").manual_seed(1)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x, dt, z = r(B, L, D).to(dtype), (r(B, L, D) - 2).to(dtype), r(B, L, D).to(dtype)
    Bm, Cm = r(B, L, N).to(dtype), r(B, L, N).to(dtype)
    A, Dk, bias = -torch.rand(D, N, device="cuda", generator=g) * 4, r(D), r(D) * 0.5
    y, last = poison_like(x), poison_like(torch.empty(B, D, N, device="cuda"))
    score = poison_like(torch.empty(B, L, device="cuda"))
    half, stream = int(dtype == torch.float16), torch.cuda.current_stream().cuda_stream
    rc = aot_lib.simba_aot_selective_scan(half, *(t.data_ptr() for t in (x, dt, A, Bm, Cm, Dk, z, bias, y, last)),
                                          B, L, D, N, None, 0, stream)
    assert rc == 0, aot_lib.simba_aot_last_error()
    rc = aot_lib.simba_aot_impact_score_last(half, *(t.data_ptr() for t in (x, dt, bias, A, Bm, Cm, score)),
                                             B, L, D, N, P, None, 0, stream)
    assert rc == 0, aot_lib.simba_aot_last_error()
    torch.cuda.synchronize()
    y_ref, last_ref = selective_scan(x, dt, A, Bm, Cm, Dk, z, bias, True, return_last_state=True, backend="triton")
    s_ref = impact_score(x, dt, A, Bm, Cm, criterion="last", delta_bias=bias, delta_softplus=True, backend="triton")
    assert_matches(y, y_ref, dtype)
    assert_matches(last, last_ref.float())
    assert_matches(score[:, : L - P], s_ref[:, : L - P])
    assert torch.isinf(score[:, L - P:]).all()
    w, wb = r(D, 4) * 0.5, r(D) * 0.1
    for silu in (1, 0):
        u = poison_like(x)
        rc = aot_lib.simba_aot_causal_conv1d(half, x.data_ptr(), w.data_ptr(), wb.data_ptr(), u.data_ptr(), B, L, D, 4,
                                             silu, stream)
        assert rc == 0, aot_lib.simba_aot_last_error()
        torch.cuda.synchronize()
        assert_matches(u, causal_conv1d(x, w, wb, activation="silu" if silu else None, backend="triton"), dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("B,L", [(1, 1), (2, 63), (3, 100), (1, 2048), (4, 2048), (2, 5000), (1, 16384)])
def test_gpu_aot_selection_is_the_jit_ones_and_the_host_fallback_agrees(aot_lib, B, L):
    from simba_convert.pruning.select import select_kept_dense_rows_ref
    from simba_convert.pruning.select_triton import select_kept_dense_rows_triton

    if not aot_lib.simba_aot_available():
        pytest.skip("no cubin for this GPU in the library")
    g = torch.Generator(device="cuda").manual_seed(L)
    score = torch.randn(B, L, device="cuda", generator=g).round(decimals=1)  # ties at the threshold
    stream = torch.cuda.current_stream().cuda_stream
    for protect, k in {(0, 1), (min(L, 64), max(min(L, 64), (L * 3) // 5)), (min(L, 7), L)}:
        jit = select_kept_dense_rows_triton(score, protect, k)
        ref = select_kept_dense_rows_ref(score.clone(), protect, k)
        for fn in (aot_lib.simba_aot_select_kept, aot_lib.simba_cuda_select_kept_host):
            slots = torch.full((B, k), -7, dtype=torch.int64, device="cuda")
            rc = fn(score.data_ptr(), slots.data_ptr(), B, L, k, protect, stream)
            assert rc == 0, aot_lib.simba_aot_last_error()
            torch.cuda.synchronize()
            assert torch.equal(slots, jit), (fn.__name__, protect, k)
        assert torch.equal(jit, ref)
