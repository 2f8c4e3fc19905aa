"""WTForms field filters shared by the blueprints' forms."""

from __future__ import annotations


def stripped(value):
    """A select's value without surrounding whitespace: " " (a hand-made URL) is "Any", not a
    value that ``Optional()`` would wave through unchecked against the choices."""
    return value.strip() if isinstance(value, str) else value
