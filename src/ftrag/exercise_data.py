"""Data made up for the exercises (not part of the help centre in ``data/``)."""
from __future__ import annotations


def orbit_article():
    """A product the help centre does not have yet, for the "teach RAG something new" exercises."""
    import datetime
    from pathlib import Path

    from .data import Article

    return Article(
        id="kb-orbit", title="Lumio Orbit floor lamp", category="products",
        updated=datetime.date(2025, 3, 1), path=Path("exercise: kb-orbit"),
        body="# Lumio Orbit floor lamp\n\nThe Lumio Orbit is our first floor lamp: a 150 cm stand with a rotating "
             "ring of light at the top.\n\n## Key facts\n\n- Price: $149 in the US store.\n- Brightness: up to "
             "2000 lumens.\n- Warranty: 2 years from the date of delivery.\n- Works with the Lumio app and the Hub.")
