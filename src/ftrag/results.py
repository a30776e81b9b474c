"""Measured results: the labs save them here, the chapters quote them (never typed by hand).

Each lab saves one flat JSON object under ``_build/results/<lab>.json`` (``FTRAG_RESULTS_DIR``
overrides), with the profile it was measured on. Keys are documented where the lab computes them.
"""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from .errors import CourseError
from .paths import results_dir

LABS = ("rag", "qlora", "comparison")


def path_of(lab: str) -> Path:
    return results_dir() / f"{lab}.json"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy / torch scalars
        return _clean(value.item())
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def save(lab: str, values: dict[str, Any], *, profile: str) -> Path:
    """Write ``values`` (flat: str -> number/str) for ``lab``, stamped with profile, machine and time."""
    if lab not in LABS:
        raise CourseError(f"Unknown results name {lab!r}; use one of {LABS}.")
    record = {"_profile": profile, "_machine": f"{platform.machine()} {platform.system()}",
              "_saved": time.strftime("%Y-%m-%d %H:%M:%S"), **_clean(values)}
    path = path_of(lab)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def load(lab: str) -> dict[str, Any]:
    path = path_of(lab)
    if not path.exists():
        raise CourseError(f"No results for the {lab} lab in {path}. Run the lab (or `make test`) first.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CourseError(f"{path} is not valid JSON ({exc}); delete it and re-run the {lab} lab.") from exc


# --------------------------------------------------------------------------- run timings

TIMINGS = "timings"


def _timings_path() -> Path:
    return results_dir() / f"{TIMINGS}.json"


def _read_timings(path: Path) -> dict[str, Any]:
    """The timings file's contents; ``{}`` when there is none. A torn file (a run interrupted while
    writing it) is an error: treated as empty, it would lose every figure measured so far."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CourseError(f"{path} is not valid JSON ({exc}), probably from an interrupted run. Delete it and "
                          "run `make test` again to measure the lab times and memory anew.") from exc


def update_timings(**values: float) -> Path:
    """Merge measured run figures (seconds, GB) into ``timings.json``; the test run writes each
    lab's wall time there and each lab its kernel's peak memory. The instructor notes quote it.
    The file is replaced in one step, so an interrupted write leaves the previous one."""
    path = _timings_path()
    current = _read_timings(path)
    current.update(_clean(values))
    current["_saved"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def load_timings() -> dict[str, Any]:
    return _read_timings(_timings_path())


#: /proc/<pid>/status gives sizes in "kB", which are KiB (1024 bytes; see proc(5)).
_PROC_KB = 1024


def peak_memory_gb(status_file: str | Path = "/proc/self/status") -> float:
    """Peak resident memory of this process so far (the lab's kernel), in GB (10**9 bytes).

    On Linux this is ``VmHWM`` from ``/proc/self/status`` (in KiB, though written "kB"), the
    peak of this process's own memory. ``ru_maxrss`` is not: it keeps the peak of the process that
    forked it (Linux carries it over ``exec``), so a kernel started by a 2 GB pytest process would
    report at least 2 GB. It is the fallback where there is no such file (bytes on macOS, KiB on Linux).
    """
    import resource
    import sys

    try:
        with open(status_file, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * _PROC_KB / 1e9
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def record_lab_memory(lab: str) -> float:
    """Store ``<lab>_peak_gb`` and return this kernel's peak memory (call in a lab's last cell).

    The file keeps the highest peak recorded since ``_build`` was cleaned: in ``make test`` the book
    build executes the labs a second time from warm caches (lower peaks), and that must not hide
    the first, cold run's figure.
    """
    peak = peak_memory_gb()
    key = f"{lab}_peak_gb"
    previous = load_timings().get(key)
    stored = max(peak, previous) if isinstance(previous, (int, float)) else peak
    update_timings(**{key: stored})
    return peak


def record_lab_replies(lab: str) -> str:
    """Store where this kernel's replies came from as ``<lab>_replies_<source>`` (shipped with the
    course, this machine's cache, generated now) and return the sentence a lab's last cell prints.

    Only the first run since ``_build`` was cleaned is stored: the book build executes the labs again and
    finds every reply the first run generated in the cache, which says nothing about a clean clone.
    """
    from . import shipped_replies

    counts = shipped_replies.SOURCES
    if f"{lab}_replies_generated" not in load_timings():
        update_timings(**{f"{lab}_replies_{source}": counts[source] for source in ("shipped", "cached", "generated")})
    return shipped_replies.summary(counts)
