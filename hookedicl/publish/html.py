"""Standalone HTML pages of executed notebooks (nbconvert, imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .notebooks import _require

if TYPE_CHECKING:
    from nbformat import NotebookNode


def render_html(nb: NotebookNode, title: str) -> str:
    """A standalone HTML page of an executed notebook: images and styles inline (data URIs), so
    the file opens in a browser on its own."""
    _require("nbconvert")
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        embed_images=True,
        extra_loaders=[DictLoader({_HTML_TEMPLATE_NAME: _HTML_TEMPLATE})],
        template_file=_HTML_TEMPLATE_NAME,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


# JupyterLab's page without the scripts it loads from a CDN (require.js, MathJax, Mermaid): the
# analyses use none of them, and without them the page makes no network request at all.
_HTML_TEMPLATE_NAME = "hookedicl_standalone.html.j2"
_HTML_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
"""
