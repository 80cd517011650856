"""The files that let transformers load a sparsified checkpoint and run it pruned: the `auto_map` of its marked
config.json (`format.mark`) names them, and `write_remote_code` copies them beside the weights.

`configuration_simba.py` and `modeling_simba.py` here are those files, copied verbatim (simba-convert's own
code, versioned with it). They import transformers, so simba-convert never imports them itself; the model they
build is `simba_convert.load(path)`'s (`SimbaForCausalLM.from_pretrained`). transformers runs them only when asked
with trust_remote_code=True, and refuses the checkpoint with its own message otherwise.
"""

from __future__ import annotations

from pathlib import Path

FILES = ("configuration_simba.py", "modeling_simba.py")


def remote_code(name: str) -> str:
    """The text of one of FILES."""
    from importlib import resources

    if name not in FILES:
        raise ValueError(f"not a remote code file: {name!r}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def write_remote_code(dest: str | Path) -> None:
    """Write FILES into the checkpoint directory `dest`."""
    for name in FILES:
        (Path(dest) / name).write_text(remote_code(name), encoding="utf-8")
