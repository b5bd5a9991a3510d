r"""Sphinx configuration of the zuko-lu documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html``. The build needs no network:
intersphinx reads the small inventories committed in ``docs/_inv`` (regenerate them with
``python docs/inventories.py``) and MathJax is only referenced by the pages.
"""

from __future__ import annotations

import os
import sys

import zuko_lu

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

# -- Project

project = "zuko-lu"
author = "zuko-lu developers"
copyright = "2025, zuko-lu developers"
version = release = zuko_lu.__version__

# -- Extensions

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "zuko_lu_docs",
]

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False

# zuko's Google style: "Arguments:", "Returns:", "Example:", "References:", "See also:"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Shapes", "params_style")]

# Offline: every inventory is a local file (see docs/inventories.py), the links go online.
intersphinx_mapping = {
    "torch": ("https://pytorch.org/docs/stable/", "_inv/torch.inv"),
    "zuko": ("https://zuko.readthedocs.io/stable/", "_inv/zuko.inv"),
    "pyro": ("https://docs.pyro.ai/en/stable/", "_inv/pyro.inv"),
}
intersphinx_timeout = 1

# Parts of the README (Markdown) are included in pages, below a page's own headings.
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# -- Settings

add_function_parentheses = False
default_role = "literal"
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]
root_doc = "index"
nitpicky = False
rst_prolog = """
.. role:: py(code)
    :class: highlight
    :language: python
"""
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

# -- HTML

html_theme = "furo"
html_title = f"zuko-lu {version}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_copy_source = False
pygments_style = "sphinx"
pygments_dark_style = "monokai"
