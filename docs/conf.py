"""Sphinx configuration of the rims-rl documentation.

Build (from the repository root; warnings are errors, as in CI)::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]  # the packages (autodoc) and the docs' own extension

project = "rims-rl"
author = "the rims-rl authors"
copyright = "2026, the rims-rl authors"
try:
    release = version = installed_version("rims-rl")  # the installed package's version (pyproject.toml)
except PackageNotFoundError:  # building from a checkout that is not installed
    release = version = "unknown"

extensions = [
    "myst_parser",  # pages in Markdown
    "sphinx.ext.autodoc",  # API pages from the reST docstrings
    "sphinx.ext.viewcode",  # source links beside the API
    "sphinx.ext.napoleon",  # the torch modules' docstrings use nn.LSTM's "Args:" layout; the rest is reST
    "config_reference",  # the CLI's config reference from experiments/schema.py
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "scripts", "_ext"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links

# autodoc: members in source order, type hints in the description (the docstrings carry shapes and meanings);
# no intersphinx: CI has no network beyond the package registries, and remote inventories would be fetched.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = "rims-rl"
html_static_path = ["_static"]
napoleon_use_ivar = True  # "Attributes:" as fields, not attribute entries that a second autodoc would duplicate
