"""Turn a model source (`src`, the CLI's `--in`) into a local checkpoint directory (CHECKPOINTS.md §4).

Accepted forms, tried in this order:
1. an existing local directory;
2. a short name: `mamba-tiny` or `mamba2-tiny` (bundled with the package: trained Mamba-1 and Mamba-2 models),
   `mamba-130m|370m|790m|1.4b|2.8b[-hf]` and `mamba2-130m|370m|780m|1.3b|2.7b` (-> `state-spaces/...` on the Hub),
   `falcon-mamba-7b` (tiiuae) or `mamba-codestral-7b` (mistralai/Mamba-Codestral-7B-v0.1);
3. a Hub id `org/name`, resolved through the Hugging Face cache (downloaded unless offline).
huggingface_hub is imported only for case 3 and for short names of Hub models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .layout import CONFIG, find_weights

HUB_SIZES = ("130m", "370m", "790m", "1.4b", "2.8b")
MAMBA2_SIZES = ("130m", "370m", "780m", "1.3b", "2.7b")
SHORT_NAMES = {
    **{f"mamba-{size}{suffix}": f"state-spaces/mamba-{size}{suffix}" for size in HUB_SIZES for suffix in ("", "-hf")},
    **{f"mamba2-{size}": f"state-spaces/mamba2-{size}" for size in MAMBA2_SIZES},
    "falcon-mamba-7b": "tiiuae/falcon-mamba-7b",
    "mamba-codestral-7b": "mistralai/Mamba-Codestral-7B-v0.1",
}
BUNDLED = ("mamba-tiny", "mamba2-tiny")
ACCEPTED = (
    "a local checkpoint directory, a short name (mamba-tiny, mamba-{" + ",".join(HUB_SIZES) + "}[-hf], mamba2-tiny, "
    "mamba2-{" + ",".join(MAMBA2_SIZES) + "}, falcon-mamba-7b, mamba-codestral-7b) or a Hugging Face Hub id such as "
    "state-spaces/mamba-1.4b"
)
# Files a Hub snapshot is filtered to: config, safetensors weights, tokenizer. .bin only as a fallback,
# so that a repo with both formats is not downloaded twice.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "tokenizer.model"]
_HUB_BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model*.bin.index.json"]


@dataclass(frozen=True)
class Resolved:
    """Where a checkpoint was found: `path` is a local directory; `kind` is local, bundled or hub."""

    path: Path
    kind: str
    repo_id: str | None = None


def bundled_root() -> Path:
    """simba_convert/models/, where models shipped with the package live (package data)."""
    from importlib import resources

    try:
        return Path(str(resources.files("simba_convert") / "models"))
    except (ModuleNotFoundError, TypeError):  # an unusual loader: fall back to the source tree
        return Path(__file__).resolve().parent.parent / "models"


def bundled_model_dir(name: str) -> Path:
    """The directory of a model shipped inside the package (simba_convert/models/<name>/)."""
    path = bundled_root() / name
    if not (path / CONFIG).is_file():
        raise CheckpointError(
            f"the bundled model {name!r} is missing from this installation (expected {path}); "
            "reinstall simba-convert or pass a checkpoint directory"
        )
    return path


def resolve(src: str | os.PathLike, *, offline: bool = False, cache_dir: str | os.PathLike | None = None,
            revision: str | None = None) -> Resolved:
    """Resolve SRC to a local directory holding config.json and weights; one-line CheckpointError otherwise."""
    text = os.fspath(src)
    if not text.strip():
        raise CheckpointError(f"no model given; expected {ACCEPTED}", option="src")
    path = Path(text).expanduser()
    if path.is_dir():
        return _checked(Resolved(path, "local"))
    if text in BUNDLED:
        return _checked(Resolved(bundled_model_dir(text), "bundled"))
    if path.exists():
        raise CheckpointError(f"{text} is a file; expected a checkpoint directory ({ACCEPTED})", option="src")
    if _looks_like_path(text):
        raise CheckpointError(f"checkpoint directory {text} does not exist; expected {ACCEPTED}", option="src")
    repo_id = SHORT_NAMES.get(text, text)
    if not _is_repo_id(repo_id):
        raise CheckpointError(f"unknown model {text!r}; expected {ACCEPTED}", option="src")
    return _checked(Resolved(_hub_snapshot(repo_id, offline, cache_dir, revision), "hub", repo_id))


def _looks_like_path(text: str) -> bool:
    """Clearly a filesystem path (`org/name` is ambiguous and is tried as a Hub id)."""
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")


def _is_repo_id(text: str) -> bool:
    """Exactly `org/name`, valid for the Hub. Single-segment ids are legal there but never what we mean."""
    if text.count("/") != 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _checked(r: Resolved) -> Resolved:
    """A cached snapshot can be incomplete (CHECKPOINTS.md §4): make sure config and weights are there."""
    where = f"the cached snapshot of {r.repo_id} ({r.path})" if r.kind == "hub" else str(r.path)
    if not (r.path / CONFIG).is_file():
        hint = "; the download is incomplete, download it again" if r.kind == "hub" else ""
        raise CheckpointError(f"no {CONFIG} in {where}; not a model checkpoint directory{hint}")
    try:
        find_weights(r.path)
    except CheckpointError as e:
        if r.kind != "hub":
            raise
        raise CheckpointError(f"{e} (in {where}; the download is incomplete, download it again)") from None
    return r


def hub_cache_dir(cache_dir=None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE)


def _hub_snapshot(repo_id: str, offline: bool, cache_dir, revision) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    from .hub import hub_unreachable, offline_mode

    cache = hub_cache_dir(cache_dir)
    local_only = offline_mode(offline)
    unreachable = None if local_only else hub_unreachable()  # then only the cache is read: no 25 s of retries
    kw = dict(cache_dir=str(cache), revision=revision, local_files_only=local_only or unreachable is not None)
    try:
        snap = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, **kw))
        if not _has_weights(snap):
            snap = Path(snapshot_download(repo_id, allow_patterns=_HUB_BIN_PATTERNS, **kw))
        return snap
    except LocalEntryNotFoundError:
        why = "offline mode is on (offline=True or HF_HUB_OFFLINE=1)" if local_only else (unreachable or "the Hub cannot be reached")
        raise CheckpointError(
            f"{repo_id} is not a local directory and is not in the Hugging Face cache ({cache}), and {why}; "
            f"download it first while online (HF_HUB_OFFLINE unset) with `hf download {repo_id}` (older huggingface_hub: `huggingface-cli download`), "
            "or give a local directory", option="src"
        ) from None
    except GatedRepoError:
        raise CheckpointError(f"{repo_id} is gated on the Hub; accept its terms and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"no model {repo_id!r} on the Hub (or it is private); expected {ACCEPTED}",
                              option="src") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo_id} has no revision {revision!r}") from None
    except HfHubHTTPError as e:
        raise CheckpointError(f"downloading {repo_id} failed: {str(e).splitlines()[0]}") from None


def _has_weights(path: Path) -> bool:
    try:
        find_weights(path)
    except CheckpointError:
        return False
    return True
