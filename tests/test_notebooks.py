"""The labs as source files: clean, bootstrapped, in the table of contents, carrying the labels
that the chapters link to. (Executing them is nbval's job: `pytest` collects every .ipynb.)"""
import json
import re
from pathlib import Path

import pytest

from ftrag.bootstrap import BOOTSTRAP_CELL
from ftrag.paths import REPO_ROOT

SKIP_PARTS = {".venv", "_build", ".cache", ".ipynb_checkpoints", "node_modules"}
NOTEBOOKS = sorted(p for p in REPO_ROOT.rglob("*.ipynb") if not SKIP_PARTS & set(p.relative_to(REPO_ROOT).parts))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_there_are_labs():
    assert {p.stem for p in NOTEBOOKS} >= {"00_setup", "01_rag", "02_qlora", "03_hybrid"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_is_the_shared_bootstrap(path):
    assert "".join(_cells(path)[0]["source"]) == BOOTSTRAP_CELL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                f"{path.name}: clear outputs before committing (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_is_in_the_toc(path):
    toc = (REPO_ROOT / "_toc.yml").read_text()
    assert f"file: {path.relative_to(REPO_ROOT).with_suffix('').as_posix()}" in toc


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_stay_small(path):
    for cell in _cells(path)[1:]:
        if cell["cell_type"] == "code":
            lines = [l for l in "".join(cell["source"]).splitlines() if l.strip() and not l.strip().startswith("#")]
            assert len(lines) <= 16, f"{path.name}: a {len(lines)}-line cell; move the logic into ftrag"


def test_labels_the_chapters_link_to_exist():
    labels = set()
    for path in NOTEBOOKS:
        for cell in _cells(path):
            if cell["cell_type"] == "markdown":
                labels |= set(re.findall(r"^\(([\w-]+)\)=", "".join(cell["source"]), re.M))
    wanted = set()
    for page in (REPO_ROOT / "chapters").glob("*.md"):
        wanted |= set(re.findall(r"\{ref\}`(?:[^`<]*<)?(lab-[\w-]+)>?`", page.read_text()))
    assert wanted, "the chapters link to no lab cell"
    assert wanted <= labels, f"chapters link to missing lab labels: {sorted(wanted - labels)}"
