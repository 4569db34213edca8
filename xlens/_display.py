"""How xlens objects show themselves in a notebook: one small card (a title and a few facts), never a data dump."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

_STYLE = (
    "font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ddd;border-radius:6px;"
    "padding:6px 10px;display:inline-block;max-width:100%"
)


def html_card(title: str, facts: Mapping[str, Any], body: str = "") -> str:
    """A titled box of ``facts`` (name -> value, values escaped) and optional trusted ``body`` HTML below."""
    rows = "".join(
        f'<tr><td style="color:#666;padding:1px 10px 1px 0">{html.escape(str(k))}</td>'
        f"<td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    return (
        f'<div class="xlens-card" style="{_STYLE}"><b>{html.escape(title)}</b>'
        f'<table style="border-collapse:collapse;margin-top:4px">{rows}</table>{body}</div>'
    )


def html_frame(frame: Any, max_rows: int = 10) -> str:
    """The first ``max_rows`` rows of a pandas table as compact HTML."""
    shown = frame.head(max_rows)
    more = len(frame) - len(shown)
    note = f'<div style="color:#666">… {more} more rows</div>' if more > 0 else ""
    return shown.to_html(index=False, border=0, float_format=lambda x: f"{x:.3f}") + note


def short_list(items: list[Any], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")
