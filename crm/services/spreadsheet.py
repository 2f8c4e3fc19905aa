"""CSV cells a spreadsheet will not run as a formula (OWASP "CSV injection").

Every CSV we export (reports, the physician directory) passes its text cells through
``neutralise``: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a
leading ``'``. Plain numbers (``-80.191800``, ``-3``) are left alone: no spreadsheet runs them, and
a quote would turn an exported longitude into text. An E.164 phone (``+13055550100``) is quoted
like any other ``+`` cell, as OWASP advises.

A CSV we read back (the physician import) passes its cells through ``restore``, which removes
exactly the quote ``neutralise`` added, so export → import is lossless. A cell that itself starts
with ``'`` followed by a formula character gets a second quote on export, so it too comes back as
it was; a quote before anything else (``'Ohana Clinic``) is never touched.
"""

from __future__ import annotations

import re

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def needs_quote(value: str) -> bool:
    # Quotes in front of a formula are peeled in a loop, not by recursion: a cell of a thousand
    # apostrophes must not end an import in RecursionError.
    value = value.lstrip("'")
    return value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(value)


def neutralise(value: object) -> object:
    """The cell as written to a CSV: text a spreadsheet could run gets a leading quote."""
    if isinstance(value, str) and needs_quote(value):
        return "'" + value
    return value


def restore(value: str) -> str:
    """A cell as read from a CSV: the quote ``neutralise`` added is removed."""
    if value.startswith("'") and needs_quote(value[1:]):
        return value[1:]
    return value
