"""Markdown to safe HTML for admin-written page text (condition pages, notes).

Markdown is rendered with ``markdown`` and the HTML is then cleaned with ``nh3``
(an allow-list sanitiser): raw HTML, scripts, event handlers, ``style`` and
``javascript:`` links never reach the page, whoever wrote the text.

Python-Markdown is not linear-time on every input (its issue #798, open: every ``[`` walks
to its matching ``]`` or the end of the paragraph, so ``"[" * 16000`` takes close to a minute;
``](`` does the same for ``)``; its cost per block and per inline element grows faster than
linearly; lists nested on one line recurse until Python's stack runs out; the standard library's
HTML parser it hands block-level HTML to is quadratic on unclosed tags). So ``markdown_problem``
measures that work in one linear pass and the condition form refuses a text over the limits,
block-level HTML is not handed to that parser, and ``render_markdown`` shows a text over the
limits (saved before they existed) as plain paragraphs. The worst text within the limits renders
in about a third of a second at the form's 50,000 characters; a real page in a few milliseconds.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache

import markdown as _markdown
import nh3
from markupsafe import Markup, escape

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "li", "ol", "p", "pre", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "th": {"align"}, "td": {"align"}}
EXTENSIONS = ["tables", "sane_lists", "smarty"]

# Limits far above any real page (the longest shipped condition page has 20 lines, 1,500
# characters and no bracket work at all) and low enough that the worst text within them renders
# in a few tenths of a second: the renderer's cost grows with the number of blocks (paragraphs,
# headings, list items, quote levels, table rows) faster than linearly, and with unclosed brackets
# quadratically.
MAX_NESTING = 8  # list and quote markers starting one line ("- - > 1. ...")
MAX_BLOCK_LINES = 1_500  # non-blank lines, each list or quote marker counting one more
MAX_LINK_SCAN = 60_000  # characters the link parser walks looking for closing ] and )
MAX_INLINE_MARKS = 3_000  # characters that can start inline markup (* _ ` [ \ & < quotes, line breaks)
MAX_TABLE_CELLS = 100  # "|" on one line: the tables extension takes quadratic time in a row's cells

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_BLOCK_MARKER = re.compile(r"[ \t]*(?:>|[-*+](?=[ \t])|\d{1,9}[.)](?=[ \t]))")
_THEMATIC_BREAK = re.compile(r"[ ]{0,3}([-*_])(?:[ ]*\1){2,}[ ]*")
_INLINE_MARKS = ("`", "\\", "[", "<", "&", "*", "_", "'", '"', "  \n")
_QUOTE_THEN_PAREN = {q: re.compile(re.escape(q) + r"[ ]*\)") for q in "'\""}


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _block_problem(text: str) -> str | None:
    weight = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        depth, pos = 0, 0
        if not _THEMATIC_BREAK.fullmatch(line):  # "* * * * *" is a rule, not a nested list
            while depth <= MAX_NESTING and (marker := _BLOCK_MARKER.match(line, pos)):
                depth, pos = depth + 1, marker.end()
        if depth > MAX_NESTING:
            return (
                f"Line {number} nests lists or quotes more than {MAX_NESTING} levels deep: "
                "put a backslash before a marker meant as text (\\- or \\>)."
            )
        if line.count("|") > MAX_TABLE_CELLS:
            return (
                f"Line {number} has more than {MAX_TABLE_CELLS} | characters: a table may have at most "
                f"{MAX_TABLE_CELLS} columns (put a backslash before a | meant as text: \\|)."
            )
        weight += 1 + depth
        if weight > MAX_BLOCK_LINES:
            return (
                f"The text is too long to show from line {number} on: at most {MAX_BLOCK_LINES:,} lines "
                "that are not blank (each list or quote marker counts as one more line)."
            )
    return None


def _link_scan(block: str) -> tuple[int, int]:
    """The characters Python-Markdown's link parser walks in one paragraph (the largest unit its
    inline patterns see), and where the worst opening bracket is. Every unescaped ``[`` walks to
    its matching ``]`` or the block's end (several patterns do it: counted once, the limit allows
    for it); every ``](`` walks to its matching ``)``, or once a quote opens a title, to a quote
    followed by ``)``."""
    opened: list[int] = []  # unmatched [
    parens: list[int] = []  # unmatched (
    closing_paren: dict[int, int] = {}
    bracket_steps, worst, worst_at = 0, -1, 0
    escaped = False
    for i, c in enumerate(block):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == "[":
            opened.append(i)
        elif c == "]" and opened:
            start = opened.pop()
            bracket_steps += i - start
            if i - start > worst:
                worst, worst_at = i - start, start
        elif c == "(":
            parens.append(i)
        elif c == ")" and parens:
            closing_paren[parens.pop()] = i
    end = len(block)
    for start in opened:
        bracket_steps += end - start
        if end - start > worst:
            worst, worst_at = end - start, start
    quotes = [i for i, c in enumerate(block) if c in "'\""]
    title_ends = {q: [m.end() for m in pattern.finditer(block)] for q, pattern in _QUOTE_THEN_PAREN.items()}
    paren_steps = 0
    for link in re.finditer(r"\]\(", block):
        start = link.end() - 1
        stop = closing_paren.get(start, end)
        first_quote = bisect.bisect_right(quotes, start)
        if first_quote < len(quotes) and quotes[first_quote] < stop:
            quote_at = quotes[first_quote]
            ends = title_ends[block[quote_at]]
            after = bisect.bisect_right(ends, quote_at + 1)
            stop = ends[after] if after < len(ends) else end
        paren_steps += stop - start
        if stop - start > worst:
            worst, worst_at = stop - start, start
    return bracket_steps + paren_steps, worst_at


def _newlines(text: str) -> str:
    """Every line break as "\n": Python-Markdown also breaks lines at a lone "\r", which the limits
    below would otherwise read as one long line ("a\r=\r" * 12000 rendered for 16 s)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def markdown_problem(text: str | None) -> str | None:
    """Why ``text`` cannot be rendered quickly (a message naming the line), or None. Linear time."""
    if not text:
        return None
    text = _newlines(text)
    problem = _block_problem(text)
    if problem:
        return problem
    marks = sum(text.count(mark) for mark in _INLINE_MARKS)
    if marks > MAX_INLINE_MARKS:
        return (
            f"The text has {marks:,} markup characters (* _ ` [ \\ & < quotes and line breaks); "
            f"at most {MAX_INLINE_MARKS:,} can be shown: remove some of them."
        )
    steps, offset = 0, 0
    worst_line, worst_block = 1, -1
    for block in _BLANK_LINE.split(text):
        offset = text.find(block, offset)
        if "[" not in block:  # no link, image or reference can start: nothing walked
            offset += len(block)
            continue
        block_steps, worst_at = _link_scan(block)
        steps += block_steps
        if block_steps > worst_block:
            worst_block, worst_line = block_steps, _line_of(text, offset + worst_at)
        offset += len(block)
    if steps > MAX_LINK_SCAN:
        return (
            f"Too many unclosed or deeply nested brackets for links (around line {worst_line}): "
            "close each [ with ] and each ( with ), or put a backslash before a bracket meant as text (\\[)."
        )
    return None


def _plain(text: str) -> Markup:
    """The text as typed, escaped, in paragraphs: for a text over the limits (saved before them)."""
    paragraphs = (p.strip() for p in _BLANK_LINE.split(_newlines(text)))
    return Markup("\n").join(Markup("<p>%s</p>") % escape(p) for p in paragraphs if p)


def _converter() -> _markdown.Markdown:
    md = _markdown.Markdown(extensions=EXTENSIONS, output_format="html")
    # Block-level raw HTML goes through the standard library's HTML parser, quadratic on unclosed
    # tags ("<a " * 16000 ran for more than 8 s before we stopped it): without it such lines are
    # paragraphs whose tags are taken inline (one linear regex), and nh3 still keeps the allowed ones.
    md.preprocessors.deregister("html_block")
    return md


@lru_cache(maxsize=64)
def _render(text: str) -> Markup:
    # Cached by the text itself: a public condition page is rendered once per worker and edit,
    # not on every view. 64 texts of at most 50,000 characters (and their HTML) bound the memory.
    if markdown_problem(text):
        return _plain(text)
    try:
        html = _converter().convert(text)
    except RecursionError:  # a nesting the limits did not foresee: never a 500
        return _plain(text)
    html = html.replace("<h1>", "<h2>").replace("</h1>", "</h2>")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "tel"},
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(clean)  # noqa: S704 - sanitised by nh3 above


def render_markdown(text: str | None) -> Markup:
    """Render Markdown and sanitise the result; ``h1`` is demoted (the page owns its title)."""
    if not text or not text.strip():
        return Markup("")
    return _render(_newlines(text))
