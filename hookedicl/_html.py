"""Small HTML tables for the ``_repr_html_`` of result objects shown in notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant digits (integers with thousands separators); text as is."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def html_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], caption: str | None = None) -> str:
    """A ``<table>`` with one header row and ``rows``; every cell is escaped text."""
    head = "".join(f"<th>{escape(fmt(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
