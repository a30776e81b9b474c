"""Sphinx extension: small fixes to the HTML that jupyter-book 1.x writes.

* Write each inline <script> once. Sphinx 7.4 keeps a script that an extension adds after
  ``Builder.init()`` (sphinx-thebe, sphinx-togglebutton) twice, once as ``filename=None`` and once
  as ``filename=''``, so every page carries ``const THEBE_JS_URL = ...`` twice and the browser logs
  "Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared".
* Launch buttons (Colab, Binder) only on notebook pages. sphinx-book-theme also adds them to the
  MyST-NB chapters (``.md`` with a kernelspec), where the Colab link opens a ``.md`` file that Colab
  cannot read.

tests/test_site.py checks both (browser console; launch links point at ``.ipynb`` files).
"""
from pathlib import Path


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        filename = getattr(script, "filename", script) or ""
        attributes = tuple(sorted(getattr(script, "attributes", {}).items()))
        key = (str(filename), getattr(script, "priority", None), attributes)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def _launch_buttons_on_notebooks_only(app, pagename, templatename, context, doctree):
    if doctree is None or Path(app.env.doc2path(pagename)).suffix == ".ipynb":
        return
    buttons = context.get("header_buttons")
    if buttons:
        buttons[:] = [button for button in buttons if button.get("label") != "launch-buttons"]


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    # after sphinx-book-theme's add_launch_buttons (priority 501), before the page is written
    app.connect("html-page-context", _launch_buttons_on_notebooks_only, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
