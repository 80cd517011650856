"""How the bundled models were made: the training corpus, the tokenizer and the training recipe (README.md here).

Each module is a command (`python3 -m simba_convert.recipes.<name>`) and importable for its functions:

| module | what |
|---|---|
| `corpus` | rebuild the public-domain corpus from registry packages, check it (`corpus_manifest.json`), split it |
| `corpus_sources`, `corpus_rdata` | the five sources and how each text is extracted; a reader of R's data format |
| `tokenizer` | the byte-level BPE (vocabulary 8192, `<|endoftext|>` = id 0), trained deterministically |
| `tokenize_corpus` | the uint16 token files the training reads |
| `train` | train one Mamba-1 or Mamba-2 LM (mamba_ssm's init, AdamW, cosine), resumable, mamba_ssm checkpoint layout |
| `family` | train `mamba-tiny` and `family-l` with one command, and pack them for the trip back from the GPU |

Nothing here is imported by the package itself or by the command line; importing this package imports nothing heavy.
"""
