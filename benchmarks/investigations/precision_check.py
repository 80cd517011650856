"""Is a bf16 logits gap between our MambaLM and transformers' MambaForCausalLM precision or a bug?

    PYTHONPATH=. python3 benchmarks/investigations/precision_check.py --out benchmarks/results/precision_check_cpu.json
    PYTHONPATH=. python3 benchmarks/investigations/precision_check.py --smoke --out /tmp/precision_check.json  # seconds
    PYTHONPATH=. python3 benchmarks/investigations/precision_check.py --device cuda --d-model 2048 --n-layer 48 \
        --seq-len 2048 --inits hf --out $OUT/precision_check_1p4b.json                            # the bench_dense case

Both implementations get the very same weights: one fp64 master state dict whose values are rounded to
bf16 once, so every dtype runs the same numbers and only the arithmetic differs. The "truth" is our
model in genuine fp64: `Tensor.float()` is patched to keep fp64 tensors fp64 (our code upcasts with
`.float()`, which would otherwise compute the norms and the scan in fp32); transformers run the same
way (its RMSNorm's and residual's explicit fp32 casts removed) is a second, independent fp64 result, and the two must
agree to ~1e-12. Every other run is measured against the truth by relative RMS of the logits [B, L, V]
and of the residual stream after each layer.

Inits: `hf` = transformers' constructor init (what bench_dense uses: Linear weights N(0, 0.1²), so
in_proj/x_proj amplify their input by ~0.1·√fan_in), `torch` = our MambaLM constructor (PyTorch
defaults), `mamba_ssm` = simba_convert.model.init.init_mamba_weights (the training init).

`cond` is the conditioning of the fp64 model: the relative logit change when the embedding output is
perturbed by relative noise of one bf16 half-ulp (2^-9) — what the model does to rounding alone,
independently of either implementation. all_hf = norm_hf + scan_hf. The `ours-bf16[...]` rows re-run our model with one of
transformers' bf16 cast choices monkeypatched in (nothing in the package is changed):
  norm_hf  the block norms' input (fp32 residual) cast to bf16 first and the weight multiplied in bf16
           (MambaBlock + MambaRMSNorm; the final norm is left as is: transformers runs it on the fp32 stream);
  dt_hf    delta = softplus(dt + bias) computed in bf16 (mamba_selective_scan's fallback);
  scan_hf  dt_hf plus the state cast to bf16 before the C contraction and silu(z) in bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from simba_convert.io.layout import canonical_name, layout_name
from simba_convert.model import mamba as mamba_mod
from simba_convert.model.config import MambaConfig
from simba_convert.model.init import init_mamba_weights
from simba_convert.model.mamba import MambaLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared helper `common`
from common import environment  # noqa: E402

BF16_HALF_ULP = 2.0 ** -9


def rel_rms(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def master_weights(cfg: MambaConfig, init: str, seed: int, device: str) -> dict[str, torch.Tensor]:
    """Canonical-name fp64 state dict on `device`, every value exactly representable in bf16."""
    torch.manual_seed(seed)
    with torch.device(device):  # a CPU init of a 1.4B model takes ~30 s
        if init == "hf":
            from transformers import MambaConfig as HFConfig, MambaForCausalLM

            sd = {canonical_name(k): v for k, v in MambaForCausalLM(HFConfig(**cfg.to_hf())).state_dict().items()}
        else:
            model = MambaLM(cfg)
            if init == "mamba_ssm":
                init_mamba_weights(model, seed)
            sd = model.state_dict()
    return {k: v.detach().to(torch.bfloat16).double() for k, v in sd.items()}


def make_ours(cfg, sd, dtype, backend):
    with torch.device("meta"):  # no init work: every tensor comes from the master weights
        model = MambaLM(cfg)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
    return model.eval().set_backend(backend)


def make_hf(cfg, sd, dtype):
    from transformers import MambaConfig as HFConfig, MambaForCausalLM

    with torch.device("meta"):
        model = MambaForCausalLM(HFConfig(**cfg.to_hf()))
    # an untied copy of the head when tied: the same values, so the same logits
    model.load_state_dict({layout_name(k, "hf"): v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def ours_run(model: MambaLM, ids, embed_noise: float = 0.0, seed: int = 3):
    """MambaLM.forward, keeping the residual stream after every layer: (logits, [stream_l])."""
    hidden, residual, streams = model.backbone.embedding(ids), None, []
    if embed_noise:
        g = torch.Generator(device="cpu").manual_seed(seed)
        hidden = hidden * (1 + embed_noise * torch.randn(hidden.shape, generator=g, dtype=torch.float64).to(hidden))
    for layer in model.backbone.layers:
        h, residual = layer.add_norm(hidden, residual)
        hidden = layer.mixer(h)
        streams.append(hidden.to(residual.dtype) + residual)
    return model.head(streams[-1]), streams


def hf_run(model, ids):
    out = model(input_ids=ids, use_cache=False, output_hidden_states=True)
    return out.logits, list(out.hidden_states[:-1])  # the last entry is norm_f's output


@contextlib.contextmanager
def true_fp64():
    """Make `.float()` keep fp64 tensors fp64 and transformers' RMSNorm skip its fp32 cast."""
    from transformers.models.mamba import modeling_mamba as hfm

    orig_float, orig_norm = torch.Tensor.float, hfm.MambaRMSNorm.forward

    def keep64(self, *a, **k):
        return self if self.dtype == torch.float64 else orig_float(self, *a, **k)

    def norm64(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    torch.Tensor.float, hfm.MambaRMSNorm.forward = keep64, norm64
    try:
        yield
    finally:
        torch.Tensor.float, hfm.MambaRMSNorm.forward = orig_float, orig_norm


# --- transformers' bf16 cast choices, to patch into our model one at a time -------------------------------

def _add_norm_hf(self, hidden, residual):
    """MambaBlock.add_norm as transformers' MambaBlock + MambaRMSNorm compute it in bf16."""
    residual = hidden if residual is None else hidden.to(residual.dtype) + residual
    x = residual.to(self.norm.weight.dtype)  # the fp32 residual is rounded to bf16 before the norm
    xf = x.float()
    h = self.norm.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.norm.eps)).to(x.dtype)
    return h, residual.float() if self.residual_in_fp32 else residual


def _scan_dt_hf(orig_scan):
    def scan(u, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *a, **k):
        delta = F.softplus(dt + delta_bias.to(dt.dtype))  # in the activation dtype, as transformers does
        return orig_scan(u, delta, A, B, C, D, z, None, False, *a, **k)
    return scan


def _scan_all_hf(u, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
                 return_last_state=False, *, backend="auto"):
    """transformers' fallback scan order of casts on [B, L, D] layout (no initial state, y only)."""
    dtype = u.dtype
    delta = F.softplus(dt + delta_bias.to(dt.dtype))
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(A * delta[:, t, :, None]) * h + (delta[:, t, :, None] * B[:, t, None, :].float()) * u[:, t, :, None].float()
        ys.append(torch.matmul(h.to(dtype), C[:, t, :, None])[..., 0])
    y = torch.stack(ys, dim=1) + u * D
    return (y * F.silu(z)).to(dtype)


VARIANTS = {
    "norm_hf": dict(norm=_add_norm_hf),
    "dt_hf": dict(scan=_scan_dt_hf(mamba_mod.selective_scan)),
    "scan_hf": dict(scan=_scan_all_hf),
    "all_hf": dict(norm=_add_norm_hf, scan=_scan_all_hf),
}


@contextlib.contextmanager
def variant(name: str):
    v = VARIANTS[name]
    orig_norm, orig_scan = mamba_mod.MambaBlock.add_norm, mamba_mod.selective_scan
    if "norm" in v:
        mamba_mod.MambaBlock.add_norm = v["norm"]
    if "scan" in v:
        mamba_mod.selective_scan = v["scan"]
    try:
        yield
    finally:
        mamba_mod.MambaBlock.add_norm, mamba_mod.selective_scan = orig_norm, orig_scan


def check_init(cfg, init, ids, device, bf16_backends, variants, seed) -> dict:
    """All runs for one init; every rel RMS is against the fp64 truth unless the key names a pair."""
    sd = master_weights(cfg, init, seed, device)
    res, layers = {}, {}
    marks = sorted({0, cfg.n_layer // 4, cfg.n_layer // 2, 3 * cfg.n_layer // 4, cfg.n_layer - 1})
    with torch.inference_mode():
        with true_fp64():
            ours64 = make_ours(cfg, sd, torch.float64, "reference")
            truth, truth_streams = ours_run(ours64, ids)
            cond, _ = ours_run(ours64, ids, embed_noise=BF16_HALF_ULP)
            del ours64
            hf64 = make_hf(cfg, sd, torch.float64)
            for layer in hf64.backbone.layers:  # its residual_in_fp32 is an explicit .to(float32)
                layer.residual_in_fp32 = False
            hf64, _ = hf_run(hf64, ids)
        res["hf-fp64 vs truth"] = rel_rms(hf64, truth)
        res["cond (fp64, embed x(1+2^-9 noise))"] = rel_rms(cond, truth)
        del hf64, cond

        def record(name, logits, streams):
            res[f"{name} vs truth"] = rel_rms(logits, truth)
            layers[name] = {str(i): rel_rms(streams[i], truth_streams[i]) for i in marks}
            return logits

        runs = {}
        for dtype in (torch.float32, torch.bfloat16):
            tag = "fp32" if dtype == torch.float32 else "bf16"
            for backend in (["reference"] if dtype == torch.float32 else bf16_backends):
                name = f"ours-{tag}" + ("" if backend == "reference" else f"[{backend}]")
                runs[name] = record(name, *ours_run(make_ours(cfg, sd, dtype, backend), ids))
            runs[f"hf-{tag}"] = record(f"hf-{tag}", *hf_run(make_hf(cfg, sd, dtype), ids))
        for v in variants:
            with variant(v):
                name = f"ours-bf16[{v}]"
                runs[name] = record(name, *ours_run(make_ours(cfg, sd, torch.bfloat16, "reference"), ids))
        res["ours-fp32 vs hf-fp32"] = rel_rms(runs["ours-fp32"], runs["hf-fp32"])
        for name in runs:
            if name.startswith("ours-bf16"):
                res[f"{name} vs hf-bf16"] = rel_rms(runs[name], runs["hf-bf16"])
        res["logit RMS (truth)"] = float(truth.double().pow(2).mean().sqrt())
    return {"init": init, "rel_rms": res, "per_layer_stream_vs_truth": layers}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--n-layer", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=50280)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--inits", default="hf,torch,mamba_ssm")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of our bf16 variants ('' for none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run, seconds")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.d_model, args.n_layer, args.vocab, args.seq_len = "cpu", 64, 3, 512, 32
    cfg = MambaConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=args.vocab, pad_vocab_size_multiple=8)
    ids = torch.randint(0, args.vocab, (1, args.seq_len), generator=torch.Generator().manual_seed(1)).to(args.device)
    bf16_backends = ["reference", "auto"] if args.device == "cuda" else ["reference"]
    variants = [v for v in args.variants.split(",") if v]
    results = {
        "benchmark": "precision_check",
        **environment(args.device, None if argv is None else ["benchmarks/investigations/precision_check.py", *argv]),
        "config": dict(d_model=cfg.d_model, n_layer=cfg.n_layer, vocab=cfg.padded_vocab_size, batch=1,
                       seq_len=args.seq_len),
        "cases": [],
    }
    for init in args.inits.split(","):
        t = time.perf_counter()
        results["cases"].append(check_init(cfg, init, ids, args.device, bf16_backends, variants, args.seed))
        print(f"  init {init}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    args.out.with_suffix(".md").write_text(md)
    print(md)


def markdown(results: dict) -> str:
    cases = results["cases"]
    c = results["config"]
    lines = [f"Precision check, {results['device']}, torch {results['torch']}, transformers {results['transformers']}, "
             f"d {c['d_model']}, {c['n_layer']} layers, V {c['vocab']}, {c['batch']}x{c['seq_len']}\n",
             "| logits rel RMS | " + " | ".join(f"init {r['init']}" for r in cases) + " |",
             "|---|" + "---|" * len(cases)]
    for key in cases[0]["rel_rms"]:
        lines.append(f"| {key} | " + " | ".join(f"{r['rel_rms'][key]:.2e}" for r in cases) + " |")
    lines += ["", "| stream rel RMS vs truth after layer | " + " | ".join(f"init {r['init']}" for r in cases) + " |",
              "|---|" + "---|" * len(cases)]
    for name, per in cases[0]["per_layer_stream_vs_truth"].items():
        for i in per:
            lines.append(f"| {name} @{i} | " + " | ".join(f"{r['per_layer_stream_vs_truth'][name][i]:.2e}"
                                                         for r in cases) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
