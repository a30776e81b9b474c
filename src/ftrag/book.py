"""Helpers for the book pages (not the labs): quote measured results with MyST-NB's ``glue``."""
from __future__ import annotations

from . import results


def glue_results(labs: tuple[str, ...] = results.LABS) -> dict[str, object]:
    """Glue every value of the given labs' results so a page can write {glue:text}`rag_hit_at_5:.2f`.

    The book build reads the labs before the chapters (see ``_ext/labs_first.py``), so the
    results exist by the time a chapter asks for them. Returns what was glued.
    """
    from myst_nb import glue

    glued: dict[str, object] = {}
    for lab in labs:
        for key, value in results.load(lab).items():
            if key.startswith("_"):
                key = f"{lab}{key}"  # rag_profile, comparison_saved, ...
            glue(key, value, display=False)
            glued[key] = value
    return glued
