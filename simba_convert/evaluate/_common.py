"""What perplexity and multiple-choice scoring share: tokenizer adaptation, the model call, progress bars.

`last_logits` is the one place that knows the two calling conventions:
- dense models: `model(input_ids [B, T]) -> logits [B, T, V]` (attention_mask only if forward takes one);
- pruned models (`model.is_pruned`): `model(input_ids, attention_mask=mask, protect=P)`. Only the last P
  real positions of each row carry exact predictions (SIMBA.md §4), so callers read nothing else.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Callable

import torch

from ..errors import ConfigError, DataError

EOT_STRINGS = ("<|endoftext|>", "</s>", "<eos>")


def encoder(tokenizer) -> Callable[[str], list[int]]:
    """A `text -> list[int]` function for a `tokenizers.Tokenizer` (encode(text).ids) or any object whose
    `encode(text)` returns a list of ids (a project wrapper, a transformers tokenizer)."""
    if not hasattr(tokenizer, "encode"):
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no encode(text) method")

    def encode(text: str) -> list[int]:
        out = tokenizer.encode(text)
        ids = out.ids if hasattr(out, "ids") else out
        return [int(i) for i in ids]

    return encode


def end_of_text_id(tokenizer) -> int | None:
    """The end-of-text token id, used (as lm-eval does) as the context of a continuation with an empty one."""
    for attr in ("eot_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    inner = getattr(tokenizer, "tokenizer", None)  # project wrappers around tokenizers.Tokenizer
    for tok in (tokenizer, inner):
        if tok is not None and hasattr(tok, "token_to_id"):
            for s in EOT_STRINGS:
                v = tok.token_to_id(s)
                if v is not None:
                    return int(v)
    return None


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def resolve_device(model, device) -> torch.device:
    """`device` may be None/"auto" (the model's own device), "cpu", "cuda", "cuda:N" or a torch.device; anything
    else is a one-line ConfigError (io.load.parse_device, the one parser of device options)."""
    if device is None or device == "auto":
        return model_device(model)
    from ..io.load import parse_device

    return parse_device(device)


def is_pruned(model) -> bool:
    return bool(getattr(model, "is_pruned", False))


def _accepts(model, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _unwrap(out) -> torch.Tensor:
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def last_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, protect: int, n: int) -> torch.Tensor:
    """Logits [B, n, V] at each row's last n real positions of input_ids [B, T].

    Rows are right-padded (attention_mask [B, T], 1 = real); a pruned model needs n <= every row's length. It
    is asked for those positions only (`num_last`) when its forward offers it, which skips the LM head
    everywhere else; otherwise the full logits are computed and the positions gathered.
    """
    B, T = input_ids.shape
    only_last = is_pruned(model) and _accepts(model, "num_last")
    if is_pruned(model):
        kw = {"num_last": n} if only_last else {}
        logits = _unwrap(model(input_ids, attention_mask=attention_mask, protect=protect, **kw))
    elif _accepts(model, "attention_mask"):
        logits = _unwrap(model(input_ids, attention_mask=attention_mask))
    else:
        # Causal models: a real token's logits never depend on right padding, so the mask is not needed.
        logits = _unwrap(model(input_ids))
    expected = (B, n) if only_last else (B, T)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != expected:
        raise ConfigError(f"model returned logits of shape {tuple(logits.shape)}, expected {expected} + (vocab,)")
    if only_last:
        return logits
    # A row shorter than n (dense batches mix continuation lengths) gets its first positions repeated;
    # callers read only a row's last m <= length entries.
    idx = (attention_mask.sum(1)[:, None] - n + torch.arange(n, device=logits.device)).clamp_min(0)  # [B, n]
    return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))


@contextlib.contextmanager
def eval_mode(model):
    """Run with the model in eval mode, restoring its training flag afterwards."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def progress_bar(total: int, desc: str, progress: bool | None):
    """Progress on stderr (see pipeline.progress: a bar on a terminal, plain lines elsewhere);
    `progress=None` shows it only when stderr is a terminal."""
    from ..pipeline.progress import bar

    show = sys.stderr.isatty() if progress is None else bool(progress)
    return bar(None, desc, show, total=total)


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def read_text(path) -> str:
    """The text of a UTF-8 file, or a one-line DataError."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"text file {p} is not UTF-8 ({e.reason} at byte {e.start})") from e
