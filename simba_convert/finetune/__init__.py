"""Brief fine-tune of a sparsified model (SIMBA.md §7): distillation from the dense model, ratios fixed.

    from simba_convert.finetune import FinetuneConfig, finetune, all_windows, split_windows
    train, valid = split_windows(all_windows(ids, seq_len=512))
    report = finetune(pruned_model, train, valid, FinetuneConfig(steps=200))

Trainable sets: `all`, `norms_dt_xproj` (norm weights, x_proj, dt_proj, A_log, D) and `lora` (a
built-in rank-r LoRA on every mixer's in_proj/out_proj, merged into the weights when training ends).
"""

from .config import FINETUNE_VERSION, TRAINABLE, FinetuneConfig
from .data import all_windows, micro_batches, split_windows
from .loop import finetune, frozen_teacher

__all__ = ["FINETUNE_VERSION", "TRAINABLE", "FinetuneConfig", "all_windows", "finetune", "frozen_teacher",
           "micro_batches", "split_windows"]
