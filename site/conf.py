"""Sphinx configuration of the course website, built by ``python -m labsupport.website`` (``make site``).

The pages arrive executed (MyST-NB never runs a notebook here), math renders with a MathJax bundled in
``sphinx-mathjax-offline`` (no CDN), and a widget's still (its PNG) is preferred to its live view,
which needs a kernel.
"""

project = "Deep Generative Modeling Lab"
author = "the course's authors"
copyright = "2026, the course's authors"
extensions = ["myst_nb", "sphinx-mathjax-offline"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"
nb_output_stderr = "remove"  # progress bars; every result is printed to stdout
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"show_toc_level": 2, "use_download_button": False}
html_show_sourcelink = False
html_context = {"default_mode": "light"}  # else the theme logs "invalid theme mode" to the console on a first visit
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # else browsers ask for /favicon.ico and log a 404
