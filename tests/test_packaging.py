"""The built wheel carries what the tool needs offline: the bundled model and the calibration text; and the recipe
that made the bundled models, with its corpus manifest."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_bundled_model_and_calibration_text(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".data", ".carry", "build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                        "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("simba_convert-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("simba_convert/_calibration/default.txt", "simba_convert/models/mamba-tiny/model.safetensors",
                 "simba_convert/models/mamba-tiny/config.json", "simba_convert/models/mamba-tiny/tokenizer.json",
                 "simba_convert/cli/main.py", "simba_convert/recipes/corpus_manifest.json",
                 "simba_convert/recipes/corpus_manifest_large.json"):
        assert need in names, need
    assert not any(n.startswith(("kernels/", "calibration/", "tests/", "benchmarks/")) for n in names)
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "simba_convert").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= names, f"modules missing from the wheel: {sorted(sources - names)}"
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "simba-convert = simba_convert.cli.main:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
