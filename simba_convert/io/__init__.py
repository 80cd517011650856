"""Checkpoint I/O: resolving `--in`, reading and writing checkpoints, tokenizers (see load.py)."""
