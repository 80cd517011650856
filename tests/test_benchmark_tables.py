"""BENCHMARKS.md's generated tables match the results files they are rendered from (benchmarks/tables.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_tables_are_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_fails_when_a_table_drifts(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tables

    doc = (ROOT / "BENCHMARKS.md").read_text()
    drifted = doc.replace("<!-- generated:vs_mamba_prefill -->\n", "<!-- generated:vs_mamba_prefill -->\n| edited |\n")
    assert drifted != doc
    assert tables.render(drifted, tables.regions()) == tables.render(doc, tables.regions())
    assert tables.render(drifted, tables.regions()) != drifted
