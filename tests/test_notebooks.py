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
    first = _cells(path)[0]
    assert "".join(first["source"]) == BOOTSTRAP_CELL
    # it runs on Colab and in Jupyter, but the site does not show install code above the title
    assert "remove-cell" in first.get("metadata", {}).get("tags", []), f"{path.name}: tag the set-up cell remove-cell"


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


def test_chapters_quote_only_results_the_labs_save():
    """Every lab number a chapter quotes ({glue:text}`rag_...`) is saved by that lab's results cell,
    so a renamed or dropped key fails here in a second, not at the end of the strict book build."""
    import re

    from ftrag import systems

    saved_by = {"rag_": "labs/01_rag.ipynb", "ft_": "labs/02_qlora.ipynb", "inject_": "labs/02_qlora.ipynb",
                "cmp_p_": "labs/03_hybrid.ipynb", "cmp_says_": "labs/03_hybrid.ipynb"}
    lab_source = {path: "".join("".join(c["source"]) for c in _cells(REPO_ROOT / path) if c["cell_type"] == "code")
                  for path in set(saved_by.values())}
    cmp_key = re.compile(r"cmp_(base|rag|extractive_rag|fewshot_rag|constrained_rag|gated_constrained_rag|finetuned|hybrid|gated_hybrid)_(%s)(_ci_low|_ci_high)?$"
                         % "|".join(systems.METRICS))
    missing = []
    for page in sorted((REPO_ROOT / "chapters").glob("*.md")):
        for key in re.findall(r"\{glue:text\}`(\w+)", page.read_text(encoding="utf-8")):
            prefix = next((p for p in saved_by if key.startswith(p)), None)
            # lab 3 builds cmp_p_<claim> and cmp_says_<claim> from its claims
            quoted = f'"{key[len(prefix):]}"' if prefix in ("cmp_p_", "cmp_says_") else f'"{key}"'
            if prefix and quoted not in lab_source[saved_by[prefix]]:
                missing.append(f"{page.name}: {key} (not saved by {saved_by[prefix]})")
            elif prefix is None and key.startswith("cmp_") and not key.startswith("cmp_n_") and key not in ("cmp_model", "cmp_profile") \
                    and not cmp_key.match(key) and f'"{key}"' not in lab_source["labs/03_hybrid.ipynb"]:
                missing.append(f"{page.name}: {key} (neither a system_metric of the comparison nor saved by lab 3)")
    assert not missing, "\n".join(missing)
