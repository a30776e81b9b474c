"""The book's own Sphinx extensions (_ext/): what they do without building the whole book."""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

EXT = Path(__file__).resolve().parents[1] / "_ext"


@pytest.fixture
def offline_mathjax():
    sys.path.insert(0, str(EXT))
    try:
        import offline_mathjax

        yield offline_mathjax
    finally:
        sys.path.remove(str(EXT))


def test_mathjax_is_served_from_the_site(offline_mathjax, tmp_path):
    config = SimpleNamespace(mathjax_path="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    offline_mathjax._use_local_copy(None, config)
    assert config.mathjax_path == "mathjax/tex-mml-chtml.js"  # relative: under _static/

    app = SimpleNamespace(builder=SimpleNamespace(format="html"), outdir=str(tmp_path))
    offline_mathjax._copy_files(app, None)
    copied = tmp_path / "_static" / "mathjax"
    assert (copied / "tex-mml-chtml.js").stat().st_size > 500_000
    assert list((copied / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (copied / "input" / "tex" / "extensions" / "color.js").is_file()


def test_missing_mathjax_package_says_how_to_install_it(offline_mathjax, monkeypatch):
    from sphinx.errors import ExtensionError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExtensionError, match=r"pip install django-static-mathjax==3\.2\.2\.1"):
        offline_mathjax._use_local_copy(None, SimpleNamespace(mathjax_path=""))
