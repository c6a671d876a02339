"""Sphinx configuration of the pax_haiku documentation site.

Build it with `bash tools/docs.sh` (offline; warnings are errors) into
build/docs/html. Pages are MyST Markdown (myst-parser); the API reference is
autodoc + napoleon over the Google-style docstrings; the theme is furo.
"""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
# This checkout's pax_haiku and the site's own extension (docs/_ext/).
sys.path[:0] = [ROOT, os.path.join(DOCS, "_ext")]

project = "pax_haiku"
author = "the pax_haiku developers"
copyright = "the pax_haiku developers"  # pylint: disable=redefined-builtin
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "pax_docs",  # API coverage check (docs/_ext/pax_docs.py).
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
# `x` in a docstring is code, as in the Markdown pages.
default_role = "code"

# Cross-references: a reference to a pax_haiku name that does not exist is
# a warning (an error in tools/docs.sh). Names of other libraries (jax,
# haiku, optax, typing) stay plain text: the build is offline, so there is
# no intersphinx inventory to resolve them against; so do the private names
# (type variables, private helper classes) that type hints mention.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!pax_haiku\b).*"),
                        (r"py:.*", r"pax_haiku\._src\..*")]

myst_enable_extensions = ["colon_fence"]
# Headings get anchors so that links like page.md#section resolve.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections as fields of their class, not as separate entries
# (which would clash with the properties that :members: documents).
napoleon_use_ivar = True

html_theme = "furo"
html_title = "pax_haiku"
html_static_path = []
