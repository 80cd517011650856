"""Train the byte-level BPE tokenizer of the bundled models on the training split.

    python3 -m simba_convert.recipes.tokenizer [--train .data/corpus/train.txt] [--out .data/tokenizer.json]
                                               [--vocab-size 8192] [--check-determinism]

Byte-level BPE (GPT-2 style pre-tokenizer, no prefix space), vocabulary 8192 with `<|endoftext|>`
as id 0. Why not the GPT-NeoX tokenizer of the state-spaces checkpoints: its 50k vocabulary would
put 50280 x 256 = 12.9 M parameters in the embedding of a d_model=256 model, more than the whole
Mamba backbone and more than the 16 MB budget of the bundled model on its own.

Determinism: documents are fed in file order and the trainer runs on one thread (RAYON_NUM_THREADS
is set before `tokenizers` is imported), so the same text gives the same tokenizer.json byte for
byte; `--check-determinism` trains twice and compares the SHA256 of the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

EOT = "<|endoftext|>"


def _single_thread() -> None:
    # Must happen before tokenizers spins up its thread pool (on first use, after import).
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def documents(text: str) -> list[str]:
    """The corpus files separate sources with EOT; BPE is trained on the pieces, never on EOT itself."""
    return [d for d in text.split(EOT) if d]


def train_tokenizer(docs: list[str], vocab_size: int = 8192) -> str:
    """Train a byte-level BPE on `docs` and return its JSON serialisation (EOT is id 0)."""
    _single_thread()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    if tok.token_to_id(EOT) != 0:
        raise RuntimeError(f"{EOT} did not get id 0")
    return tok.to_str(pretty=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, default=Path(".data/corpus/train.txt"))
    p.add_argument("--out", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--check-determinism", action="store_true", help="train twice and compare the JSON hashes")
    args = p.parse_args(argv)

    docs = documents(args.train.read_text(encoding="utf-8"))
    js = train_tokenizer(docs, args.vocab_size)
    digest = hashlib.sha256(js.encode()).hexdigest()
    if args.check_determinism:
        again = hashlib.sha256(train_tokenizer(docs, args.vocab_size).encode()).hexdigest()
        if again != digest:
            print(f"error: two trainings differ: {digest} vs {again}", file=sys.stderr)
            return 1
        print("determinism: two trainings gave identical JSON")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(js, encoding="utf-8")
    tmp.replace(args.out)
    print(f"{args.out}: vocab {args.vocab_size}, {len(js.encode()):,d} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
