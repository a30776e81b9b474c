"""Sphinx extension: read (and so execute) the labs before the chapters.

The chapters quote numbers the labs measure (see ``ftrag.book.glue_results``). Sphinx reads
documents in alphabetical order, which would put ``chapters/`` before ``labs/``; this moves every
``labs/`` document to the front of the reading list.
"""


def _labs_first(app, env, docnames):
    docnames.sort(key=lambda name: (not name.startswith("labs/"), name))


def setup(app):
    app.connect("env-before-read-docs", _labs_first)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
