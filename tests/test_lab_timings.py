"""The labs' measured run times: read from the results file, never an error when it is missing."""
import json

import pytest

from ftrag import lab_timings


def test_lab_timings_missing_file_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_RESULTS_DIR", str(tmp_path))
    timings = lab_timings.lab_timings()
    assert set(timings) == set(lab_timings.TIMING_KEYS) and all(v is None for v in timings.values())
    assert lab_timings.timings_context() == ""


def test_lab_timings_reads_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_RESULTS_DIR", str(tmp_path))
    (tmp_path / "timings.json").write_text(json.dumps({
        "_profile": "cpu", "_machine": "x86_64 Linux", "_saved": "2026-01-02 03:04:05", "lab_00_setup_seconds": 41.2,
        "lab_01_rag_seconds": 190, "lab_02_qlora_seconds": "oops", "make_test_seconds": -3}))
    timings = lab_timings.lab_timings()
    assert timings["lab_00_setup_seconds"] == 41.2 and timings["lab_01_rag_seconds"] == 190.0
    assert timings["lab_02_qlora_seconds"] is None and timings["lab_03_hybrid_seconds"] is None
    assert timings["make_test_seconds"] is None
    assert lab_timings.timings_context() == "cpu profile, x86_64 Linux, written 2026-01-02 03:04:05"


def test_lab_timings_broken_file_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_RESULTS_DIR", str(tmp_path))
    (tmp_path / "timings.json").write_text("{not json")
    assert all(v is None for v in lab_timings.lab_timings().values())


@pytest.mark.parametrize("seconds, text", [
    (None, "not yet measured"), (44.6, "45 s"), (200, "3 min 20 s"), (3900, "1 h 05 min")])
def test_format_duration(seconds, text):
    assert lab_timings.format_duration(seconds) == text
