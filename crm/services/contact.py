"""Normalising what people type: names, emails, phone numbers, ZIP codes, state codes."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

US_STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California", "CO": "Colorado",
    "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan",
    "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York", "NC": "North Carolina",
    "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania",
    "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas",
    "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington", "WV": "West Virginia",
    "WI": "Wisconsin", "WY": "Wyoming",
}  # fmt: skip

# ZIP+4 as people write it: 33101-1234, 331011234, 33101 1234, or with a dash a word processor
# made typographic (33101–1234).
# ASCII digits only: \d alone also matches other scripts' digits, which would be stored as typed and
# never geocode; full-width digits (an East Asian keyboard) are folded to ASCII first (NFKC).
ZIP_RE = re.compile(r"^(\d{5})(?:(?:\s*[-\u2010-\u2014]\s*|\s?)(\d{4}))?$", re.ASCII)


# Invisible characters that change how a name is displayed or compared without being part of it:
# bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069: "\u202eevil" shows as
# "live"), the bidi marks (U+200E, U+200F, U+061C), the zero-width space, the word joiner and the
# byte-order mark. Zero-width (non-)joiners (U+200C, U+200D) stay: Persian, Indic scripts and emoji
# sequences need them.
INVISIBLE_RE = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


def clean_name(value: str | None, label: str = "The name", *, refuse_controls: bool = True) -> str:
    """A name as shown to people (a patient's, physician's, user's, condition's, webhook source's):
    the invisible characters above removed without a word, surrounding whitespace stripped.

    A control character (a tab, a line break, NUL, C1 controls) raises ValueError naming ``label``;
    ``refuse_controls=False`` is for a patient's name in a delivery, which must never be lost for it.
    """
    value = INVISIBLE_RE.sub("", value or "")
    if refuse_controls and any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{label} contains a control character (a tab, a line break or similar): type plain text.")
    return value.strip()


def normalise_email(value: str) -> str:
    """Lower-cased, validated address; raises ValueError with a readable reason."""
    value = (value or "").strip()
    if not value:
        raise ValueError("Enter an email address.")
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def normalise_phone(value: str, region: str = "US") -> str:
    """E.164 (``+13055550100``); raises ValueError if it is not a valid number. An extension
    is not part of E.164 and is left out: ``phone_parts`` returns it too."""
    return phone_parts(value, region)[0]


def phone_parts(value: str, region: str = "US") -> tuple[str, str | None]:
    """(E.164, extension or None): "305-555-1234 ext 12", "x12", "#12", ";ext=12" -> ("+13055551234", "12")."""
    value = (value or "").strip()
    if not value:
        raise ValueError("Enter a phone number.")
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("Enter a valid phone number, e.g. (305) 555-0100.") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("Enter a valid phone number, e.g. (305) 555-0100.")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), parsed.extension or None


def format_phone(e164: str | None) -> str:
    """Human form of a stored E.164 number: (305) 555-0100 for US numbers."""
    if not e164:
        return ""
    try:
        parsed = phonenumbers.parse(e164, "US")
    except phonenumbers.NumberParseException:
        return e164
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if parsed.country_code == 1
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(parsed, fmt)


def normalise_zip(value: str) -> str:
    """``12345`` or ``12345-6789``; raises ValueError otherwise."""
    match = ZIP_RE.match(unicodedata.normalize("NFKC", value or "").strip())
    if not match:
        raise ValueError("Enter a 5-digit ZIP code (or ZIP+4).")
    return match.group(1) + (f"-{match.group(2)}" if match.group(2) else "")


def zip_from_number(value: int) -> str | None:
    """A ZIP a sender's form tool turned into a JSON number, leading zeros lost: 2134 -> "02134"
    (Boston), 7030 -> "07030" (Hoboken), 501 -> "00501"; 21341234 -> "02134-1234" (ZIP+4).

    Only whole numbers that fit the real ranges: 3-5 digits are a ZIP (the lowest is 00501),
    7-9 digits a ZIP+4 (at most two zeros lost). Anything else (1-2 or 6 digits, negative)
    is None: the caller keeps the number as sent and its ZIP check refuses it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    digits = len(str(value))
    if 3 <= digits <= 5:
        return f"{value:05d}"
    if 7 <= digits <= 9:
        text = f"{value:09d}"
        return f"{text[:5]}-{text[5:]}"
    return None


def normalise_state(value: str) -> str:
    code = (value or "").strip().upper()
    if code not in US_STATES:
        raise ValueError(f"Unknown state code {value!r}.")
    return code
