"""Sphinx extension: serve MathJax from the site itself, so formulas render without internet.

Sphinx loads MathJax 3 from cdn.jsdelivr.net, so a reader who builds the book on a laptop without
internet sees raw TeX such as ``$N \\cdot b/8$``. The PyPI package ``django-static-mathjax``
(MathJax 3.2.2's files; it imports nothing, Django included) is part of the course's requirements.
This extension copies the combined ``tex-mml-chtml`` component, its fonts and the parts it loads
on demand (TeX extensions, menu, accessibility) into ``_static/mathjax/`` and points
``mathjax_path`` there: about 3 MB instead of the package's 24.

tests/test_site.py checks that no page requests another host and that formulas are typeset.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.errors import ExtensionError

PACKAGE = "django-static-mathjax==3.2.2.1"
ENTRY = "tex-mml-chtml.js"
# Relative to MathJax's es5/ folder: what tex-mml-chtml.js may fetch after it loaded.
ON_DEMAND = ("output/chtml/fonts/woff-v2", "input/tex/extensions", "input/mml/extensions", "ui", "a11y",
             "adaptors", "sre/mathmaps/en.json")
TARGET = "mathjax"  # under _static/


def mathjax_es5_dir() -> Path:
    """MathJax's es5/ folder inside the installed package; ExtensionError with the fix if it is missing."""
    spec = importlib.util.find_spec("mathjax")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        es5 = Path(folder) / "static" / "mathjax" / "es5"
        if (es5 / ENTRY).is_file():
            return es5
    raise ExtensionError(
        f"MathJax's files are missing, so formulas could not render offline. Install them with "
        f"`.venv/bin/pip install {PACKAGE}` (`make env` does), then build again.")


def _use_local_copy(app, config) -> None:
    mathjax_es5_dir()  # fail at the start of the build, not after executing every notebook
    config.mathjax_path = f"{TARGET}/{ENTRY}"  # relative: Sphinx serves it from _static/


def _copy_files(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    es5 = mathjax_es5_dir()
    target = Path(app.outdir) / "_static" / TARGET
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / ENTRY, target / ENTRY)
    for part in ON_DEMAND:
        source, dest = es5 / part, target / part
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
        elif source.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)


def setup(app):
    app.connect("config-inited", _use_local_copy)
    app.connect("build-finished", _copy_files)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
