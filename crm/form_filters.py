"""WTForms field filters and helpers shared by the blueprints' forms."""

from __future__ import annotations


def stripped(value):
    """A select's value without surrounding whitespace: " " (a hand-made URL) is "Any", not a
    value that ``Optional()`` would wave through unchecked against the choices."""
    return value.strip() if isinstance(value, str) else value


def filter_value(field):
    """A GET filter's value, or None when it is empty or invalid: an invalid filter is shown with
    its error and ignored, and the others still apply."""
    return field.data if not field.errors and field.data not in (None, "") else None
