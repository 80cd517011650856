"""Finding and loading the tokenizer of a checkpoint (a `tokenizers` tokenizer.json).

The state-spaces/mamba-* checkpoints ship no tokenizer; they were trained with GPT-NeoX's
(`EleutherAI/gpt-neox-20b`, CHECKPOINTS.md §1.3), which is then taken from the Hugging Face cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CheckpointError

DEFAULT_TOKENIZER = "EleutherAI/gpt-neox-20b"
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


class TextTokenizer:
    """A thin wrapper over `tokenizers.Tokenizer`: ids as plain lists, no special tokens added."""

    def __init__(self, tokenizer, source: str, eos_token_id: int | None = None):
        self.tokenizer = tokenizer  # the underlying tokenizers.Tokenizer
        self.source = source
        self.eos_token_id = eos_token_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def save(self, path: str) -> None:
        self.tokenizer.save(path)

    def __repr__(self) -> str:
        return f"TextTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, eos_token_id={self.eos_token_id})"


def _eos_id(tok, config_dir: Path | None) -> int | None:
    """The eos token: tokenizer_config.json's `eos_token` if there is one, else a well-known name."""
    names = list(_EOS_CANDIDATES)
    cfg_path = config_dir / "tokenizer_config.json" if config_dir else None
    if cfg_path and cfg_path.is_file():
        try:
            eos = json.loads(cfg_path.read_text(encoding="utf-8")).get("eos_token")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            eos = None
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str):
            names.insert(0, eos)
    for name in names:
        i = tok.token_to_id(name)
        if i is not None:
            return i
    return None


def _from_file(path: Path, source: str) -> TextTokenizer:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable JSON
        raise CheckpointError(f"{path} is not a readable tokenizer.json ({str(e).splitlines()[0]})") from None
    return TextTokenizer(tok, source, _eos_id(tok, path.parent))


def _from_hub(repo_id: str, offline: bool, cache_dir) -> TextTokenizer:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    local_only = bool(offline or constants.HF_HUB_OFFLINE)
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    try:
        path = Path(hf_hub_download(repo_id, "tokenizer.json", cache_dir=str(cache), local_files_only=local_only))
        try:  # tokenizer_config.json names the eos token; optional
            hf_hub_download(repo_id, "tokenizer_config.json", cache_dir=str(cache), local_files_only=local_only)
        except (LocalEntryNotFoundError, EntryNotFoundError, HfHubHTTPError):
            pass
    except LocalEntryNotFoundError:
        why = "offline mode is on (--offline or HF_HUB_OFFLINE=1)" if local_only else "the Hub cannot be reached"
        raise CheckpointError(
            f"the checkpoint has no tokenizer.json and the tokenizer {repo_id} is not in the Hugging Face cache "
            f"({cache}), and {why}; download it while online with `hf download {repo_id} tokenizer.json "
            "tokenizer_config.json` or pass --tokenizer FILE_OR_DIR"
        ) from None
    except (EntryNotFoundError, HfHubHTTPError) as e:
        raise CheckpointError(f"cannot get tokenizer.json of {repo_id}: {str(e).splitlines()[0]}") from None
    return _from_file(path, repo_id)


def load_tokenizer(ckpt_dir=None, tokenizer=None, offline: bool = False, cache_dir=None) -> TextTokenizer:
    """The tokenizer for a checkpoint.

    Order: the explicit `tokenizer` (a tokenizer.json file, a directory holding one, or a Hub id),
    then `ckpt_dir/tokenizer.json`, then GPT-NeoX's tokenizer from the Hugging Face cache.
    """
    if tokenizer is not None:
        p = Path(os.fspath(tokenizer)).expanduser()
        if p.is_file():
            return _from_file(p, str(p))
        if p.is_dir():
            if not (p / "tokenizer.json").is_file():
                raise CheckpointError(f"no tokenizer.json in the tokenizer directory {p}")
            return _from_file(p / "tokenizer.json", str(p))
        text = os.fspath(tokenizer)
        if text.count("/") == 1 and not text.startswith((".", "/", "~")):
            return _from_hub(text, offline, cache_dir)
        raise CheckpointError(f"tokenizer {text} not found (expected a tokenizer.json, a directory or a Hub id)")
    if ckpt_dir is not None and (Path(ckpt_dir) / "tokenizer.json").is_file():
        return _from_file(Path(ckpt_dir) / "tokenizer.json", str(ckpt_dir))
    return _from_hub(DEFAULT_TOKENIZER, offline, cache_dir)
