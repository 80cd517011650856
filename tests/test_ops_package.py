"""The `simba_convert.ops` package: its public ops are functions (never shadowed by a subpackage), it imports
without torch, and its folders keep the layout of CONTRIBUTING.md (a reference imports no kernel, no op folder
imports another's modules)."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import simba_convert.ops as ops
from tolerance import assert_matches

ROOT = Path(__file__).resolve().parents[1]
OPS_DIR = ROOT / "simba_convert" / "ops"
FOLDERS = sorted(p.name for p in OPS_DIR.iterdir() if (p / "__init__.py").is_file())
# Modules at ops/ level that every folder may use; the torch-only leaves are the ones a reference may use.
SHARED = {"_alloc", "_common", "_score_common", "_triton_common", "backend"}
REFERENCE_MAY_IMPORT = {"simba_convert.errors", "simba_convert.names", "simba_convert.ops._common",
                        "simba_convert.ops._score_common"}


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_impact_score_is_the_callable_op():
    g = torch.Generator().manual_seed(3)
    bsz, L, D, N = 2, 19, 6, 4
    u, delta = torch.randn(bsz, L, D, generator=g), torch.rand(bsz, L, D, generator=g) + 0.1
    A = -torch.rand(D, N, generator=g) - 0.5
    B, C = torch.randn(bsz, L, N, generator=g), torch.randn(bsz, L, N, generator=g)
    assert callable(ops.impact_score) and ops.impact_score is importlib.import_module("simba_convert.ops.score").impact_score
    for criterion in ("last", "global", "delta"):
        got = ops.impact_score(u, delta, A, B, C, criterion=criterion)
        assert_matches(got, ops.impact_score_ref(u, delta, A, B, C, criterion=criterion))


def test_no_subpackage_hides_an_op():
    """Importing every module of the package (as tests and the model do) leaves each public op a function."""
    for info in pkgutil.walk_packages(ops.__path__, "simba_convert.ops."):
        if not info.name.rsplit(".", 1)[-1].startswith("triton"):  # kernels: covered by their own tests
            importlib.import_module(info.name)
    assert set(FOLDERS).isdisjoint(ops.__all__), "an op folder is named like an op"
    for name in ops.__all__:
        fn = getattr(ops, name)
        assert callable(fn) and not isinstance(fn, types.ModuleType) and fn.__name__ == name, name
    assert set(ops.__all__) <= set(dir(ops))


def test_import_order_does_not_matter_and_torch_stays_unloaded():
    code = (
        "import sys, simba_convert.ops as ops\n"
        "assert 'torch' not in sys.modules, 'import simba_convert.ops imported torch'\n"
        "import simba_convert.ops.score, simba_convert.ops.scan\n"
        "assert callable(ops.impact_score) and callable(ops.selective_scan)\n"
        "from simba_convert.ops import impact_score_ssd\n"
        "assert callable(impact_score_ssd) and 'triton' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr


def _imports(path: Path) -> set[str]:
    """Absolute names of the simba_convert modules `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).parts[:-1])  # what `from . import` names, for a module or __init__
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from . import x` names a module; `from .m import f` names m
                sub = f"{base}.{alias.name}"
                found.add(sub if (ROOT / Path(*sub.split("."))).exists() or
                          (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n.startswith("simba_convert")}


@pytest.mark.parametrize("folder", FOLDERS)
def test_op_folder_layout(folder):
    files = sorted((OPS_DIR / folder).glob("*.py"))
    assert {"__init__.py", "naive.py"} <= {f.name for f in files}
    allowed = {f"simba_convert.ops.{m}" for m in SHARED} | {"simba_convert.errors", "simba_convert.names"}
    own = f"simba_convert.ops.{folder}"
    for f in files:
        for name in _imports(f):
            assert name in allowed or name == own or name.startswith(own + "."), f"{f.name} imports {name}"
    leaf = _imports(OPS_DIR / folder / "naive.py")
    assert leaf <= REFERENCE_MAY_IMPORT, f"{folder}/naive.py imports {sorted(leaf - REFERENCE_MAY_IMPORT)}"


def test_shared_torch_helpers_are_leaves():
    for name in ("_common", "_score_common"):
        assert _imports(OPS_DIR / f"{name}.py") <= REFERENCE_MAY_IMPORT, name
