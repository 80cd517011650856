"""`--calib <dataset name>`: read through the `datasets` package (extra `[datasets]`).

These tests never reach the Hub: they put a small in-memory stand-in for the package in `sys.modules` (CI has
the real one only as a dependency of lm-eval, in the [test] extra); it implements the two calls the reader makes
(`load_dataset(name, split=...)`, then `.column_names` and `["text"]`).
"""

from __future__ import annotations

import sys
import types

import pytest

from simba_convert.calibrate.data import read_calibration_text
from simba_convert.errors import DataError


class _Dataset:
    def __init__(self, columns: dict[str, list]):
        self._columns = columns
        self.column_names = list(columns)

    def __getitem__(self, key):
        return self._columns[key]


def _fake_datasets(monkeypatch, tables: dict[str, dict]):
    calls = []

    def load_dataset(name, split=None):
        calls.append((name, split))
        if name not in tables:
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub or cannot be accessed.\nmore")
        return _Dataset(tables[name])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_dataset_name_reads_the_text_column(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the name must not resolve to a local path
    calls = _fake_datasets(monkeypatch, {"org/tiny": {"text": ["first record", "second record"], "id": [1, 2]}})
    text, source = read_calibration_text("org/tiny")
    assert text == "first record\n\nsecond record"
    assert calls == [("org/tiny", "train")]
    assert "org/tiny" in source


def test_dataset_without_text_column_is_one_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _fake_datasets(monkeypatch, {"org/nums": {"value": [1, 2]}})
    with pytest.raises(DataError, match=r"no 'text' column \(columns: value\)"):
        read_calibration_text("org/nums")


def test_missing_dataset_is_one_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _fake_datasets(monkeypatch, {})
    with pytest.raises(DataError) as e:
        read_calibration_text("org/absent")
    assert "\n" not in str(e.value) and "org/absent" in str(e.value)


def test_without_the_package_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DataError, match=r"simba-convert\[datasets\]"):
        read_calibration_text("org/tiny")


@pytest.mark.parametrize("calib", ["./missing", "a/b/c", "/nonexistent/x", "notes.txt", "org/data.jsonl"])
def test_what_can_only_be_a_path_is_a_missing_file(monkeypatch, tmp_path, calib):
    monkeypatch.chdir(tmp_path)
    calls = _fake_datasets(monkeypatch, {})
    with pytest.raises(DataError, match="does not exist"):
        read_calibration_text(calib)
    assert calls == []  # never looked up as a dataset
