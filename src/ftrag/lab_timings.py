"""The measured run time of each lab, for the instructor notes.

``make test`` writes ``_build/results/timings.json`` (``labs/conftest.py`` times every notebook);
the notes quote it through :func:`lab_timings` and :func:`format_duration`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import results
from .errors import CourseError

TIMING_KEYS = ("lab_00_setup_seconds", "lab_01_rag_seconds", "lab_02_qlora_seconds",
               "lab_03_hybrid_seconds", "make_test_seconds")
NOT_MEASURED = "not yet measured"


def _seconds(value: Any) -> float | None:
    """A stored duration as float seconds, or None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def lab_timings() -> dict[str, float | None]:
    """Measured run times (seconds) from ``_build/results/timings.json``; None where not measured.

    A missing or unreadable file gives None for every key instead of an error, so a page that
    quotes the timings still builds before anyone has measured them.
    """
    try:
        record = results.load("timings")
    except CourseError:
        record = {}
    if not isinstance(record, Mapping):
        record = {}
    out: dict[str, float | None] = {}
    for key in TIMING_KEYS:
        value = _seconds(record.get(key))
        out[key] = value if value is not None and value >= 0 else None
    return out


def timings_context() -> str:
    """Where and when the timings were measured (profile, machine, date, as far as the file says),
    or an empty string when there is no file."""
    try:
        record = results.load("timings")
    except CourseError:
        return ""
    if not isinstance(record, Mapping):
        return ""
    parts = [f"{record['_profile']} profile" if record.get("_profile") else "",
             str(record.get("_machine", "")),
             f"written {record['_saved']}" if record.get("_saved") else ""]
    return ", ".join(p for p in parts if p)


def format_duration(seconds: float | None) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``; :data:`NOT_MEASURED` for None."""
    if seconds is None:
        return NOT_MEASURED
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min"
