"""The named stages of a conversion: load → score → calibrate → (fine-tune) → save → (export).

Each stage takes the frozen ConvertConfig and what earlier stages produced, and returns its own result.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..calibrate import data as calib_data
from ..calibrate.objective import KLObjective, score_profile
from ..calibrate.search import CalibrationResult, Candidate, calibrate, holdout_count
from ..errors import CheckpointError
from ..format import Calibration, Finetune, SimbaSection, provenance, with_section
from ..pruning import schedules
from ..pruning.flops import FlopsReport, flops_report
from ..pruning.model import PrunedMambaLM
from ..pruning.spec import PruningSpec
from .config import ConvertConfig
from .progress import bar


@dataclass
class Loaded:
    model: object
    tokenizer: object
    info: object  # the input checkpoint (io.layout.CheckpointInfo)
    device: torch.device
    save_dtype: torch.dtype  # of fine-tuned weights: the input's stored dtype, unless a dtype was asked for


@dataclass
class Scored:
    objective: KLObjective  # the windows the search fits on
    holdout: KLObjective | None  # a quarter of the windows, kept out of the search to check its choice
    fingerprint: str
    source: str
    profile: list[float]
    dense_ppl: float


def _dtype(cfg: ConvertConfig, device: torch.device):
    if cfg.dtype != "auto":
        return cfg.dtype
    # fine-tuning trains in fp32 (bf16 would round every small update away); Loaded.save_dtype is what is saved
    return "bfloat16" if device.type == "cuda" and cfg.finetune_steps == 0 else "float32"


def load_stage(cfg: ConvertConfig) -> Loaded:
    from ..io.atomic import check_distinct
    from ..io.checkpoint import resolve_dtype, stored_dtype
    from ..io.layout import inspect_checkpoint
    from ..io.load import load_with_tokenizer, parse_device
    from ..io.resolve import resolve

    device = parse_device(cfg.device)
    r = resolve(cfg.src, offline=cfg.offline)
    check_distinct(cfg.out_dir(), r.path)
    info = inspect_checkpoint(r.path)
    if info.sparsified:
        raise CheckpointError(
            f"{cfg.src} is already a sparsified checkpoint; convert the original dense checkpoint instead "
            "(evaluate or inspect this one)", option="src"
        )
    # the resolved directory, so a Hub id is looked up once
    model, tok, _ = load_with_tokenizer(str(r.path), device=device, dtype=_dtype(cfg, device),
                                        offline=cfg.offline, tokenizer=cfg.tokenizer)
    save_dtype = stored_dtype(info) if cfg.dtype == "auto" else resolve_dtype(cfg.dtype)
    return Loaded(model.eval(), tok, info, device, save_dtype)


def score_stage(cfg: ConvertConfig, loaded: Loaded) -> Scored:
    """Cut the calibration windows, run the dense model once (the KL target) and profile the layer scores."""
    text, source = calib_data.read_calibration_text(cfg.calib)
    ids = calib_data.encode(loaded.tokenizer, text)
    windows = calib_data.make_windows(ids, cfg.samples, cfg.seq_len, cfg.seed)
    n_hold = holdout_count(cfg.samples) if cfg.schedule == "calibrated" else 0

    def objective(w, what=""):
        return KLObjective(loaded.model, w, cfg.protect, batch_size=cfg.batch_size,
                           spec_kw={"criterion": cfg.criterion, "floor": cfg.floor, "seed": cfg.seed},
                           progress=lambda it, desc: bar(it, desc + what, cfg.progress))

    fit = objective(windows[n_hold:])
    if not math.isfinite(fit.dense_nll):
        raise CheckpointError(
            f"the dense model's predictions on the calibration text are not finite (mean NLL {fit.dense_nll}); "
            f"its weights overflow in {str(loaded.model.dtype).removeprefix('torch.')} or are corrupt",
            option="dtype")
    holdout = objective(windows[:n_hold], ", held-out windows") if n_hold else None
    with torch.no_grad():
        profile = score_profile(loaded.model, windows, cfg.criterion, batch_size=cfg.batch_size)
    from .report import ppl_from_nll

    return Scored(fit, holdout, calib_data.fingerprint(windows), source, profile, ppl_from_nll(fit.dense_nll))


def calibrate_stage(cfg: ConvertConfig, loaded: Loaded, scored: Scored) -> CalibrationResult:
    """Choose keep ratios: the calibrated search, or a closed-form schedule evaluated for the report."""
    mcfg = loaded.model.config
    L, P = cfg.seq_len, cfg.protect
    if cfg.schedule != "calibrated":
        cands = {}
        for name in ("linear", "uniform"):
            r = schedules.schedule_for_budget(name, mcfg, cfg.budget, L, P, cfg.criterion, cfg.floor, cfg.prune_every)
            ev = scored.objective(r)
            cands[name] = Candidate(name, r, ev.kl, ev.nll, flops_report(mcfg, r, L, P, cfg.criterion).ratio)
        chosen = cands[cfg.schedule]
        return CalibrationResult(chosen, cands["linear"], cands["uniform"], [cands["linear"], cands["uniform"]])
    with bar(None, "calibrate", cfg.progress, total=cfg.max_evals) as pb:
        def on_eval(c):
            pb.set_postfix_str(f"KL {c.kl:.4f}")
            pb.update(1)

        return calibrate(scored.objective, mcfg, cfg.budget, L, P, criterion=cfg.criterion, floor=cfg.floor,
                         seed=cfg.seed, max_evals=cfg.max_evals, on_eval=on_eval, holdout=scored.holdout,
                         every=cfg.prune_every)


def pruned_model(cfg: ConvertConfig, loaded: Loaded, result: CalibrationResult) -> PrunedMambaLM:
    spec = PruningSpec(result.best.ratios, criterion=cfg.criterion, protect=cfg.protect, floor=cfg.floor, seed=cfg.seed)
    return PrunedMambaLM(loaded.model, spec)


def simba_section(cfg: ConvertConfig, model: PrunedMambaLM, scored: Scored, result: CalibrationResult,
                  versions: dict, rep: FlopsReport, finetune: dict | None = None) -> SimbaSection:
    """The `simba` section of the sparsified checkpoint's config.json; `rep` is the FLOPs of its ratios,
    `versions` the packages that made it (the same whatever optional packages are installed), `finetune`
    the fine-tune's report when one ran."""
    ft = None
    if finetune is not None:
        c = finetune["calibration"]
        ft = Finetune(applied=finetune["applied"], steps=finetune["steps"], lr=finetune["config"]["lr"],
                      trainable=finetune["trainable"], kl_before=c["kl_before"], kl_after=c["kl_after"])
    prov = provenance(calibration_fingerprint=scored.fingerprint, seed=model.spec.seed,
                      torch_version=versions.get("torch"))
    return SimbaSection(
        spec=model.spec, provenance=prov, architecture=model.config.architecture, budget=cfg.budget,
        schedule=cfg.schedule,
        achieved_flops_ratio=rep.ratio, backbone_flops_ratio=rep.backbone_ratio, flops_seq_len=cfg.seq_len,
        calibration=Calibration(source=scored.source, samples=cfg.samples, seq_len=cfg.seq_len, kl=result.best.kl),
        finetune=ft,
    )


def save_stage(cfg: ConvertConfig, loaded: Loaded, model: PrunedMambaLM, section: SimbaSection, dest: Path,
               finetuned: bool) -> None:
    """Write the sparsified checkpoint into `dest` (an empty staging directory): the input's layout and
    weight files unchanged unless fine-tuned, config.json with the `simba` section, tokenizer files."""
    src = loaded.info
    if finetuned:
        from ..io.checkpoint import write_checkpoint

        write_checkpoint(model.dense, dest, layout=src.layout, extra_config=with_section({}, section),
                         dtype=loaded.save_dtype)
    else:
        for f in src.weight_files:
            shutil.copyfile(f, dest / f.name)
        for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if (src.path / index).is_file():
                shutil.copyfile(src.path / index, dest / index)
        from ..io.checkpoint import write_config

        write_config(dest, with_section(src.raw_config, section))  # marked, with the remote code files
    tok_json = src.path / "tokenizer.json"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src.path / name).is_file():
            shutil.copyfile(src.path / name, dest / name)
    if not tok_json.is_file() and hasattr(loaded.tokenizer, "save"):
        loaded.tokenizer.save(str(dest / "tokenizer.json"))


def finetune_stage(cfg: ConvertConfig, loaded: Loaded, scored: Scored, model: PrunedMambaLM) -> dict:
    """Distil the pruned model from the dense one on the calibration text (ratios fixed); returns its report.

    Training uses every disjoint window of the calibration text (a deterministic 90/10 train/valid
    split), far more than the calibration samples. `model.dense` is trained in place; the calibration
    objective keeps its dense log-probabilities (computed before), so evaluating it again measures the
    fine-tuned sparse model against the original dense one.
    """
    from ..finetune import FinetuneConfig, all_windows, finetune, split_windows
    from .report import ppl_from_nll

    ft = FinetuneConfig(steps=cfg.finetune_steps, batch_size=cfg.batch_size, seed=cfg.seed, progress=cfg.progress)
    text, _ = calib_data.read_calibration_text(cfg.calib)
    windows = all_windows(calib_data.encode(loaded.tokenizer, text), cfg.seq_len)
    train, valid = split_windows(windows, seed=cfg.seed, max_valid=ft.max_valid_windows)
    before = scored.objective(model.spec.keep_ratios)
    original = {k: v.detach().to("cpu", copy=True) for k, v in model.dense.state_dict().items()}
    report = finetune(model, train, valid, ft)
    _round_to(model.dense, loaded.save_dtype)  # measure the weights that would be saved
    after = scored.objective(model.spec.keep_ratios)
    applied = after.kl <= before.kl
    if not applied:  # never save a model that fits the calibration data worse than the one it came from
        model.dense.load_state_dict(original)
    report["applied"] = applied
    report["saved_dtype"] = str(loaded.save_dtype).removeprefix("torch.")
    report["calibration"] = {
        "kl_before": before.kl, "kl_after": after.kl,
        "ppl_before": ppl_from_nll(before.nll), "ppl_after": ppl_from_nll(after.nll),
        "dense_ppl": scored.dense_ppl,
    }
    return report


@torch.no_grad()
def _round_to(dense, dtype: torch.dtype) -> None:
    """Round every weight to `dtype` in place, keeping its own dtype (exact when they are equal)."""
    for t in dense.state_dict().values():
        if t.is_floating_point() and t.dtype != dtype:
            t.copy_(t.to(dtype))


def check_export(cfg: ConvertConfig) -> None:
    """Before the work: the packages an ONNX export needs are installed and the criterion can be exported."""
    if not cfg.onnx:
        return
    from ..errors import ConfigError, require

    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "onnx")
    from ..export.graph import EXPORT_CRITERIA

    if cfg.criterion not in EXPORT_CRITERIA:
        raise ConfigError(f"criterion {cfg.criterion!r} cannot be exported to ONNX; use one of "
                          f"{', '.join(EXPORT_CRITERIA)}", option=("criterion", "onnx"))


def export_stage(cfg: ConvertConfig, model: PrunedMambaLM, dest: Path, section: SimbaSection | None = None) -> dict:
    from ..export import export_onnx

    rep = export_onnx(model, dest / "model.onnx", protect=cfg.protect, section=section)
    rep["path"] = "model.onnx"
    if rep.get("step"):
        rep["step"]["path"] = Path(rep["step"]["path"]).name  # model_step.onnx, beside it
    return rep
