import json
import math

import pytest

from ftrag import results
from ftrag.errors import CourseError


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_RESULTS_DIR", str(tmp_path))


def test_save_and_load_round_trip_with_stamp():
    results.save("rag", {"rag_hit_at_5": 0.97, "rag_chunk_size": 128}, profile="cpu")
    loaded = results.load("rag")
    assert loaded["rag_hit_at_5"] == 0.97 and loaded["_profile"] == "cpu"


def test_nan_is_stored_as_null_not_as_invalid_json(tmp_path):
    path = results.save("comparison", {"cmp_base_update_seconds": math.nan}, profile="cpu")
    assert json.loads(path.read_text())["cmp_base_update_seconds"] is None


def test_unknown_lab_and_missing_results_name_the_fix():
    with pytest.raises(CourseError, match="Unknown results name"):
        results.save("nope", {}, profile="cpu")
    with pytest.raises(CourseError, match="Run the lab"):
        results.load("qlora")


def test_timings_merge():
    results.update_timings(lab_01_rag_seconds=100.0)
    results.update_timings(lab_01_rag_peak_gb=1.5)
    timings = results.load_timings()
    assert timings["lab_01_rag_seconds"] == 100.0 and timings["lab_01_rag_peak_gb"] == 1.5
    assert 0 < results.peak_memory_gb() < 100


def test_peak_memory_is_the_process_own_not_its_parents():
    """A lab kernel is forked from a big process (pytest, jupyter-book); on Linux ``ru_maxrss``
    would report the parent's peak. The child must report only its own."""
    import subprocess
    import sys

    big = bytearray(600 * 10**6)  # this process's peak is now at least 0.6 GB
    big[::4096] = b"x" * len(big[::4096])
    del big
    child = subprocess.run([sys.executable, "-c", "from ftrag import results; print(results.peak_memory_gb())"],
                           capture_output=True, text=True, check=True)
    assert results.peak_memory_gb() >= 0.6
    assert float(child.stdout) < 0.3, child.stdout


def test_lab_peak_keeps_the_highest_run_since_build_was_cleaned(monkeypatch):
    monkeypatch.setattr(results, "peak_memory_gb", lambda: 3.4)
    assert results.record_lab_memory("lab_02_qlora") == 3.4
    monkeypatch.setattr(results, "peak_memory_gb", lambda: 1.7)   # the book build's warm re-run
    assert results.record_lab_memory("lab_02_qlora") == 1.7
    assert results.load_timings()["lab_02_qlora_peak_gb"] == 3.4
    monkeypatch.setattr(results, "peak_memory_gb", lambda: 3.9)
    results.record_lab_memory("lab_02_qlora")
    assert results.load_timings()["lab_02_qlora_peak_gb"] == 3.9


def test_peak_memory_reads_vmhwm_as_kib(tmp_path):
    """/proc gives VmHWM in "kB" that are KiB: 1,000,000 of them are 1.024 GB (10**9 bytes)."""
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 2000000 kB\nVmHWM:\t 1000000 kB\nVmRSS:\t  500000 kB\n")
    assert results.peak_memory_gb(status) == pytest.approx(1.024)


def test_a_torn_timings_file_names_the_file_and_the_fix(tmp_path):
    path = results.update_timings(lab_01_rag_seconds=100.0)
    path.write_text('{"lab_01_rag_seconds": 10')  # a write cut short
    for call in (results.load_timings, lambda: results.update_timings(lab_02_qlora_seconds=1.0)):
        with pytest.raises(CourseError, match=r"timings\.json is not valid JSON.*Delete it"):
            call()
    assert path.read_text() == '{"lab_01_rag_seconds": 10'  # left for the reader to see, not overwritten
