"""The Jinja2 environment (autoescaping on) and the embedding of plotly.js and figures into one offline page."""

from __future__ import annotations

import base64
import functools
import gzip
import html
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
import plotly.io
import plotly.offline
from markupsafe import Markup

from lit_interp.formation import Formation

TEMPLATES = Path(__file__).parent / "templates"
_figure_ids = itertools.count()


@dataclass
class Figure:
    """A plotly figure ready for a template: the div id, its JSON escaped for a <script> element, a CSS class."""

    id: str
    json: Markup
    css_class: str = ""


@functools.cache
def environment() -> jinja2.Environment:
    # autoescape=True (not select_autoescape): the templates end in .j2, and every string must be escaped.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["number"] = number
    env.filters["sort_key"] = sort_key
    return env


@functools.cache
def plotly_js() -> str:
    """plotly.js from the installed plotly package, gzipped and base64-encoded, to inline once per page.

    Inlined, not fetched from a CDN, so a page opens offline; gzipped (the page unpacks it with the
    browser's DecompressionStream) because the raw bundle alone nearly fills a report's size budget.
    """
    packed = gzip.compress(plotly.offline.get_plotlyjs().encode(), compresslevel=9, mtime=0)
    return base64.b64encode(packed).decode("ascii")


def script_json(text: str) -> Markup:
    """JSON made safe inside <script>: no '<', '>' or '&' left to close the element or start a comment."""
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@dataclass
class Table:
    """Rows keyed by name; a blank cell where a row lacks a column; `descriptions` become header tooltips."""

    first_column: str
    columns: list[str]
    rows: list[tuple[str, list[Any]]]
    descriptions: dict[str, str] = field(default_factory=dict)


@dataclass
class Preformatted:
    """Text shown verbatim (escaped), folded under a summary line."""

    summary: str
    text: str


@dataclass
class Section:
    heading: str
    items: list[Figure | Table | Preformatted]
    note: str = ""
    id: str = field(default_factory=lambda: f"section-{next(_figure_ids)}")


def table(rows: dict[str, dict[str, Any]], first_column: str, descriptions: dict[str, str] | None = None) -> Table:
    """A Table whose columns are every key that any row has, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    return Table(
        first_column,
        columns,
        [(name, [row.get(column) for column in columns]) for name, row in rows.items()],
        descriptions or {},
    )


def embed(figure: go.Figure, css_class: str = "") -> Figure:
    return Figure(f"figure-{next(_figure_ids)}", script_json(plotly.io.to_json(figure, validate=False)), css_class)


def plain(text: Any) -> str:
    """A data string shown by plotly, which reads a subset of HTML in text: escaped so it shows literally."""
    return html.escape(str(text))


def number(value: Any) -> str:
    """A table cell: floats to 4 significant digits, None blank, anything else as text (escaped by the template)."""
    if value is None:
        return ""
    if isinstance(value, Formation):
        return str(value)
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


def sort_key(value: Any) -> str:
    """The cell's data-sort attribute: the number itself for numbers, so columns sort numerically."""
    if isinstance(value, Formation):
        return repr(float(value.step))
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value or "")


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(plotly_js=plotly_js(), **context)
