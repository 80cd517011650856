"""Calibration text: where it comes from and how it is cut into token windows.

Windows are L+1 tokens (L inputs; the extra token is the target of the last position), disjoint,
taken at evenly spaced offsets over the token stream so that a fixed (text, tokenizer, samples, L)
always gives the same windows; the seed only shuffles their order.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

from ..errors import DataError

DEFAULT_NAME = "default.txt"


def bundled_calibration_path() -> Path:
    """The calibration text shipped with the tool (`calibration/default.txt`)."""
    try:
        p = resources.files("simba_convert._calibration").joinpath(DEFAULT_NAME)
        if p.is_file():
            return Path(str(p))
    except (ModuleNotFoundError, TypeError):
        pass
    p = Path(__file__).resolve().parents[2] / "calibration" / DEFAULT_NAME  # running from a source tree
    if p.is_file():
        return p
    raise DataError("the bundled calibration text is missing from this installation; pass calibration data",
                    option="calib")


def _read_jsonl(path: Path) -> str:
    texts = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if isinstance(rec, str):
                texts.append(rec)
            elif isinstance(rec, dict) and isinstance(rec.get("text"), str):
                texts.append(rec["text"])
            else:
                raise DataError(f"{path}:{n}: a JSONL record must be a string or an object with a 'text' string")
    return "\n\n".join(texts)


def _read_dataset(name: str) -> str:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"calibration data {name!r} is neither a file nor a directory; dataset names need the 'datasets' "
            "package: pip install 'simba-convert[datasets]'",
            option="calib",
        ) from None
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as e:  # datasets raises many types; the user needs only the one line
        raise DataError(f"could not load dataset {name!r} from the local cache: {str(e).splitlines()[0]}") from None
    if "text" not in ds.column_names:
        raise DataError(f"dataset {name!r} has no 'text' column (columns: {', '.join(ds.column_names)})")
    return "\n\n".join(ds["text"])


def read_calibration_text(calib: str | None) -> tuple[str, str]:
    """(text, source description) for --calib: None = bundled, a .txt/.jsonl file, a directory, or a dataset name."""
    if calib is None:
        p = bundled_calibration_path()
        return p.read_text(encoding="utf-8"), f"bundled:{p.name}"
    p = Path(calib)
    if p.is_dir():
        files = sorted(x for x in p.rglob("*") if x.suffix in (".txt", ".jsonl") and x.is_file())
        if not files:
            raise DataError(f"calibration directory {p} has no .txt or .jsonl files")
        return "\n\n".join(_read_jsonl(f) if f.suffix == ".jsonl" else f.read_text(encoding="utf-8") for f in files), str(p)
    if p.is_file():
        try:
            text = _read_jsonl(p) if p.suffix == ".jsonl" else p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"calibration file {p} is not UTF-8 text") from None
        return text, str(p)
    if _looks_like_path(calib):
        raise DataError(f"calibration file {calib} does not exist")
    return _read_dataset(calib), f"dataset:{calib}"


def _looks_like_path(calib: str) -> bool:
    """True for what can only be a file path; dataset ids are `name` or `org/name` (one slash, no leading . / ~)."""
    return (calib.endswith((".txt", ".jsonl")) or calib.startswith(("/", ".", "~"))
            or calib.count("/") > 1 or (os.sep != "/" and os.sep in calib))


def encode(tokenizer, text: str) -> list[int]:
    """Token ids from a `tokenizers.Tokenizer` or any object with encode(text) -> list[int] | Encoding."""
    from ..evaluate._common import encoder

    return encoder(tokenizer)(text)


def make_windows(ids: list[int], samples: int, seq_len: int, seed: int = 0):
    """[samples, seq_len + 1] int64 windows, disjoint and evenly spaced over `ids`."""
    import torch

    if samples < 1 or seq_len < 2:
        raise DataError(f"need samples >= 1 and seq_len >= 2 (got {samples}, {seq_len})")
    need = samples * (seq_len + 1)
    if len(ids) == 0:
        raise DataError("the calibration text is empty")
    if len(ids) < need:
        raise DataError(
            f"the calibration text has {len(ids)} tokens, fewer than samples x (seq_len+1) = {samples} x {seq_len + 1} = {need}; "
            "give more text or lower samples / seq_len",
            option=("calib", "samples", "seq_len"),
        )
    stride = len(ids) // samples
    t = torch.tensor(ids, dtype=torch.long)
    windows = torch.stack([t[i * stride: i * stride + seq_len + 1] for i in range(samples)])
    order = torch.randperm(samples, generator=torch.Generator().manual_seed(seed))
    return windows[order]


def fingerprint(windows) -> str:
    """A short hash of the exact token windows used (written into the sparsified checkpoint)."""
    return hashlib.sha256(windows.numpy().tobytes()).hexdigest()[:16]
