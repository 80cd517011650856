"""Tokenize the train/valid splits into uint16 token files for training.

    python3 -m simba_convert.recipes.tokenize_corpus [--corpus small|large|DIR] [--tokenizer .data/tokenizer.json]
                                                     [--out DIR]

`--corpus small` (the default) reads `.data/corpus` and writes `.data/tokens`; `--corpus large` reads
`.data/corpus-large` and writes `.data/tokens-large`; a folder name reads that folder (output `.data/tokens`
unless `--out` says otherwise). Both corpora are encoded with the one tokenizer trained on the small corpus
(the bundled models' vocabulary).

Writes `<out>/{train,valid}.u16.npy` (numpy .npy, dtype uint16, 1-D) and `<out>/tokens.json`
(counts, per source when the corpus folder has its build.json, tokenizer SHA256). Each source is encoded on
its own and followed by `<|endoftext|>` (id 0), so no BPE merge crosses a source boundary and the model sees
where documents end. A long source is encoded in pieces of about a million characters (`pieces`), cut where
the pre-tokenizer always cuts, so that memory stays bounded and the ids are those of the whole source.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

from .tokenizer import EOT, documents


CORPORA = {"small": (".data/corpus", ".data/tokens"), "large": (".data/corpus-large", ".data/tokens-large")}
PIECE_CHARS = 1 << 20
# At a lone newline (a non-space character on each side) GPT-2's byte-level pre-tokenizer always ends a pre-token
# after the newline, in the whole text and at the end of a piece alike (the newline is a pre-token of its own;
# no pattern goes on from it to a non-space), and BPE merges never cross pre-tokens: encoding the pieces gives the
# ids of the whole. (After two newlines it would not: at the end of a piece "\n\n" is one pre-token, inside the
# text it is two.)
_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def pieces(doc: str, size: int = PIECE_CHARS) -> list[str]:
    """`doc` cut into pieces of at least `size` characters (the last may be shorter), each ending with a lone
    newline (`_CUT`)."""
    out, start = [], 0
    while len(doc) - start > size:
        m = _CUT.search(doc, start + size)
        if m is None:
            break
        out.append(doc[start:m.end()])
        start = m.end()
    out.append(doc[start:])
    return out


def encode_documents(tokenizer_json: str, docs: list[str], piece_chars: int = PIECE_CHARS,
                     counts: list | None = None) -> np.ndarray:
    """Encode each document and append the EOT id after it -> uint16 array [T]. `counts`, if given, receives
    each document's token count (its EOT not included)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    eot = tok.token_to_id(EOT)
    if tok.get_vocab_size() > 2**16:
        raise ValueError("vocabulary too large for uint16 token files")
    arrays: list[np.ndarray] = []
    for doc in docs:
        n = 0
        parts = pieces(doc, piece_chars)
        for i in range(0, len(parts), 8):  # a few pieces per batch: bounded memory, both cores busy
            for enc in tok.encode_batch(parts[i:i + 8], add_special_tokens=False):
                arrays.append(np.asarray(enc.ids, dtype=np.uint16))
                n += arrays[-1].size
        arrays.append(np.asarray([eot], dtype=np.uint16))
        if counts is not None:
            counts.append(n)
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="small", help="small, large, or a folder with {train,valid}.txt")
    p.add_argument("--tokenizer", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--out", type=Path, default=None, help="default .data/tokens (small), .data/tokens-large (large)")
    args = p.parse_args(argv)
    corpus, out = CORPORA.get(args.corpus, (args.corpus, ".data/tokens"))
    corpus, out = Path(corpus), args.out or Path(out)

    tj = args.tokenizer.read_text(encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    build = json.loads((corpus / "build.json").read_text()) if (corpus / "build.json").is_file() else {}
    names = list(build.get("sources", {}))
    info = {"corpus": str(corpus), "tokenizer_sha256": hashlib.sha256(tj.encode()).hexdigest(), "dtype": "uint16"}
    for split in ("train", "valid"):
        text = (corpus / f"{split}.txt").read_text(encoding="utf-8")
        docs = documents(text)
        counts: list[int] = []
        arr = encode_documents(tj, docs, counts=counts)
        tmp = out / f"{split}.u16.tmp.npy"
        np.save(tmp, arr)
        tmp.replace(out / f"{split}.u16.npy")
        info[split] = {"tokens": int(arr.size), "chars": len(text), "chars_per_token": round(len(text) / arr.size, 3),
                       "sha256": hashlib.sha256((out / f"{split}.u16.npy").read_bytes()).hexdigest()}
        if len(names) == len(docs):
            info[split]["sources"] = {n: {"tokens": c, "chars": len(d)} for n, c, d in zip(names, counts, docs)}
        print(f"{out / (split + '.u16.npy')}: {arr.size:,d} tokens ({len(text) / arr.size:.2f} chars/token)",
              flush=True)
        del text, docs, arr
    (out / "tokens.json").write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
