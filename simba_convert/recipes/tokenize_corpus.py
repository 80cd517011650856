"""Tokenize the train/valid splits into uint16 token files for training.

    python3 -m simba_convert.recipes.tokenize_corpus [--corpus .data/corpus] [--tokenizer .data/tokenizer.json]
                                                     [--out .data/tokens]

Writes `<out>/{train,valid}.u16.npy` (numpy .npy, dtype uint16, 1-D) and `<out>/tokens.json`
(counts, tokenizer SHA256). Each source is encoded on its own and followed by `<|endoftext|>`
(id 0), so no BPE merge crosses a source boundary and the model sees where documents end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from .tokenizer import EOT, documents


def encode_documents(tokenizer_json: str, docs: list[str]) -> np.ndarray:
    """Encode each document and append the EOT id after it -> uint16 array [T]."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    eot = tok.token_to_id(EOT)
    if tok.get_vocab_size() > 2**16:
        raise ValueError("vocabulary too large for uint16 token files")
    ids: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=np.uint16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path(".data/corpus"))
    p.add_argument("--tokenizer", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--out", type=Path, default=Path(".data/tokens"))
    args = p.parse_args(argv)

    tj = args.tokenizer.read_text(encoding="utf-8")
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"tokenizer_sha256": hashlib.sha256(tj.encode()).hexdigest(), "dtype": "uint16"}
    for split in ("train", "valid"):
        text = (args.corpus / f"{split}.txt").read_text(encoding="utf-8")
        arr = encode_documents(tj, documents(text))
        tmp = args.out / f"{split}.u16.tmp.npy"
        np.save(tmp, arr)
        tmp.replace(args.out / f"{split}.u16.npy")
        info[split] = {"tokens": int(arr.size), "chars": len(text), "chars_per_token": round(len(text) / arr.size, 3)}
        print(f"{args.out / (split + '.u16.npy')}: {arr.size:,d} tokens ({len(text) / arr.size:.2f} chars/token)")
    (args.out / "tokens.json").write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
