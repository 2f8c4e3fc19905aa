"""WTForms field filters and helpers shared by the blueprints' forms."""

from __future__ import annotations

from wtforms.validators import ValidationError


def stripped(value):
    """A select's value without surrounding whitespace: " " (a hand-made URL) is "Any", not a
    value that ``Optional()`` would wave through unchecked against the choices."""
    return value.strip() if isinstance(value, str) else value


def filter_value(field):
    """A GET filter's value, or None when it is empty or invalid: an invalid filter is shown with
    its error and ignored, and the others still apply."""
    return field.data if not field.errors and field.data not in (None, "") else None


def name_filter(label: str):
    """A field filter for a name: invisible characters (bidi overrides, zero-width spaces) dropped
    before validation, so a name of nothing else is "required"; a control character is the field's
    error (WTForms reports a filter's ValueError on the field)."""

    def clean(value):
        from crm.services.contact import clean_name

        return clean_name(value, label) if isinstance(value, str) else value

    return clean


class InYears:
    """A typed date (or date and time) within ``first``..``last``: a year such as 9999 is a typo,
    and one day past it is beyond what dates can hold."""

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last

    def __call__(self, form, field):
        if field.data is not None and not self.first <= field.data.year <= self.last:
            raise ValidationError(f"Enter a date between {self.first} and {self.last}.")
