"""Sphinx configuration: Markdown pages (MyST), the Python API from the docstrings, the Furo theme.

The configuration reference is generated here from ``flowpilot_analytics.config.SETTINGS``, so it
cannot drift from the code.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from flowpilot_analytics.config import settings_table

project = "flowpilot_analytics"
author = "FlowPilot"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "flowpilot_analytics"
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False

_GENERATED = os.path.join(os.path.dirname(__file__), "_generated")
os.makedirs(_GENERATED, exist_ok=True)
with open(os.path.join(_GENERATED, "settings.md"), "w", encoding="utf-8") as handle:
    handle.write(settings_table())
