"""Orchestration of a conversion: runs the stages in order, times them, and writes the output atomically."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

from ..errors import OutputError
from ..pruning.flops import flops_report
from . import report as rep
from . import stages
from .config import ConvertConfig


class _Stages:
    """Times the stages and announces each with one progress line."""

    def __init__(self, cfg: ConvertConfig):
        self.names = ["load", "score", "calibrate"] + (["finetune"] if cfg.finetune_steps > 0 else []) + ["save"] + (
            ["export"] if cfg.onnx else [])
        self.enabled = cfg.progress
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        from .progress import stage

        stage(name, self.names.index(name) + 1, len(self.names), self.enabled)
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0


def convert(src: str, out: str | None = None, *, budget: float = 0.6, **options) -> dict:
    """Sparsify `src` under a FLOPs `budget` and write the result to `out`; returns the report (a dict).

    Options mirror the CLI: schedule, criterion, protect, samples, seq_len, calib, seed, device, dtype,
    tokenizer, finetune_steps, onnx, force, offline, max_evals, batch_size, floor, progress.
    """
    return run(ConvertConfig(src=src, out=out, budget=budget, **options))


def run(cfg: ConvertConfig) -> dict:
    from ..io.atomic import atomic_directory, check_writable

    out = cfg.out_dir()
    check_writable(out, cfg.force)  # before any expensive work
    stages.check_export(cfg)
    timed = _Stages(cfg)
    timings = timed.timings
    with timed("load"):
        loaded = stages.load_stage(cfg)
        check_space(cfg, loaded, out)
    cfg = cfg.for_device(loaded.device.type)
    with timed("score"):
        scored = stages.score_stage(cfg, loaded)
    with timed("calibrate"):
        result = stages.calibrate_stage(cfg, loaded, scored)
    model = stages.pruned_model(cfg, loaded, result)
    finetune = None
    if cfg.finetune_steps > 0:
        with timed("finetune"):
            finetune = stages.finetune_stage(cfg, loaded, scored, model)
    versions = rep.versions()
    flops = flops_report(model.config, model.spec.keep_ratios, cfg.seq_len, cfg.protect, cfg.criterion)
    section = stages.simba_section(cfg, model, scored, result, rep.provenance(versions), flops, finetune)
    report = {
        "schema_version": rep.SCHEMA_VERSION,
        "input": cfg.src,
        "output": str(out),
        "config": cfg.to_dict(),
        "simba": section.to_dict(),
        "flops": flops.to_dict(),
        "calibration": result.to_dict(),
        "dense_ppl": scored.dense_ppl,
        "score_profile": scored.profile,
        "finetune": finetune,
        "versions": versions,
        "timings": timings,
    }
    try:
        with atomic_directory(out, force=cfg.force) as tmp:
            with timed("save"):
                stages.save_stage(cfg, loaded, model, section, tmp,
                                  finetuned=finetune is not None and finetune["applied"])
            if cfg.onnx:
                with timed("export"):
                    report["onnx"] = stages.export_stage(cfg, model, tmp, section)
            report["plot"] = rep.write_plot(report, tmp / "keep_ratios.png") or "keep_ratios.png"
            (tmp / "simba_report.json").write_text(json.dumps(rep.strict_json(report), indent=2) + "\n",
                                                   encoding="utf-8")
            (tmp / "report.txt").write_text(rep.summary_text(report), encoding="utf-8")
    except OSError as e:  # disk full, file-size limit, a filesystem gone read-only: after the checks above
        where = f" ({e.filename})" if e.filename else ""
        raise OutputError(f"writing the output {out} failed: {e.strerror or e}{where}; nothing was written",
                          option="out") from None
    return report


def check_space(cfg: ConvertConfig, loaded, out) -> None:
    """Refuse before the work when the output's filesystem cannot hold even the weights (and ONNX copy)."""
    import shutil

    need = sum(f.stat().st_size for f in loaded.info.weight_files)
    if cfg.onnx:
        # exported in float32 at most, twice: the prefill and the decoding-step files each carry the weights
        need += sum(p.numel() for p in loaded.model.parameters()) * 4 * 2
    parent = out.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if free < need:
        raise OutputError(f"the output {out} needs about {need / 2**20:.0f} MiB and only {free / 2**20:.0f} MiB "
                          f"are free in {parent}", option="out")
