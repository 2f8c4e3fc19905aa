"""Field mapping: pick our intake fields out of another tool's payload (pure, no Flask).

A source's ``field_mapping`` maps *our* field name to a *path* in its payload:

- dotted keys walk objects: ``contact.email``;
- a number walks a list: ``answers.0.text``;
- ``[key=value]`` picks the first list element whose (dotted) ``key`` equals
  ``value``: ``form_response.answers.[field.ref=email].email`` (robust when a
  form leaves optional answers out);
- keys that themselves contain dots (Gravity Forms' ``1.3``) are found too: at
  each level the longest run of segments that is a key wins.

Fields the mapping does not name are read from a top-level key with our own
name, so a plain JSON body with our names needs no mapping at all.
"""

from __future__ import annotations

import re
from typing import Any

# Our intake fields, in form order, with what each holds (shown in docs and the admin UI).
FIELDS: dict[str, str] = {
    "first_name": "First name (required, at most 100 characters)",
    "last_name": "Last name (required, at most 100 characters)",
    "email": "Email address",
    "phone": "Phone number, any common US format (stored as E.164)",
    "zip": "ZIP code, 5 digits or ZIP+4 (required)",
    "street": "Street address (optional)",
    "city": "City (optional)",
    "state": "State, two-letter code or name (optional)",
    "condition": "Condition: a name, slug or the patient's own words (mapped through synonyms)",
    "condition_details": "The patient's own words beside a listed condition (optional, at most 200 characters)",
    "message": "Free-text message (at most 2,000 characters)",
    "preferred_contact_method": "phone, text or email",
    "preferred_contact_time": "any (also: no preference, whenever, flexible...), morning, afternoon or evening",
    "preferred_mode": "in_person, telehealth or either",
    "language": "Preferred language: a code (en, es, es-MX) or a name (Spanish, Español); unknown ones are ignored",
    "consent": "Consent to be contacted (true/false, yes/no, 1/0)",
    "consent_text": "The consent wording the patient agreed to",
    "landing_page_url": "Page the form was on",
    "utm_source": "UTM source",
    "utm_medium": "UTM medium",
    "utm_campaign": "UTM campaign",
    "utm_term": "UTM term",
    "utm_content": "UTM content",
}

_TOKEN_RE = re.compile(r"\[[^\]]*\]|[^.\[\]]+")
# Real payloads nest a few levels (Typeform: 4); a path of hundreds of steps is a mistake, and
# building a sample payload that deep would overflow Python's recursion limit.
MAX_PATH_STEPS = 32
# A sample payload (build_payload) makes a list for a number up to this and an object keyed by the
# number past it: "answers.2" is Typeform's third answer, while "fields.1250.value" names a field by
# its id (and "answers.999999999" built a list that long: it hung the source page).
MAX_LIST_INDEX = 999
# Longer numbers index nothing in a body of at most 64 KiB, and int() refuses 4,300+ digits.
_INDEX_RE = re.compile(r"-?\d{1,9}")


class MappingError(ValueError):
    """The mapping itself is unusable (unknown field, empty or malformed path)."""


def tokens(path: str) -> list[str]:
    path = (path or "").strip()
    if not path:
        raise MappingError("A path may not be empty.")
    found = _TOKEN_RE.findall(path)
    if set(_TOKEN_RE.sub("", path)) - {"."} or ".." in path or any(t == "[]" for t in found):
        raise MappingError(f"Cannot read the path {path!r}.")
    for t in found:
        if t.startswith("[") and "=" not in t:
            raise MappingError(f"A selector looks like [key=value], not {t!r}.")
    steps = len(found) + sum(t.count(".") for t in found if t.startswith("["))
    if steps > MAX_PATH_STEPS:
        raise MappingError(f"The path {path[:60]!r}... has {steps} steps; at most {MAX_PATH_STEPS}.")
    return found


def validate_mapping(mapping: Any) -> dict[str, str]:
    """Return the mapping if every key is one of our fields and every path parses."""
    if not isinstance(mapping, dict):
        raise MappingError("The field mapping must be a JSON object of our field -> path.")
    for ours, path in mapping.items():
        if ours not in FIELDS:
            raise MappingError(f"Unknown field {ours!r}; known fields: {', '.join(FIELDS)}.")
        if not isinstance(path, str):
            raise MappingError(f"The path for {ours!r} must be a string.")
        tokens(path)
    return mapping


_MISSING = object()


def _walk(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    head = parts[0]
    if head.startswith("["):
        if not isinstance(node, list):
            return _MISSING
        key, _, want = head[1:-1].partition("=")
        key_parts = key.split(".")
        for element in node:
            got = _walk(element, key_parts)
            if got is not _MISSING and got is not None and str(got) == want:
                return _walk(element, parts[1:])
        return _MISSING
    if isinstance(node, dict):
        for n in range(len(parts), 0, -1):
            if any(p.startswith("[") for p in parts[:n]):
                continue
            key = ".".join(parts[:n])
            if key in node:
                got = _walk(node[key], parts[n:])
                if got is not _MISSING:
                    return got
        return _MISSING
    if isinstance(node, list) and _INDEX_RE.fullmatch(head):
        index = int(head)
        if -len(node) <= index < len(node):
            return _walk(node[index], parts[1:])
    return _MISSING


def resolve(payload: Any, path: str) -> Any:
    """The value at ``path``, or None when the payload has nothing there."""
    got = _walk(payload, tokens(path))
    return None if got is _MISSING else got


def apply_mapping(payload: dict, mapping: dict[str, str] | None) -> dict[str, Any]:
    """Our field name -> raw value (None when absent)."""
    mapping = mapping or {}
    out: dict[str, Any] = {}
    for ours in FIELDS:
        out[ours] = resolve(payload, mapping[ours]) if ours in mapping else payload.get(ours)
    return out


def build_payload(mapping: dict[str, str], values: dict[str, Any]) -> dict:
    """The inverse, for test deliveries: a payload that ``apply_mapping`` reads back as ``values``.

    A number past ``MAX_LIST_INDEX`` is an object's key, never a list that long."""
    payload: dict = {}
    for ours, value in values.items():
        path = mapping.get(ours)
        if not path:
            payload[ours] = value
            continue
        parts = tokens(path)
        if all(p.isdigit() for p in parts):  # Gravity Forms style "1.3": a flat key
            payload[path] = value
            continue
        node: Any = payload
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            empty_child = [] if nxt is not None and (nxt.startswith("[") or _list_position(nxt)) else {}
            if part.startswith("["):
                key, _, want = part[1:-1].partition("=")
                element: dict = {}
                cursor = element
                key_parts = key.split(".")
                for kp in key_parts[:-1]:
                    cursor = cursor.setdefault(kp, {})
                cursor[key_parts[-1]] = want
                node.append(element)
                node = element
                if last:  # a selector cannot be a leaf; keep the value beside it
                    element["value"] = value
            elif isinstance(node, list):
                if not _list_position(part):  # another field's path made this a list: no giant one
                    raise MappingError(f"{ours}: {path[:60]!r} mixes list positions and keys at one place.")
                index = int(part)
                while len(node) <= index:
                    node.append({} if not last else None)
                if last:
                    node[index] = value
                else:
                    if not isinstance(node[index], dict | list):
                        node[index] = empty_child
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, empty_child)
    return payload


def _list_position(step: str) -> bool:
    return step.isdigit() and len(step.lstrip("0") or "0") <= len(str(MAX_LIST_INDEX)) and int(step) <= MAX_LIST_INDEX
