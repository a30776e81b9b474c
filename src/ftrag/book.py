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


def glue_seed_variance(profile_name: str = "cpu") -> dict[str, object]:
    """Glue the ``seeds_*`` figures of ``results/<profile>/seed_variance.json`` (``make bench-seeds``)
    and return the loaded results, for a page that quotes or plots them."""
    from myst_nb import glue

    from . import seed_variance

    data = seed_variance.load(profile_name)
    for key, value in seed_variance.headline(data).items():
        glue(key, value, display=False)
    return data


def glue_handoff_gate(profile_name: str = "cpu") -> dict[str, float]:
    """Glue the ``gate_dev_*`` figures of the hand-off gate sweep (``make sweeps-gate``, dev split)."""
    from myst_nb import glue

    from . import sweeps

    figures = sweeps.gate_headline(sweeps.load_saved(profile_name)["handoff_gate"]["rows"])
    for key, value in figures.items():
        glue(key, value, display=False)
    return figures


def significant(value: float, digits: int = 2) -> float:
    """``value`` rounded to ``digits`` significant figures, for numbers whose inputs are guesses:
    a break-even point of 10,000,489 requests computed from assumed prices is "about 10,000,000".

    >>> significant(10_000_489)
    10000000.0
    >>> significant(0.000143, 1)
    0.0001
    """
    import math

    if digits < 1:
        raise ValueError("digits must be at least 1")
    if value == 0 or not math.isfinite(value):
        return float(value)
    exponent = math.floor(math.log10(abs(value)))
    return float(round(value, digits - 1 - exponent))


def percent(share: float, digits: int = 1) -> str:
    """A share (0..1) as a percentage with ``digits`` significant figures and no exponent:
    ``percent(0.00003)`` is ``"0.003%"`` and ``percent(0.356)`` is ``"40%"``, where ``:.2%`` prints
    ``"0.00%"`` (as if nothing) and ``"35.60%"`` (more precision than an estimate carries)."""
    import math

    rounded = significant(share * 100, digits)
    if rounded == 0 or not math.isfinite(rounded):
        return f"{rounded:g}%"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}%"
