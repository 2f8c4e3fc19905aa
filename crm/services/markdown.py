"""Markdown to safe HTML for admin-written page text (condition pages, notes).

Markdown is rendered with ``markdown`` and the HTML is then cleaned with ``nh3``
(an allow-list sanitiser): raw HTML, scripts, event handlers, ``style`` and
``javascript:`` links never reach the page, whoever wrote the text.
"""

from __future__ import annotations

import markdown as _markdown
import nh3
from markupsafe import Markup

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "li", "ol", "p", "pre", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "th": {"align"}, "td": {"align"}}
EXTENSIONS = ["tables", "sane_lists", "smarty"]


def render_markdown(text: str | None) -> Markup:
    """Render Markdown and sanitise the result; ``h1`` is demoted (the page owns its title)."""
    if not text or not text.strip():
        return Markup("")
    html = _markdown.markdown(text, extensions=EXTENSIONS, output_format="html")
    html = html.replace("<h1>", "<h2>").replace("</h1>", "</h2>")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "tel"},
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(clean)  # noqa: S704 - sanitised by nh3 above
