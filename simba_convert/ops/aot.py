"""Ahead-of-time compilation of our Triton kernels for the ONNX Runtime library (kernels/, issue 18).

    python3 -m simba_convert.ops.aot --out kernels/build/aot [--arch 80,90]

compiles the kernels the PyTorch model runs for a Mamba-1 layer's custom ops — the selective-scan forward
(`scan/triton_seq.py`), the fused `last` impact score (`score/triton.py`), the causal conv
(`conv1d/triton.py`) — and the choice of the kept tokens (`pruning/select_triton.py`) into cubins for each target
architecture and each specialisation the library launches (`specs()`), and writes them as C arrays with a table
describing each one (`simba_aot_kernels.c`, `simba_aot_kernels.h`). `kernels/aot_ops.cu` holds the host code that
launches them with the same launch rules as `scan_forward` and `impact_score_triton`; `kernels/build.sh --aot` runs
this module and compiles both into libsimba_ort_ops.so. So PyTorch and ONNX Runtime run one kernel source.

No GPU is needed: Triton compiles for a named target (`GPUTarget("cuda", arch, 32)`). Each kernel's argument list
is checked against the one its C launcher passes (`SCAN_ARGS`, `LAST_ARGS`, `SUMS_ARGS`, `CONV_ARGS`,
`SELECT_ARGS`): a change to a kernel's arguments fails here, at build time, instead of corrupting a launch.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

# Each kernel's arguments in order; the C launchers (kernels/aot_ops.cu) pass the non-constexpr ones in exactly
# this order. A kernel whose arguments change fails `_kernel` below, at build time.
SCAN_ARGS = (
    "u_ptr", "dl_ptr", "z_ptr", "b_ptr", "c_ptr", "a2t_ptr", "dskip_ptr", "bias_ptr", "h0_ptr",
    "y_ptr", "last_ptr", "chk_ptr", "hend_ptr", "dsum_ptr",
    "L", "Dm", "N", "n_chunks", "seg_len", "n_seg",
    "su_b", "su_t", "su_d", "sdl_b", "sdl_t", "sdl_d", "sz_b", "sz_t", "sz_d",
    "sb_b", "sb_t", "sb_n", "sc_b", "sc_t", "sc_n", "sy_b", "sy_t", "sy_d",
    "HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "HAS_H0", "STORE_LAST", "SAVE_CHK", "SPLIT", "READOUT",
    "T", "BD", "NP", "STAGES", "EVEN_N",
)
LAST_ARGS = (
    "u_ptr", "delta_ptr", "bias_ptr", "a2t_ptr", "b_ptr", "c_ptr", "tlast_ptr", "mask_ptr", "sums_ptr", "part_ptr",
    "L", "D", "s_ub", "s_ul", "s_ud", "s_db", "s_dl", "s_dd", "s_bb", "s_bl", "s_bn", "s_cb", "s_cl", "s_cn",
    "s_mb", "s_ml", "s_sb", "s_sc", "s_pb", "s_pd", "CHUNK_TILES",
    "N", "HAS_MASK", "HAS_CARRY", "SIGNED", "HAS_BIAS", "SOFTPLUS", "BLOCK_T", "BLOCK_D",
)
CONV_ARGS = (
    "x_ptr", "w_ptr", "bias_ptr", "state_ptr", "out_ptr", "L", "D",
    "s_xb", "s_xl", "s_xd", "s_wd", "s_wk", "s_sb", "s_sd", "s_sk", "s_ob", "s_ol", "s_od",
    "K", "HAS_BIAS", "HAS_STATE", "SILU", "BLOCK_L", "BLOCK_D",
)
SUMS_ARGS = (
    "delta_ptr", "bias_ptr", "mask_ptr", "sums_ptr", "L", "D", "s_db", "s_dl", "s_dd", "s_mb", "s_ml", "s_sb", "s_sc",
    "CHUNK", "HAS_MASK", "HAS_BIAS", "SOFTPLUS", "BLOCK_T", "BLOCK_D",
)
SELECT_ARGS = ("s_ptr", "out_ptr", "L", "n_prot", "k", "s_row", "o_row", "BLOCK")
SELECT_BLOCKS = range(4, 15)  # log2 of the selection's row block: 16 ... 16384 (select_triton.MAX_L)
NP = 16  # d_state of the compiled kernels (Mamba-1's); aot_ops.cu refuses others
DTYPES = {0: "fp32", 1: "fp16"}  # the C launchers' `half` flag -> element type of the T-typed tensors


@dataclass(frozen=True)
class Spec:
    """One specialisation of one kernel: `op` and `variant` are its keys in the C table (aot_ops.cu's kOp*)."""

    op: int
    variant: int
    module: str  # simba_convert.<module>
    kernel: str
    args: tuple
    const: dict  # constexpr values (the unit strides included)
    typed: tuple  # pointer arguments of the T element type (the rest are fp32, or as `pointers` says)
    d_multiples: tuple  # integers that are multiples of 16 whenever D is
    warps: int
    pointers: tuple = ()  # (name, Triton element type) of pointers of another fixed type
    per_dtype: bool = True  # False: one cubin (fp32, aligned) serves every T; the table keys it half 0, aligned 1


@functools.lru_cache(maxsize=1)
def specs() -> tuple[Spec, ...]:
    """Every specialisation the library launches, with the block sizes, stages and warps read from the launch
    configs the PyTorch side uses (so the cubins follow them; aot_ops.cu's copies are checked by the plan tests)."""
    from .conv1d.triton import default_config as conv_config
    from .scan.triton import CHUNK, SEQ_AUTO
    from ..pruning.select_triton import num_warps_for
    from .score.triton import default_config as score_config

    chunked = score_config("last", 1, True, 128)  # the B = 1 layout: chunks, 16 channels
    wide, many = (score_config("last", n, True, None) for n in (1, 2048))  # 32 channels: below / from 2048 programs
    conv = conv_config()
    scan_const = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=False, STORE_LAST=True,
                      SAVE_CHK=False, T=CHUNK, BD=SEQ_AUTO["fwd_block_d"], NP=NP, STAGES=SEQ_AUTO["fwd_stages"],
                      EVEN_N=True, su_d=1, sdl_d=1, sz_d=1, sb_n=1, sc_n=1, sy_d=1)
    score_const = dict(N=NP, HAS_MASK=False, SIGNED=False, HAS_BIAS=True, SOFTPLUS=True, BLOCK_T=chunked["block_t"],
                       s_ud=1, s_dd=1, s_bn=1, s_cn=1)
    scan = dict(module="ops.scan.triton_seq", kernel="_scan_fwd_seq_kernel", args=SCAN_ARGS,
                typed=("u_ptr", "dl_ptr", "z_ptr", "y_ptr"),
                d_multiples=("Dm", "su_b", "su_t", "sdl_b", "sdl_t", "sz_b", "sz_t", "sy_b", "sy_t"),
                warps=SEQ_AUTO["fwd_warps"])
    last = dict(module="ops.score.triton", kernel="_last_kernel", args=LAST_ARGS,
                typed=("u_ptr", "delta_ptr", "b_ptr", "c_ptr"),
                d_multiples=("D", "s_ub", "s_ul", "s_db", "s_dl", "s_sb", "s_sc"))
    return (
        # op 0, the scan forward (scan_forward): 0 one sequential pass, 1 split pass 1 (segment summaries), 2 pass 2
        Spec(0, 0, const=dict(scan_const, SPLIT=False, READOUT=True), **scan),
        Spec(0, 1, const=dict(scan_const, SPLIT=True, READOUT=False, HAS_D=False, HAS_Z=False, STORE_LAST=False),
             **scan),
        Spec(0, 2, const=dict(scan_const, SPLIT=True, READOUT=True), **scan),
        # op 1, the `last` score's per-chunk delta sums (score/triton.py _launch_last, chunked layout)
        Spec(1, 0, "ops.score.triton", "_delta_chunk_sums_kernel", SUMS_ARGS,
             dict(HAS_MASK=False, HAS_BIAS=True, SOFTPLUS=True, BLOCK_T=chunked["block_t"],
                  BLOCK_D=chunked["block_d"], s_dd=1),
             ("delta_ptr",), ("D", "s_db", "s_dl", "s_sb", "s_sc"), chunked["num_warps"]),
        # op 2, the `last` score (default_config with fused softplus): 0 chunked, 1 unchunked below 2048 programs,
        # 2 from 2048 programs
        *(Spec(2, v, const=dict(score_const, HAS_CARRY=v == 0, BLOCK_D=c["block_d"]), warps=c["num_warps"], **last)
          for v, c in enumerate((chunked, wide, many))),
        # op 3, the causal conv (conv1d/triton.py's launch config; width 4, bias, no initial state): 0 with SiLU,
        # 1 without
        *(Spec(3, v, "ops.conv1d.triton", "_causal_conv1d_fwd_kernel", CONV_ARGS,
               dict(K=4, HAS_BIAS=True, HAS_STATE=False, SILU=v == 0, BLOCK_L=conv.block_l, BLOCK_D=conv.block_d,
                    s_xd=1, s_wk=1, s_od=1),
               ("x_ptr", "out_ptr"), ("D", "s_xb", "s_xl", "s_ob", "s_ol"), conv.num_warps) for v in (0, 1)),
        # op 4, the kept tokens (select_kept_dense_rows_triton): variant v holds rows of up to 2^v scores
        *(Spec(4, v, "pruning.select_triton", "_select_kept_rows_kernel", SELECT_ARGS, dict(BLOCK=1 << v), (), (),
               num_warps_for(1 << v), pointers=(("out_ptr", "i64"),), per_dtype=False) for v in SELECT_BLOCKS),
    )


@dataclass(frozen=True)
class Compiled:
    op: int
    variant: int
    arch: int
    half: int
    aligned: int
    cubin: bytes
    function: str
    shared: int
    threads: int
    scratch_params: int  # trailing pointer parameters the Triton ABI adds (global / profile scratch)


def _kernel(spec: Spec):
    import importlib

    k = getattr(importlib.import_module(f"simba_convert.{spec.module}"), spec.kernel)
    if tuple(k.arg_names) != spec.args:
        raise SystemExit(f"error: {spec.kernel}'s arguments changed; update its argument list in "
                         "simba_convert/ops/aot.py and its launcher in kernels/aot_ops.cu together "
                         f"(now: {', '.join(k.arg_names)})")
    return k


def compile_spec(spec: Spec, arch: int, half: int, aligned: int) -> Compiled:
    """One cubin of `spec` for compute capability `arch` (e.g. 90), element type `half` and alignment."""
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = _kernel(spec)
    sig = {}
    for name in spec.args:
        if name in spec.const:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + dict(spec.pointers).get(name, DTYPES[half] if name in spec.typed else "fp32")
        else:
            sig[name] = "i32"
    hinted = [n for n in spec.args if n.endswith("_ptr")] + (list(spec.d_multiples) if aligned else [])
    hinted += [n for n in ("N",) if n in spec.args and n not in spec.const]
    attrs = {(spec.args.index(n),): [["tt.divisibility", 16]] for n in hinted}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=dict(spec.const), attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    opts = backend.parse_options({"num_warps": spec.warps, "num_stages": 1})
    cc = triton.compile(src, target=target, options=opts.__dict__)
    md = cc.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise SystemExit(f"error: {spec.kernel} needs Triton global scratch memory; the AOT launcher passes none")
    extra = int(hasattr(md, "global_scratch_size")) + int(hasattr(md, "profile_scratch_size"))
    return Compiled(spec.op, spec.variant, arch, half, aligned, cc.asm["cubin"], md.name, md.shared,
                    spec.warps * 32, extra)


def c_sources(kernels: list[Compiled], triton_version: str) -> tuple[str, str]:
    """(header, source) declaring and defining `simba_aot_kernels`, the table aot_ops.cu searches."""
    header = """// Generated by `python3 -m simba_convert.ops.aot`; do not edit. Our Triton kernels' cubins.
#pragma once
#include <stddef.h>

typedef struct {
  int op;              // 0 scan forward, 1 `last` score's chunk sums, 2 `last` score, 3 causal conv, 4 kept tokens
  int variant;         // the op's specialisation (specs() there)
  int arch;            // compute capability major*10 + minor the cubin was built for
  int half;            // 1: u, delta, z, y are fp16; 0: fp32
  int aligned;         // 1: compiled assuming D % 16 == 0
  const unsigned char* cubin;
  size_t cubin_size;
  const char* function;
  unsigned shared;     // dynamic shared memory bytes
  unsigned threads;    // threads per block
  int scratch_params;  // trailing null pointer parameters of Triton's ABI
} simba_aot_kernel;

#ifdef __cplusplus
extern "C" {
#endif
extern const simba_aot_kernel simba_aot_kernels[];
extern const int simba_aot_kernel_count;
extern const char simba_aot_triton_version[];
#ifdef __cplusplus
}
#endif
"""
    body = ['// Generated by `python3 -m simba_convert.ops.aot`; do not edit.', '#include "simba_aot_kernels.h"', ""]
    for i, k in enumerate(kernels):
        data = ",".join(str(b) for b in k.cubin)
        body.append(f"static const unsigned char cubin_{i}[{len(k.cubin)}] = {{{data}}};")
    body.append("const simba_aot_kernel simba_aot_kernels[] = {")
    for i, k in enumerate(kernels):
        body.append(f'  {{{k.op}, {k.variant}, {k.arch}, {k.half}, {k.aligned}, cubin_{i}, sizeof(cubin_{i}), '
                    f'"{k.function}", '
                    f"{k.shared}u, {k.threads}u, {k.scratch_params}}},")
    body.append("};")
    body.append(f"const int simba_aot_kernel_count = {len(kernels)};")
    body.append(f'const char simba_aot_triton_version[] = "{triton_version}";')
    return header, "\n".join(body) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for simba_aot_kernels.{c,h}")
    ap.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated (80 = sm_80, 90 = sm_90)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        import triton
    except ImportError:
        print("error: AOT compilation needs triton (a dependency of simba-convert on Linux: pip install triton)",
              file=sys.stderr)
        return 1
    archs = [int(a) for a in args.arch.split(",") if a]
    kernels = []
    for arch in archs:
        for half in DTYPES:
            for aligned in (1, 0):
                for spec in specs():
                    if not spec.per_dtype and (half or not aligned):
                        continue
                    kernels.append(compile_spec(spec, arch, half, aligned))
                    if not args.quiet:
                        print(f"sm_{arch} {spec.kernel} variant {spec.variant} {DTYPES[half]} aligned={aligned}: "
                              f"{len(kernels[-1].cubin):,} bytes", file=sys.stderr)
    header, source = c_sources(kernels, triton.__version__)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("simba_aot_kernels.h", header), ("simba_aot_kernels.c", source)):
        tmp = args.out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
