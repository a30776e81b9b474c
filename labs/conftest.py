"""pytest hooks for the notebooks (nbval): record each lab's wall time.

This file lives in labs/ because pytest only calls per-item hooks such as
``pytest_runtest_logreport`` from conftest files on the item's own path: in tests/conftest.py it
never saw a notebook cell. Each lab's time is written to ``_build/results/timings.json`` as soon
as its last cell ran, so the book build later in the same ``make test`` can quote it in the
instructor notes. (Each lab writes its kernel's peak memory itself, in its last cell.)
"""
from pathlib import Path

_seconds: dict[str, float] = {}
_cells_left: dict[str, int] = {}


def _key(path) -> str:
    return str(Path(str(path)).resolve())


def pytest_collection_finish(session):
    for item in session.items:
        if str(item.fspath).endswith(".ipynb"):
            path = _key(item.fspath)
            _cells_left[path] = _cells_left.get(path, 0) + 1


def pytest_runtest_logreport(report):
    if not str(report.fspath).endswith(".ipynb"):
        return
    path = _key(report.fspath)  # relative here, absolute at collection: compare resolved paths
    _seconds[path] = _seconds.get(path, 0.0) + report.duration
    if report.when == "teardown" and path in _cells_left:
        _cells_left[path] -= 1
        if _cells_left[path] == 0:
            from ftrag import results

            results.update_timings(**{f"lab_{Path(path).stem}_seconds": round(_seconds[path], 1)})
