"""Orchestration of a conversion: runs the stages in order, times them, and writes the output atomically."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

from ..errors import ConfigError
from ..pruning.flops import flops_report
from . import report as rep
from . import stages
from .config import ConvertConfig


@contextmanager
def _timed(timings: dict, name: str):
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0


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
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        loaded = stages.load_stage(cfg)
    cfg = cfg.for_device(loaded.device.type)
    with _timed(timings, "score"):
        scored = stages.score_stage(cfg, loaded)
    with _timed(timings, "calibrate"):
        result = stages.calibrate_stage(cfg, loaded, scored)
    model = stages.pruned_model(cfg, loaded, result)
    finetune = None
    if cfg.finetune_steps > 0:
        with _timed(timings, "finetune"):
            finetune = stages.finetune_stage(cfg, loaded, scored, model)
    versions = rep.versions()
    flops = flops_report(model.config, model.spec.keep_ratios, cfg.seq_len, cfg.protect, cfg.criterion)
    section = stages.simba_section(cfg, model, scored, result, versions, flops)
    report = {
        "input": cfg.src,
        "output": str(out),
        "config": cfg.to_dict(),
        "simba": section,
        "flops": flops.to_dict(),
        "calibration": result.to_dict(),
        "dense_ppl": scored.dense_ppl,
        "score_profile": scored.profile,
        "finetune": finetune,
        "versions": versions,
        "timings": timings,
    }
    with atomic_directory(out, force=cfg.force) as tmp:
        with _timed(timings, "save"):
            stages.save_stage(cfg, loaded, model, section, tmp, finetuned=finetune is not None)
        if cfg.onnx:
            with _timed(timings, "export"):
                report["onnx"] = stages.export_stage(cfg, model, tmp)
        report["plot"] = rep.write_plot(report, tmp / "keep_ratios.png") or "keep_ratios.png"
        (tmp / "simba_report.json").write_text(json.dumps(rep.strict_json(report), indent=2) + "\n", encoding="utf-8")
        (tmp / "report.txt").write_text(rep.summary_text(report), encoding="utf-8")
    return report


def convert_from_cli(**opts) -> None:
    import click

    fmt = opts.pop("report")
    opts["onnx"] = opts.pop("onnx_export")
    if opts.get("src") is None:
        raise ConfigError("--in is required")
    report = run(ConvertConfig(**opts))
    if fmt == "json":
        click.echo(json.dumps(rep.strict_json(report), indent=2))
    else:
        click.echo(rep.summary_text(report), nl=False)
