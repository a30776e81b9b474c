"""GPU results: the labs' measured figures from a run on the gpu profile, committed to the repository
and shown beside the cpu profile's own.

``make results-gpu`` (on a machine with a CUDA GPU and hub access) runs ``python -m ftrag.gpu_results
run``: it executes labs 1-3 with ``FTRAG_PROFILE=gpu``, and copies the JSON files they save
(:mod:`ftrag.results`: ``rag``, ``qlora``, ``comparison``) to ``results/gpu/<model>/``, with a
``run.json`` that says which GPU, which model and when. Commit that folder; :func:`beside_cpu` then
puts its figures next to this build's cpu figures, headed "measured on <GPU>, <date>, <model>".
Nothing is shown as a GPU figure that is not in such a file.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import results
from .errors import CourseError
from .paths import REPO_ROOT

GPU_RESULTS_DIR = REPO_ROOT / "results" / "gpu"
RUN_FILE = "run.json"
#: The labs that save results, with the results name each one saves under.
LAB_RESULTS = {"01_rag": "rag", "02_qlora": "qlora", "03_hybrid": "comparison"}
NOT_MEASURED = "not yet measured"


def model_folder(model_id: str, root: Path | None = None) -> Path:
    return (root or GPU_RESULTS_DIR) / model_id.split("/")[-1]


def measured_runs(root: Path | None = None) -> list[dict[str, Any]]:
    """Every committed GPU run under ``root`` (default ``results/gpu``): its ``run.json`` plus the
    saved results of each lab, as ``{"gpu", "date", "model", "labs": {results name: values}}``."""
    root = root or GPU_RESULTS_DIR
    runs = []
    for run_file in sorted(root.glob(f"*/{RUN_FILE}")):
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
            labs = {p.stem: json.loads(p.read_text(encoding="utf-8"))
                    for p in sorted(run_file.parent.glob("*.json")) if p.name != RUN_FILE}
        except ValueError as exc:
            raise CourseError(f"{run_file.parent} holds a file that is not valid JSON ({exc}); restore it "
                              "from git or run `make results-gpu` again.") from exc
        missing = {"gpu", "date", "model"} - set(run)
        if missing:
            raise CourseError(f"{run_file} lacks {sorted(missing)}; run `make results-gpu` again.")
        runs.append({**run, "labs": labs})
    return runs


def heading(run: dict[str, Any]) -> str:
    return f"measured on {run['gpu']}, {run['date']}, {run['model']}"


def beside_cpu(lab: str, keys: Sequence[str], *, root: Path | None = None):
    """A table (pandas DataFrame) of ``keys`` from ``lab``'s saved results: this build's figures (the
    profile it ran on) in the first column, each committed GPU run in a column headed "measured on
    <GPU>, <date>, <model>", or one column saying "not yet measured" when there is none."""
    import pandas as pd

    if lab not in results.LABS:
        raise CourseError(f"Unknown results name {lab!r}; use one of {results.LABS}.")
    here = results.load(lab)
    columns = {f"this build ({here.get('_profile', '?')} profile)": [here.get(k) for k in keys]}
    runs = [r for r in measured_runs(root) if lab in r["labs"]]
    for run in runs:
        columns[heading(run)] = [run["labs"][lab].get(k) for k in keys]
    if not runs:
        columns["gpu profile"] = [NOT_MEASURED] * len(keys)
    return pd.DataFrame(columns, index=list(keys))


# --------------------------------------------------------------------------- producing them


def run_labs(model_id: str, *, root: Path | None = None, labs: Sequence[str] = tuple(LAB_RESULTS),
             timeout: int = 3600) -> Path:
    """Execute ``labs`` on the gpu profile with ``model_id`` and copy what they saved to
    ``results/gpu/<model>/``. Needs CUDA (checked first) and, the first time, the hub."""
    import nbformat
    import torch
    from nbclient import NotebookClient

    from .profiles import GPU_MODEL_ENV, PROFILE_ENV, get_profile

    os.environ[PROFILE_ENV], os.environ[GPU_MODEL_ENV] = "gpu", model_id
    get_profile("gpu")  # no CUDA, or a model too large for this card: one clear line, before any lab runs
    for name in labs:
        print(f"==> running labs/{name}.ipynb on the gpu profile ({model_id})", flush=True)
        notebook = nbformat.read(REPO_ROOT / "labs" / f"{name}.ipynb", as_version=4)
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO_ROOT / "labs")}}).execute()
    folder = model_folder(model_id, root)
    folder.mkdir(parents=True, exist_ok=True)
    for name in labs:
        shutil.copyfile(results.path_of(LAB_RESULTS[name]), folder / f"{LAB_RESULTS[name]}.json")
    run = {"gpu": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"), "model": model_id}
    (folder / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["run"]:
        print("usage: python -m ftrag.gpu_results run   (FTRAG_GPU_MODEL picks the model)")
        return 2
    from .profiles import DEFAULT_GPU_MODEL, GPU_MODEL_ENV

    try:
        folder = run_labs(os.environ.get(GPU_MODEL_ENV, DEFAULT_GPU_MODEL))
    except CourseError as exc:
        print(exc)
        return 1
    print(f"==> saved to {folder}; commit it (git add {folder.relative_to(REPO_ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
