"""SASS of our Triton kernels' loops, compiled offline for sm_90 (no GPU needed): a survey for layout problems.

Question: does the installed triton pick a layout that costs shuffles, shared-memory round trips and barriers in a
kernel's hot loop? Triton 3.6's coalescer tie-break did that to the scan's [NP, BD] accesses (SHFL + STS/LDS + BAR
every step, 315 SASS instructions a step against 177 after commit 6793e79). Each registry entry is one kernel at
the launch parameters its launcher uses for a real layer (Mamba-1 1.4B, Mamba-2 2.7B, bf16, B=1, L=2048), with
the argument specialisation the JIT would make (pointers and ints divisible by 16 get tt.divisibility 16, ints
equal to 1 become constexpr 1). For every loop (a backward branch in the SASS) it counts instructions and the
interesting opcodes; it also lists the TTGIR's #blocked layouts and the convert_layout ops inside scf.for bodies.

    PYTHONPATH=/tmp/t36:. python3 benchmarks/investigations/sass_loops.py --out benchmarks/results/sass_loops_triton36.json
    PYTHONPATH=/tmp/t36:. python3 benchmarks/investigations/sass_loops.py --rev 5a22df1 --only scan \
        --out benchmarks/results/sass_loops_triton36_5a22df1.json
    PYTHONPATH=. python3 benchmarks/investigations/sass_loops.py --out benchmarks/results/sass_loops_triton39.json

(/tmp/t36 holds a pip install --target of triton 3.6.0, the H200's version.) --rev REV compiles the registry's
modules as they were at git revision REV (loaded into the same package, so relative imports resolve); --only
keeps the entries whose name starts with one of the given prefixes; --dump DIR writes each kernel's TTGIR and SASS
there. A Markdown table is written next to --out (same name, .md).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # for the shared helper `common`
from common import command, commit  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
OPS = ["SHFL", "BAR", "LDS", "STS", "LDG", "STG", "MUFU", "FFMA", "FMUL", "FADD", "HMMA"]
BF, F32 = "*bf16", "*fp32"
L, B1 = 2048, 1  # B=1: the launches that gave the scan its split forward


def case(name, module, kernel, args, consts, num_warps, num_stages=3, steps_per_iter=1, hot="inner"):
    """A registry entry. args: name -> pointer type string, int or float (runtime args, in any order);
    steps_per_iter: time steps one iteration of the hot loop covers (BLOCK_T for tiled loops); hot: "inner"
    (the largest innermost loop is the time loop) or "outer" (the outermost is; inner loops run over P or N)."""
    return dict(name=name, module=module, kernel=kernel, args=args, consts=consts, num_warps=num_warps,
                num_stages=num_stages, steps_per_iter=steps_per_iter, hot=hot)


def scan_cases():
    """`_scan_fwd_seq_kernel` as `scan_forward` launches it with SEQ_AUTO sizes, 1.4B layer (D 4096, N 16)."""
    D, N, S = 4096, 16, 16  # S: auto_splits(128 programs, 2048) = 16 segments of 128 steps
    base = dict(u_ptr=BF, dl_ptr=BF, z_ptr=BF, b_ptr=F32, c_ptr=F32, a2t_ptr=F32, dskip_ptr=F32, bias_ptr=F32,
                h0_ptr=BF, y_ptr=BF, last_ptr=BF, chk_ptr=BF, hend_ptr=F32, dsum_ptr=F32,
                L=L, Dm=D, N=N, n_chunks=L // 16, seg_len=L // S, n_seg=S,
                su_b=L * D, su_t=D, su_d=1, sdl_b=L * D, sdl_t=D, sdl_d=1, sz_b=L * 2 * D, sz_t=2 * D, sz_d=1,
                sb_b=L * N, sb_t=N, sb_n=1, sc_b=L * N, sc_t=N, sc_n=1, sy_b=L * D, sy_t=D, sy_d=1)
    flags = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=False, STORE_LAST=False,
                 SAVE_CHK=False, SPLIT=True, READOUT=True, T=16, BD=32, NP=16, STAGES=3, EVEN_N=True)
    p1 = dict(flags, HAS_D=False, HAS_Z=False, READOUT=False)
    seq_args = dict(base, seg_len=L, n_seg=1, hend_ptr=BF, dsum_ptr=BF)
    mod, k = "simba_convert.ops.scan.triton_seq", "_scan_fwd_seq_kernel"
    return [case("scan_split_pass1", mod, k, base, p1, 1), case("scan_split_pass2", mod, k, base, flags, 1),
            case("scan_seq", mod, k, seq_args, dict(flags, SPLIT=False), 1)]


def score_cases():
    """Mamba-1 `last` (model call: raw bf16 dt + fp32 bias, softplus fused; default_config at B=1: 32 chunks)."""
    D, N, BT, BD, C = 4096, 16, 32, 16, 32
    nD, tiles = D // BD, (L // BT) // C
    last = dict(u_ptr=BF, delta_ptr=BF, bias_ptr=F32, a2t_ptr=F32, b_ptr=BF, c_ptr=BF, tlast_ptr=F32, mask_ptr=F32,
                sums_ptr=F32, part_ptr=F32, L=L, D=D, s_ub=L * D, s_ul=D, s_ud=1, s_db=L * D, s_dl=D, s_dd=1,
                s_bb=L * N, s_bl=N, s_bn=1, s_cb=L * N, s_cl=N, s_cn=1, s_mb=0, s_ml=0, s_sb=C * D, s_sc=D,
                s_pb=nD * L, s_pd=L, CHUNK_TILES=tiles)
    fl = dict(HAS_MASK=False, HAS_BIAS=True, SOFTPLUS=True, BLOCK_T=BT, BLOCK_D=BD)
    sums = dict(delta_ptr=BF, bias_ptr=F32, mask_ptr=F32, sums_ptr=F32, L=L, D=D, s_db=L * D, s_dl=D, s_dd=1,
                s_mb=0, s_ml=0, s_sb=C * D, s_sc=D, CHUNK=tiles * BT)
    mod = "simba_convert.ops.score.triton"
    return [case("score_last", mod, "_last_kernel", last, dict(fl, N=N, HAS_CARRY=True, SIGNED=False), 1,
                 steps_per_iter=BT),
            case("score_delta_sums", mod, "_delta_chunk_sums_kernel", sums, fl, 1, steps_per_iter=BT)]


def layer_cases():
    """Conv1d, add+RMSNorm, decoding steps (1.4B: d 2048, D 4096, K 4) and Mamba-2's gated norm (2.7B)."""
    D, K, N = 4096, 4, 16
    conv = dict(x_ptr=BF, w_ptr=BF, bias_ptr=BF, state_ptr=BF, out_ptr=BF, L=L, D=D, s_xb=L * 2 * D, s_xl=2 * D,
                s_xd=1, s_wd=K, s_wk=1, s_sb=0, s_sd=0, s_sk=0, s_ob=L * D, s_ol=D, s_od=1)
    rms = dict(h_ptr=BF, r_ptr=F32, w_ptr=BF, out_ptr=BF, rout_ptr=F32, d=2048, s_h=2048, s_r=2048, s_o=2048,
               s_ro=2048, eps=1e-5)
    grms = dict(y_ptr=BF, z_ptr=BF, w_ptr=BF, out_ptr=BF, D=5120, gs=5120, s_y=5120, s_z=10576, eps=1e-5)
    cstep = dict(x_ptr=BF, state_ptr=BF, w_ptr=BF, bias_ptr=BF, out_ptr=BF, new_state_ptr=BF, D=D,
                 s_xb=2 * D, s_xd=1, s_sb=3 * D, s_sd=3, s_sk=1, s_wd=K, s_wk=1, s_bd=1, s_ob=D, s_od=1,
                 s_nb=3 * D, s_nd=3, s_nk=1)
    sstep = dict(u_ptr=BF, dt_ptr=BF, A_ptr=F32, B_ptr=BF, C_ptr=BF, Dskip_ptr=F32, z_ptr=BF, dt_bias_ptr=F32,
                 state_ptr=F32, y_ptr=BF, new_state_ptr=F32, D=D, N=N, s_ub=D, s_ud=1, s_tb=D, s_td=1, s_ad=N,
                 s_an=1, s_Bb=160, s_Bn=1, s_Cb=160, s_Cn=1, s_Dd=1, s_zb=2 * D, s_zd=1, s_gd=1,
                 s_hb=D * N, s_hd=N, s_hn=1, s_yb=D, s_yd=1, s_nb=D * N, s_nd=N, s_nn=1)
    return [
        case("conv1d_fwd", "simba_convert.ops.conv1d.triton", "_causal_conv1d_fwd_kernel", conv,
             dict(K=K, HAS_BIAS=True, HAS_STATE=False, SILU=True, BLOCK_L=32, BLOCK_D=128), 2),
        case("add_rms_norm_fwd", "simba_convert.ops.rms_norm.triton", "_add_rms_norm_fwd_kernel", rms,
             dict(HAS_RES=True, STORE_RES=True, BLOCK=2048), 8),
        case("gated_rms_norm_fwd", "simba_convert.ops.rms_norm.triton", "_gated_rms_norm_fwd_kernel", grms,
             dict(NORM_BEFORE_GATE=False, BLOCK=8192), 8),
        case("conv_step", "simba_convert.ops.step.triton", "_conv_step_kernel", cstep,
             dict(K=K, KP=4, HAS_BIAS=True, SILU=True, BLOCK_D=128), 4),
        case("ssm_step", "simba_convert.ops.step.triton", "_ssm_step_kernel", sstep,
             dict(LOG2E=1.4426950408889634, NP=16, BLOCK_D=32), 4),
    ]


def ssd_cases():
    """Mamba-2 2.7B layer (H 80, P 64, G 1, N 128, chunk 64): the SSD forward (inference: tf32) and `last` score."""
    H, P, N, T, CD, DIP = 80, 64, 128, 64, 5376, 10576  # CD: conv_dim (x, B, C rows); DIP: in_proj width (dt rows)
    nc, mod = L // T, "simba_convert.ops.ssd.triton"
    xs = dict(sx_b=L * CD, sx_l=CD, sx_h=P, sx_p=1)
    bs = lambda p: {f"{p}_b": L * CD, f"{p}_l": CD, f"{p}_g": N, f"{p}_n": 1}  # noqa: E731
    cum = dict(dt_ptr=BF, bias_ptr=F32, a_ptr=F32, delta_ptr=F32, cum_ptr=F32, to_end_ptr=F32, L=L, H=H, nc=nc,
               sdt_b=L * DIP, sdt_l=DIP, sdt_h=1)
    outer = dict(x_ptr=BF, y_ptr=BF, delta_ptr=F32, cum_ptr=F32, to_end_ptr=F32, out_ptr=F32, L=L, H=H, P=P, N=N,
                 nc=nc, hpg=H, **xs, **bs("sy"))
    spass = dict(s_ptr=F32, cum_ptr=F32, h0_ptr=F32, hin_ptr=F32, final_ptr=F32, H=H, PN=P * N, nc=nc)
    cscan = dict(x_ptr=BF, b_ptr=BF, c_ptr=BF, a_ptr=F32, delta_ptr=F32, cum_ptr=F32, hin_ptr=F32, dskip_ptr=F32,
                 y_ptr=BF, L=L, H=H, P=P, N=N, nc=nc, hpg=H, **xs, **bs("sb"), **bs("sc"),
                 sy_b=L * H * P, sy_l=H * P, sy_h=P, sy_p=1)
    # score_ssd default_config at B=1: 4 heads a program (20 programs), 26 chunks of 5 tiles of 16 tokens.
    NHB, CH, CT = H // 4, 26, 5
    last = dict(x_ptr=BF, dt_ptr=BF, bias_ptr=F32, a2_ptr=F32, b_ptr=BF, ct_ptr=F32, mask_ptr=F32, carry_ptr=F32,
                part_ptr=F32, L=L, P=P, N=N, HPG=H, NHB=NHB, s_xb=L * CD, s_xl=CD, s_xh=P, s_xp=1,
                s_db=L * DIP, s_dl=DIP, s_dh=1, s_bb=L * CD, s_bl=CD, s_bg=N, s_bn=1, s_mb=0, s_ml=0,
                s_tb=N, s_tg=N, s_cb=CH * H, s_cc=H, s_pb=NHB * L, s_pk=L, CHUNK_TILES=CT)
    sums = dict(dt_ptr=BF, bias_ptr=F32, mask_ptr=F32, sums_ptr=F32, L=L, HPG=H, NHB=NHB, s_db=L * DIP, s_dl=DIP,
                s_dh=1, s_mb=0, s_ml=0, s_sb=CH * H, s_sc=H, CHUNK=CT * 16)
    sfl = dict(HAS_MASK=False, HAS_BIAS=True, SOFTPLUS=True, BLOCK_T=16, BLOCK_H=4)
    smod = "simba_convert.ops.score_ssd.triton"
    return [
        case("ssd_chunk_cumsum", mod, "_chunk_cumsum_kernel", cum, dict(HAS_BIAS=True, SOFTPLUS=True, T=T, BH=16), 4),
        case("ssd_chunk_outer", mod, "_chunk_outer_kernel", outer, dict(STATE=True, T=T, BP=64, BN=N, DOT="tf32"), 4),
        case("ssd_state_pass_fwd", mod, "_state_pass_fwd_kernel", spass,
             dict(HAS_H0=False, STORE_FINAL=False, T=T, BLK=1024), 4),
        case("ssd_chunk_scan_fwd", mod, "_chunk_scan_fwd_kernel", cscan,
             dict(HAS_D=True, T=T, BP=64, BN=N, DOT="tf32"), 4),
        case("score_ssd_last", smod, "_ssd_last_kernel", last,
             dict(sfl, HAS_CARRY=True, SIGNED=False, BLOCK_P=64, BLOCK_N=64), 4, steps_per_iter=16, hot="outer"),
        case("score_ssd_delta_sums", smod, "_ssd_delta_chunk_sums_kernel", sums, sfl, 4, steps_per_iter=16),
    ]


def load_module(name: str, rev: str | None):
    """The module `name` from the work tree, or as it was at git revision `rev`, loaded as a sibling module
    (`pkg._mod_rev`) so that its relative imports resolve in the same package."""
    if rev is None:
        return importlib.import_module(name)
    pkg, leaf = name.rsplit(".", 1)
    importlib.import_module(pkg)
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{name.replace('.', '/')}.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="sass_rev_")) / f"_{leaf}_rev.py"  # on disk: @triton.jit reads the source
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"{pkg}._{leaf}_rev", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def specialise(fn, args: dict, consts: dict):
    """(signature, constexprs, attrs) as the JIT would build them for these argument values."""
    sig, cx, attrs = {}, dict(consts), {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
            continue
        v = args[name]
        if isinstance(v, str):  # a pointer: torch allocations are 16-byte aligned
            sig[name], attrs[(i,)] = v, [["tt.divisibility", 16]]
        elif isinstance(v, float):
            sig[name] = "fp32"
        elif v == 1:  # the JIT turns an int equal to 1 into constexpr 1
            sig[name], cx[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, cx, attrs


def cuobjdump() -> str:
    p = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"  # shipped in triton's wheel
    if not p.exists():
        raise FileNotFoundError(f"no cuobjdump at {p}")
    return str(p)


def disassemble(cubin: bytes) -> tuple[list[tuple[int, str]], int]:
    """[(address, instruction)] of the kernel and its register count (cuobjdump -res-usage)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([cuobjdump(), "-sass", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    ins = [(int(m.group(1), 16), m.group(2).strip())
           for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;/]*?);", sass)]
    regs = re.search(r"REG:(\d+)", res)
    return ins, int(regs.group(1)) if regs else -1


def opcode(text: str) -> str:
    words = text.split()
    return words[1] if words[0].startswith("@") else words[0]  # skip a predicate guard


def mix(body) -> dict:
    """Counts of the OPS families by prefix (SHFL.IDX counts as SHFL, LDSM as LDS, STSM as STS, LDGSTS as LDG),
    the MUFU kinds, the total."""
    c = collections.Counter(opcode(t).split(".")[0] for _, t in body)
    out = {k: sum(n for op, n in c.items() if op.startswith(k)) for k in OPS}
    out["MUFU_kinds"] = dict(collections.Counter(opcode(t) for _, t in body if opcode(t).startswith("MUFU")))
    out["instrs"] = len(body)
    return out


def loops(ins) -> list[dict]:
    """Loops as [head, last backward branch]: a BRA to a lower address; branches to one head are one loop.
    innermost: contains no other loop's head."""
    ends = {}
    for a, t in ins:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", t)
        if m and opcode(t).startswith("BRA") and int(m.group(1), 16) < a:  # not the `BRA .` after EXIT
            head = int(m.group(1), 16)
            ends[head] = max(ends.get(head, a), a)
    spans = sorted(ends.items())
    out = []
    for head, end in spans:
        body = [x for x in ins if head <= x[0] <= end]
        inner = not any(head < h <= end for h, _ in spans if h != head)
        out.append(dict(head=hex(head), end=hex(end), innermost=inner, unroll=1, **mix(body)))
    for lp in out:  # ptxas unrolls some loops (by 4) and adds a remainder loop: memory and MUFU counts k times its
        for rem in out:
            k = lp["LDG"] // rem["LDG"] if rem is not lp and rem["LDG"] and lp["innermost"] and rem["innermost"] else 0
            if k > 1 and all(lp[o] == k * rem[o] for o in ("LDG", "STG", "MUFU")):
                lp["unroll"], lp["remainder_of"] = k, rem["head"]
    return out


def ttgir_facts(ttgir: str) -> dict:
    """#blocked layouts, and convert_layout / shared-memory ops inside scf.for bodies (by brace depth)."""
    layouts = [ln.strip() for ln in ttgir.splitlines() if re.match(r"#(blocked|shared|mma|linear)", ln)]
    depth, for_depths, in_loop = 0, [], collections.Counter()
    cvts = []
    for ln in ttgir.splitlines():
        if for_depths:
            for op in ("convert_layout", "local_alloc", "local_load", "local_store", "barrier"):
                if op in ln:
                    in_loop[op] += 1
            m = re.search(r"convert_layout .*? : (tensor<.*)$", ln)
            if m:
                cvts.append(re.sub(r"\s+loc\(.*$", "", m.group(1)))
        if "scf.for" in ln and ln.rstrip().endswith("{"):
            for_depths.append(depth)
        depth += ln.count("{") - ln.count("}")
        while for_depths and depth <= for_depths[-1]:
            for_depths.pop()
    return dict(layouts=layouts, in_loop=dict(in_loop), loop_converts=cvts, converts=ttgir.count("convert_layout"))


def survey(c: dict, rev: str | None, dump: str | None) -> dict:
    fn = getattr(load_module(c["module"], rev), c["kernel"])
    sig, cx, attrs = specialise(fn, c["args"], c["consts"])
    ck = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx, attrs=attrs), target=TARGET,
                        options=dict(num_warps=c["num_warps"], num_stages=c["num_stages"]))
    ins, regs = disassemble(ck.asm["cubin"])
    lps = loops(ins)
    inner = [lp for lp in lps if lp["innermost"]]
    hot = max(inner, key=lambda lp: lp["instrs"]) if inner else None  # the largest innermost loop
    if lps and c["hot"] == "outer":
        hot = min(lps, key=lambda lp: int(lp["head"], 16) - int(lp["end"], 16))  # its static body, inner loops once
    if hot:
        hot = dict(hot, per_step=round(hot["instrs"] / (hot["unroll"] * c["steps_per_iter"]), 1))
    if dump:  # the TTGIR and SASS, to read the loops by hand
        Path(dump).mkdir(parents=True, exist_ok=True)
        Path(dump, c["name"] + ".ttgir").write_text(ck.asm["ttgir"])
        Path(dump, c["name"] + ".sass").write_text("\n".join(f"/*{a:04x}*/ {t};" for a, t in ins) + "\n")
    return dict(name=c["name"], kernel=c["kernel"], module=c["module"], num_warps=c["num_warps"],
                num_stages=c["num_stages"], constexprs={k: str(v) for k, v in cx.items()}, registers=regs,
                shared=ck.metadata.shared, steps_per_iter=c["steps_per_iter"], total=mix(ins), loops=lps,
                hot=hot, ttgir=ttgir_facts(ck.asm["ttgir"]))


def table(rows: list[dict]) -> str:
    cols = ["kernel", "regs", "total", "loops", "hot/iter", "unroll", "hot/step"] + OPS[:-1] + ["cvt loop/all"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped'][:80]} |")
            continue
        h = r["hot"] or {}
        ops = [str(h.get(k, "-")) if h else f"({r['total'][k]})" for k in OPS[:-1]]
        cvt = f'{r["ttgir"]["in_loop"].get("convert_layout", 0)}/{r["ttgir"]["converts"]}'
        cells = [r["name"], r["registers"], r["total"]["instrs"], len(r["loops"]), h.get("instrs", "-"),
                 h.get("unroll", "-"), h.get("per_step", "-"), *ops, cvt]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines.append("\nhot: the largest innermost loop (score_ssd_last: the outer loop over tiles, its inner loops counted "
                 "once); hot/iter: SASS instructions of its body, whose opcode counts follow; hot/step = hot/iter / "
                 "(unroll · time steps an iteration covers). Kernels without a loop show whole-kernel counts in "
                 "parentheses. cvt: TTGIR convert_layout ops inside scf.for bodies / in all.")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rev", help="compile the registry modules as they were at this git revision")
    ap.add_argument("--dump", help="write each kernel's TTGIR and SASS into this folder")
    ap.add_argument("--only", nargs="*", help="keep entries whose name starts with one of these")
    a = ap.parse_args()
    reg = scan_cases() + score_cases() + layer_cases() + ssd_cases()
    reg = [c for c in reg if not a.only or any(c["name"].startswith(s) for s in a.only)]
    rows = []
    for c in reg:
        try:
            rows.append(survey(c, a.rev, a.dump))
        except Exception as e:  # a kernel this harness cannot specialise: record why, keep surveying
            rows.append(dict(name=c["name"], kernel=c["kernel"], skipped=f"{type(e).__name__}: {e}"))
        print(f"  {c['name']}: done", file=sys.stderr)
    git = commit()
    meta = dict(triton=triton.__version__, date=datetime.datetime.now().isoformat(timespec="seconds"), git=git,
                rev=a.rev, target=f"{TARGET.backend} sm_{TARGET.arch} warp {TARGET.warp_size}",
                command=command(),
                pythonpath=os.environ.get("PYTHONPATH", ""))
    out = Path(a.out)
    out.write_text(json.dumps(dict(meta=meta, kernels=rows), indent=1))
    md = f"triton {meta['triton']}, {meta['target']}, git {git}" + (f", modules at {a.rev}" if a.rev else "")
    md += "\n\n" + table(rows) + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
