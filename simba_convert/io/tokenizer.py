"""Finding and loading the tokenizer of a checkpoint (a `tokenizers` tokenizer.json).

The state-spaces/mamba-* checkpoints ship no tokenizer; they were trained with GPT-NeoX's
(`EleutherAI/gpt-neox-20b`, CHECKPOINTS.md §1.3), which is then taken from the Hugging Face cache, for a
model whose embedding has GPT-NeoX's size only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CheckpointError

DEFAULT_TOKENIZER = "EleutherAI/gpt-neox-20b"
NEOX_VOCAB, NEOX_MAX_ROWS = 50277, 50432  # its tokens; the most embedding rows a checkpoint pads them to
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


class _NotCached(Exception):
    """Not in the cache, and (offline, or the Hub does not answer) not downloadable; the message says which."""


def _download(repo_id: str, filename: str, cache: Path, local_only: bool) -> Path:
    """The cached file, else (online, and only when the Hub answers a quick probe) a download."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    from .hub import hub_unreachable

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache), local_files_only=True))
    except LocalEntryNotFoundError:
        if local_only:
            raise _NotCached("offline mode is on (offline=True or HF_HUB_OFFLINE=1)") from None
    why = hub_unreachable()
    if why:
        raise _NotCached(why)
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache)))
    except LocalEntryNotFoundError as e:  # the connection dropped after the probe
        raise _NotCached(f"the Hub cannot be reached: {str(e).splitlines()[0] if str(e) else 'no connection'}") from None


def _from_hub(repo_id: str, offline: bool, cache_dir) -> TextTokenizer:
    from huggingface_hub import constants
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError

    from .hub import offline_mode

    local_only = offline_mode(offline)
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    try:
        path = _download(repo_id, "tokenizer.json", cache, local_only)
    except _NotCached as e:
        raise CheckpointError(
            f"the checkpoint has no tokenizer.json and the tokenizer {repo_id} is not in the Hugging Face cache "
            f"({cache}), and {e}; download it while online with `hf download {repo_id} tokenizer.json "
            "tokenizer_config.json` or give the tokenizer (a tokenizer.json file or a directory holding one)",
            option="tokenizer",
        ) from None
    except (EntryNotFoundError, HfHubHTTPError) as e:
        raise CheckpointError(f"cannot get tokenizer.json of {repo_id}: {str(e).splitlines()[0]}") from None
    try:  # tokenizer_config.json names the eos token; optional
        _download(repo_id, "tokenizer_config.json", cache, local_only)
    except (_NotCached, EntryNotFoundError, HfHubHTTPError):
        pass
    return _from_file(path, repo_id)


def neox_sized(vocab_rows: int) -> bool:
    """Whether an embedding of `vocab_rows` rows fits GPT-NeoX's vocabulary as checkpoints pad it
    (50280 in state-spaces/mamba-*, 50304 in Pythia, 50432 in gpt-neox-20b)."""
    return NEOX_VOCAB <= vocab_rows <= NEOX_MAX_ROWS


def check_fits(tok: TextTokenizer, vocab_rows: int) -> TextTokenizer:
    """`tok` if every id it can produce indexes the model's embedding of `vocab_rows` rows, else a CheckpointError."""
    vocab = tok.tokenizer.get_vocab(with_added_tokens=True)
    top = max(vocab.values(), default=-1)
    if top >= vocab_rows:
        raise CheckpointError(
            f"the tokenizer {tok.source} has token ids up to {top} but the model's embedding has {vocab_rows} rows; "
            "it is not this model's tokenizer (give the one the model was trained with)", option="tokenizer")
    return tok


def load_tokenizer(ckpt_dir=None, tokenizer=None, offline: bool = False, cache_dir=None, *,
                   vocab_size: int | None = None) -> TextTokenizer:
    """The tokenizer for a checkpoint.

    Order: the explicit `tokenizer` (a tokenizer.json file, a directory holding one, or a Hub id),
    then `ckpt_dir/tokenizer.json`, then GPT-NeoX's tokenizer (the Hugging Face cache first; the Hub only
    when online and reachable). `vocab_size`, the rows of the model's embedding (padded vocabulary), when
    given: the tokenizer must fit it, and GPT-NeoX's is the fallback only for an embedding of its size.
    """
    tok = _find(ckpt_dir, tokenizer, offline, cache_dir, vocab_size)
    return tok if vocab_size is None else check_fits(tok, vocab_size)


def _find(ckpt_dir, tokenizer, offline, cache_dir, vocab_size) -> TextTokenizer:
    if tokenizer is not None:
        p = Path(os.fspath(tokenizer)).expanduser()
        if p.is_file():
            return _from_file(p, str(p))
        if p.is_dir():
            if not (p / "tokenizer.json").is_file():
                raise CheckpointError(f"no tokenizer.json in the tokenizer directory {p}", option="tokenizer")
            return _from_file(p / "tokenizer.json", str(p))
        text = os.fspath(tokenizer)
        if text.count("/") == 1 and not text.startswith((".", "/", "~")):
            return _from_hub(text, offline, cache_dir)
        raise CheckpointError(f"tokenizer {text} not found (expected a tokenizer.json, a directory or a Hub id)",
                              option="tokenizer")
    if ckpt_dir is not None and (Path(ckpt_dir) / "tokenizer.json").is_file():
        return _from_file(Path(ckpt_dir) / "tokenizer.json", str(ckpt_dir))
    if vocab_size is not None and not neox_sized(vocab_size):
        where = f"{ckpt_dir} has" if ckpt_dir is not None else "the checkpoint has"
        raise CheckpointError(
            f"{where} no tokenizer.json, and its vocabulary ({vocab_size} rows) is not GPT-NeoX's (the tokenizer of "
            "the state-spaces checkpoints); give the model's tokenizer (a tokenizer.json file or a directory)",
            option="tokenizer")
    return _from_hub(DEFAULT_TOKENIZER, offline, cache_dir)
