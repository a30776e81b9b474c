"""Committed GPU results shown beside this build's cpu figures (fixture files, no GPU needed)."""
import json

import pytest
import torch

from ftrag import gpu_results, results
from ftrag.errors import CourseError


@pytest.fixture
def cpu_results(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_RESULTS_DIR", str(tmp_path / "build"))
    results.save("rag", {"rag_hit_rate": 0.75, "rag_answer_accuracy": 0.4}, profile="cpu")
    return tmp_path


def _commit_run(root, model="Qwen/Qwen2.5-1.5B-Instruct", gpu="Tesla T4", date="2027-01-15", **values):
    folder = gpu_results.model_folder(model, root)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"gpu": gpu, "date": date, "model": model}))
    (folder / "rag.json").write_text(json.dumps({"_profile": "gpu", **values}))
    return folder


def test_gpu_figures_stand_beside_the_cpu_ones_with_where_and_when(cpu_results):
    root = cpu_results / "results-gpu"
    _commit_run(root, rag_hit_rate=0.9, rag_answer_accuracy=0.7)
    table = gpu_results.beside_cpu("rag", ["rag_hit_rate", "rag_answer_accuracy"], root=root)
    assert list(table.columns) == ["this build (cpu profile)",
                                   "measured on Tesla T4, 2027-01-15, Qwen/Qwen2.5-1.5B-Instruct"]
    assert table.loc["rag_hit_rate"].tolist() == [0.75, 0.9]
    assert table.loc["rag_answer_accuracy"].tolist() == [0.4, 0.7]


def test_without_gpu_files_the_column_says_not_yet_measured(cpu_results):
    table = gpu_results.beside_cpu("rag", ["rag_hit_rate"], root=cpu_results / "empty")
    assert table["gpu profile"].tolist() == ["not yet measured"]


def test_a_broken_run_file_names_the_fix(cpu_results):
    folder = _commit_run(cpu_results / "r", rag_hit_rate=0.9)
    (folder / "run.json").write_text(json.dumps({"gpu": "T4"}))
    with pytest.raises(CourseError, match="make results-gpu"):
        gpu_results.measured_runs(cpu_results / "r")


def test_make_results_gpu_without_cuda_stops_before_running_a_lab(monkeypatch, capsys):
    monkeypatch.setenv("FTRAG_PROFILE", "cpu")  # run_labs sets both for the kernels: restored after the test
    monkeypatch.setenv("FTRAG_GPU_MODEL", "Qwen/Qwen2.5-1.5B-Instruct")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("nbclient.NotebookClient.execute", lambda self: pytest.fail("a lab ran"))
    assert gpu_results.main(["run"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().out
