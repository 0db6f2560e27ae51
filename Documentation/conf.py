# SPDX-License-Identifier: GPL-2.0
#
# Sphinx configuration for `make htmldocs`. The .rst files are plain
# reStructuredText (scripts/lint.sh checks them with docutils alone), so the
# Sphinx-only parts are added here: index.rst gets a hidden toctree, and its
# links to the .rst sources point to the generated pages instead.

project = "dm-log-userspace"
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_show_sourcelink = False
html_copy_source = False

PAGES = ["dm-log-userspace", "dm-log-userspace-protocol", "dm-log-userspace-design"]


def _index_for_sphinx(app, docname, source):
    if docname != root_doc:
        return
    text = source[0]
    for page in PAGES:
        text = text.replace(f"<{page}.rst>`_", f"<{page}.html>`_")
    text += "\n.. toctree::\n   :hidden:\n\n" + "".join(f"   {p}\n" for p in PAGES)
    source[0] = text


def setup(app):
    app.connect("source-read", _index_for_sphinx)
