"""Ahead-of-time compilation of our Triton kernels for the ONNX Runtime library (kernels/, issue 18).

    python3 -m simba_convert.ops.aot --out kernels/build/aot [--arch 80,90]

compiles the selective-scan forward kernel (`scan/triton_seq.py`, the kernel the PyTorch model runs) into cubins
for each target architecture and each specialisation the library launches, and writes them as C arrays with a
table describing each one (`simba_aot_kernels.c`, `simba_aot_kernels.h`). `kernels/aot_ops.cu` holds the host
code that launches them (the same launch rules as `scan/triton.py`'s `scan_forward`); `kernels/build.sh --aot`
runs this module and compiles both into libsimba_ort_ops.so. So PyTorch and ONNX Runtime run one kernel source.

No GPU is needed: Triton compiles for a named target (`GPUTarget("cuda", arch, 32)`). The kernel's parameter list
is checked against the one the C launcher passes (`SCAN_PARAMS`): a change to the kernel's arguments fails here,
at build time, instead of corrupting a launch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

# The seq kernel's arguments in order; the C launcher (kernels/aot_ops.cu, scan_params) passes the non-constexpr
# ones in exactly this order.
SCAN_ARGS = (
    "u_ptr", "dl_ptr", "z_ptr", "b_ptr", "c_ptr", "a2t_ptr", "dskip_ptr", "bias_ptr", "h0_ptr",
    "y_ptr", "last_ptr", "chk_ptr", "hend_ptr", "dsum_ptr",
    "L", "Dm", "N", "n_chunks", "seg_len", "n_seg",
    "su_b", "su_t", "su_d", "sdl_b", "sdl_t", "sdl_d", "sz_b", "sz_t", "sz_d",
    "sb_b", "sb_t", "sb_n", "sc_b", "sc_t", "sc_n", "sy_b", "sy_t", "sy_d",
    "HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "HAS_H0", "STORE_LAST", "SAVE_CHK", "SPLIT", "READOUT",
    "T", "BD", "NP", "STAGES", "EVEN_N",
)
UNIT_STRIDES = ("su_d", "sdl_d", "sz_d", "sb_n", "sc_n", "sy_d")  # contiguous last dimensions: constant 1
# Integers that are multiples of 16 whenever D is (the "aligned" variant tells the compiler so, as Triton's JIT
# does by itself when it sees such values).
D_MULTIPLES = ("Dm", "su_b", "su_t", "sdl_b", "sdl_t", "sz_b", "sz_t", "sy_b", "sy_t")
KINDS = {  # kind id in the C table: the constexpr flags of the launch (`scan_forward`'s, inference, no h0)
    0: dict(SPLIT=False, READOUT=True),  # seq: one pass
    1: dict(SPLIT=True, READOUT=False, HAS_D=False, HAS_Z=False, STORE_LAST=False),  # split pass 1: summaries
    2: dict(SPLIT=True, READOUT=True),  # split pass 2: readout
}
BLOCK_D, WARPS, STAGES, NP, CHUNK = 32, 1, 3, 16, 16  # scan/triton.py SEQ_AUTO, N = 16 (Mamba-1), CHUNK
DTYPES = {0: "fp32", 1: "fp16"}  # the C launcher's `half` flag -> u, delta, z, y element type


@dataclass(frozen=True)
class Compiled:
    arch: int
    kind: int
    half: int
    aligned: int
    cubin: bytes
    function: str
    shared: int
    threads: int
    scratch_params: int  # trailing pointer parameters the Triton ABI adds (global / profile scratch)


def _scan_kernel():
    from .scan import triton_seq

    k = triton_seq._scan_fwd_seq_kernel
    if tuple(k.arg_names) != SCAN_ARGS:
        raise SystemExit("error: _scan_fwd_seq_kernel's arguments changed; update SCAN_ARGS here and scan_params "
                         f"in kernels/aot_ops.cu together (now: {', '.join(k.arg_names)})")
    return k


def compile_scan(arch: int, kind: int, half: int, aligned: int) -> Compiled:
    """One cubin of the seq/split scan forward for `arch` (e.g. 90), launch `kind`, element type and alignment."""
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = _scan_kernel()
    const = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=False, STORE_LAST=True,
                 SAVE_CHK=False, T=CHUNK, BD=BLOCK_D, NP=NP, STAGES=STAGES, EVEN_N=True)
    const.update(KINDS[kind])
    const.update({name: 1 for name in UNIT_STRIDES})
    sig = {}
    for i, name in enumerate(SCAN_ARGS):
        if name in const:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            elem = DTYPES[half] if name in ("u_ptr", "dl_ptr", "z_ptr", "y_ptr") else "fp32"
            sig[name] = "*" + elem
        else:
            sig[name] = "i32"
    hinted = [n for n in SCAN_ARGS if n.endswith("_ptr")] + (list(D_MULTIPLES) + ["N"] if aligned else ["N"])
    attrs = {(SCAN_ARGS.index(n),): [["tt.divisibility", 16]] for n in hinted}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=const, attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    opts = backend.parse_options({"num_warps": WARPS, "num_stages": 1})
    cc = triton.compile(src, target=target, options=opts.__dict__)
    md = cc.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise SystemExit("error: the scan kernel needs Triton global scratch memory; the AOT launcher passes none")
    extra = int(hasattr(md, "global_scratch_size")) + int(hasattr(md, "profile_scratch_size"))
    return Compiled(arch, kind, half, aligned, cc.asm["cubin"], md.name, md.shared, WARPS * 32, extra)


def c_sources(kernels: list[Compiled], triton_version: str) -> tuple[str, str]:
    """(header, source) declaring and defining `simba_aot_kernels`, the table aot_ops.cu searches."""
    header = """// Generated by `python3 -m simba_convert.ops.aot`; do not edit. Cubins of our Triton kernels (issue 18).
#pragma once
#include <stddef.h>

typedef struct {
  int arch;            // compute capability major*10 + minor the cubin was built for
  int kind;            // 0 seq, 1 split pass 1 (summaries), 2 split pass 2 (readout)
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
        body.append(f'  {{{k.arch}, {k.kind}, {k.half}, {k.aligned}, cubin_{i}, sizeof(cubin_{i}), "{k.function}", '
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
        print("error: AOT compilation needs triton (a dependency of simba-convert on Linux: pip install triton)", file=sys.stderr)
        return 1
    archs = [int(a) for a in args.arch.split(",") if a]
    kernels = []
    for arch in archs:
        for half in DTYPES:
            for aligned in (1, 0):
                for kind in KINDS:
                    kernels.append(compile_scan(arch, kind, half, aligned))
                    if not args.quiet:
                        print(f"sm_{arch} scan kind {kind} {DTYPES[half]} aligned={aligned}: "
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
