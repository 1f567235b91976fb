"""Jinja2 templates (autoescaped) and safe Markdown for researcher-written texts."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

# html=False: raw HTML in consent/instructions/debrief texts is escaped, never rendered.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def markdown(text: str | None) -> Markup:
    """Render researcher Markdown to HTML that cannot carry scripts (raw HTML is escaped)."""
    html = _md.render(text or "")
    # commonmark allows javascript: links; neutralize any scheme other than http(s)/mailto.
    return Markup(_strip_unsafe_links(html))


def _strip_unsafe_links(html: str) -> str:
    import re

    def fix(m: re.Match[str]) -> str:
        url = m.group(2).strip().lower()
        if url.startswith(("http://", "https://", "mailto:", "#", "/")):
            return m.group(0)
        return f'{m.group(1)}"#"'

    return re.sub(r'(href=)"([^"]*)"', fix, html)


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["markdown"] = markdown
