"""Standalone HTML pages of executed notebooks (nbconvert, imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .notebooks import _require

if TYPE_CHECKING:
    from nbformat import NotebookNode


def render_html(nb: NotebookNode, title: str, *, no_input: bool = False) -> str:
    """A standalone HTML page of an executed notebook: images and styles inline (data URIs), so
    the file opens in a browser on its own. ``no_input`` leaves out the code cells' source (and
    the input/output prompts): the page shows the markdown cells and the outputs only."""
    _require("nbconvert")
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        embed_images=True,
        extra_loaders=[DictLoader({_HTML_TEMPLATE_NAME: _HTML_TEMPLATE})],
        template_file=_HTML_TEMPLATE_NAME,
        exclude_input=no_input,
        exclude_input_prompt=no_input,
        exclude_output_prompt=no_input,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


# JupyterLab's page without the scripts it loads from a CDN (require.js, MathJax, Mermaid): the
# analyses use none of them, and without them the page makes no network request at all. PNG
# outputs are always embedded and carry their alt text (publish_figure sets it; the lab template
# drops it).
_HTML_TEMPLATE_NAME = "hookedicl_standalone.html.j2"
_HTML_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block data_png scoped %}
{%- set alttext = output | get_metadata('alt', 'image/png') -%}
{%- set width = output | get_metadata('width', 'image/png') -%}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
{%- if alttext %} alt="{{ alttext | escape_html }}"{% endif %}
{%- if width is not none %} width={{ width | escape_html }}{% endif %}>
</div>
{%- endblock data_png %}
"""
