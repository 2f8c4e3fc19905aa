"""National Provider Identifier check digit (Luhn over the 80840 prefix)."""

from __future__ import annotations


def _luhn_sum(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right of the payload is doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def check_digit(first_nine: str) -> str:
    """The tenth digit for a nine-digit NPI stem."""
    if len(first_nine) != 9 or not (first_nine.isascii() and first_nine.isdigit()):
        raise ValueError("an NPI stem is nine digits")
    total = 24 + _luhn_sum(first_nine)  # 24 = the Luhn contribution of the 80840 prefix
    return str((10 - total % 10) % 10)


def is_valid_npi(value: str | None) -> bool:
    value = (value or "").strip()
    if not (len(value) == 10 and value.isascii() and value.isdigit()):
        return False
    return value[0] in "12" and check_digit(value[:9]) == value[9]
