"""Test ordering and shared fixtures.

`make test` runs one pytest session over the whole repository: unit tests first (fast feedback),
then every notebook under nbval (they build the cached artifacts: checkpoint, index, adapters,
replies), then the strict book build (which re-executes the labs cheaply from those caches),
then the browser test against the built site.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_STAGES = ("unit", "notebook", "book", "browser")


def _stage(item) -> int:
    if item.get_closest_marker("browser"):
        return 3
    if item.get_closest_marker("book"):
        return 2
    if str(item.fspath).endswith(".ipynb"):
        return 1
    return 0


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: (_stage(item), str(item.fspath)))


_notebook_seconds: dict[str, float] = {}
_notebook_cells_left: dict[str, int] = {}


def pytest_collection_finish(session):
    for item in session.items:
        if str(item.fspath).endswith(".ipynb"):
            _notebook_cells_left[str(item.fspath)] = _notebook_cells_left.get(str(item.fspath), 0) + 1


def pytest_runtest_logreport(report):
    """Record each lab's wall time under nbval in _build/results/timings.json as soon as its last
    cell ran, so the book build later in the same run can quote it (instructor notes)."""
    path = str(report.fspath)
    if not path.endswith(".ipynb"):
        return
    _notebook_seconds[path] = _notebook_seconds.get(path, 0.0) + report.duration
    if report.when == "teardown":
        _notebook_cells_left[path] = _notebook_cells_left.get(path, 1) - 1
        if _notebook_cells_left[path] == 0:
            from pathlib import Path

            from ftrag import results

            key = f"lab_{Path(path).stem}_seconds"
            results.update_timings(**{key: round(_notebook_seconds[path], 1)})


@pytest.fixture(scope="session")
def cpu_profile():
    from ftrag import profiles

    return profiles.get_profile("cpu")


@pytest.fixture(scope="session")
def tiny_model(cpu_profile):
    """The cpu profile's model and tokenizer, loaded once per test session."""
    from ftrag import profiles

    return profiles.load_model(cpu_profile), profiles.load_tokenizer(cpu_profile)
