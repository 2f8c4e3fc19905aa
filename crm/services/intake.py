"""Intake: every submission is stored raw in the inbox first, then processed into a patient + lead.

The two public doors (the request form and ``POST /webhooks/intake/<slug>``)
both end here:

1. **Check** — the payload is parsed, mapped and validated; no database work yet.
2. **Store and process, in one transaction** — the write lock (SQLite) or a
   per-contact advisory lock (PostgreSQL), the patient look-up, then the new
   patient + lead (or the fold into an open lead, SPEC 2.2) and the raw
   ``InboxItem`` (body and headers, minus signature/authorization/cookies) with
   its outcome; one commit. The item claims its ``dedupe_key``
   (``webhook:<source id>:<webhook-id>`` or ``form:<idempotency token>``) with
   the lead: the column is unique, so of two concurrent deliveries of one
   webhook-id exactly one commits a lead and the other sees an IntegrityError
   and is answered "duplicate" with the winner's lead id.
3. **Afterwards** — the ``enrich_new`` scheduler job (crm/services/pipeline.py)
   geocodes, matches and routes the lead; nothing of that runs in the request.

A processing failure (database error, a bug) rolls the transaction back and
commits the raw item alone as ``failed`` with its error before we answer (if
that cannot be written either, the route answers 503 and the sender retries);
``retry_failed_items`` (a scheduler job) retries it with backoff and an admin
can replay it from /admin/inbox. Rejections for source, size or signature are
committed on their own.

This module owns its transactions; every other service function only flushes.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from crm import INTAKE_BIND
from crm.extensions import db
from crm.intake.mapping import FIELDS, MappingError, apply_mapping, build_payload, validate_mapping  # noqa: F401
from crm.logging_setup import error_text
from crm.models import Condition, InboxItem, Lead, LeadEvent, Patient, User, WebhookSecret, WebhookSource
from crm.models.base import utcnow
from crm.models.enums import (
    ContactMethod,
    ContactTime,
    EventKind,
    GeocodeStatus,
    InboxChannel,
    InboxStatus,
    LeadSourceKind,
    LeadStatus,
    PreferredMode,
)
from crm.prepared import Prepared, TempFunction, insert_parameters
from crm.services import audit, dedupe
from crm.services.contact import (
    US_STATES,
    clean_name,
    normalise_email,
    normalise_state,
    normalise_zip,
    phone_parts,
    zip_from_number,
)
from crm.services.timeline import add_event
from crm.sqlite_lock import try_begin_immediate

log = logging.getLogger(__name__)

# Headers never stored: they carry credentials or the signature itself.
DROPPED_HEADERS = {"webhook-signature", "authorization", "cookie", "proxy-authorization", "x-api-key", "set-cookie"}
MAX_NAME = 100
MAX_MESSAGE = 2000
MAX_TEXT = {"street": 200, "city": 100, "condition": 200, "condition_details": 200, "consent_text": 2000}
TRACKING = {"landing_page_url": 500, "utm_source": 100, "utm_medium": 100, "utm_campaign": 100, "utm_term": 100}
TRACKING["utm_content"] = 100
RETRY_BASE = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=6)
CLAIM_LEASE = timedelta(minutes=5)
HONEYPOT_ERROR = (
    "Caught by the honeypot: the hidden 'website' field was filled in, which people do not see, so"
    " probably a bot (a browser's autofill can do it too). Nothing was created. If the fields below"
    " are a real patient's request, press Replay."
)
WEBHOOK_CONSENT = "Consent collected by the sending form ({source})."
TRUE_WORDS = {"1", "true", "yes", "y", "on", "checked", "agree", "agreed", "i agree", "accept", "accepted"}
FALSE_WORDS = {"", "0", "false", "no", "n", "off", "unchecked", "decline", "declined"}
# Refusals written out, and "no answer" as tools spell it: a yes is needed, never presumed.
FALSE_WORDS |= {
    "i decline", "disagree", "i disagree", "do not agree", "i do not agree", "don't agree", "i don't agree",
    "dont agree", "i dont agree", "not agreed", "refuse", "i refuse", "refused", "reject", "rejected", "deny",
    "denied", "no thanks", "no, thanks", "no thank you", "no, thank you", "nope", "opt out", "opt-out",
    "opted out", "not checked", "not accepted", "none", "null", "nil", "undefined",
}  # fmt: skip

CONTACT_METHOD_WORDS = {
    "phone": ContactMethod.PHONE, "call": ContactMethod.PHONE, "phone call": ContactMethod.PHONE,
    "text": ContactMethod.TEXT, "sms": ContactMethod.TEXT, "text message": ContactMethod.TEXT,
    "email": ContactMethod.EMAIL, "e-mail": ContactMethod.EMAIL,
}  # fmt: skip
CONTACT_TIME_WORDS = {
    "any": ContactTime.ANY, "anytime": ContactTime.ANY, "any time": ContactTime.ANY, "": ContactTime.ANY,
    "morning": ContactTime.MORNING, "afternoon": ContactTime.AFTERNOON, "evening": ContactTime.EVENING,
    # "No preference" as forms word it: all mean any time.
    "no preference": ContactTime.ANY, "no pref": ContactTime.ANY, "none": ContactTime.ANY,
    "either": ContactTime.ANY, "whenever": ContactTime.ANY, "flexible": ContactTime.ANY,
    "all day": ContactTime.ANY, "any time of day": ContactTime.ANY, "anytime is fine": ContactTime.ANY,
    "any time is fine": ContactTime.ANY, "doesn't matter": ContactTime.ANY, "does not matter": ContactTime.ANY,
    "not sure": ContactTime.ANY,
    "mornings": ContactTime.MORNING, "afternoons": ContactTime.AFTERNOON, "evenings": ContactTime.EVENING,
}  # fmt: skip
# Names a form or a patient may write for the languages a US intake desk meets most; anything
# else is taken as an ISO 639 code (2-3 letters), as specialists' languages are (routing matches them).
LANGUAGE_WORDS = {
    "english": "en", "inglés": "en", "ingles": "en", "spanish": "es", "español": "es", "espanol": "es",
    "castellano": "es", "chinese": "zh", "mandarin": "zh", "cantonese": "zh", "vietnamese": "vi",
    "tagalog": "tl", "filipino": "tl", "korean": "ko", "russian": "ru", "arabic": "ar", "french": "fr",
    "haitian creole": "ht", "creole": "ht", "portuguese": "pt", "português": "pt", "german": "de",
    "italian": "it", "polish": "pl", "hindi": "hi", "japanese": "ja", "hmong": "hmn",
}  # fmt: skip
# The public form's preselected answers (crm/intake/forms.py starts on them).
FORM_CONTACT_DEFAULTS = {"language": "en", "preferred_contact_method": "phone", "preferred_contact_time": "any"}
LANGUAGE_CODE_RE = re.compile(r"^[a-z]{2,3}$")
# ISO 639-2 codes some tools send, for the languages above.
LANGUAGE_CODES3 = {
    "eng": "en", "spa": "es", "zho": "zh", "chi": "zh", "vie": "vi", "tgl": "tl", "fil": "tl", "kor": "ko",
    "rus": "ru", "ara": "ar", "fra": "fr", "fre": "fr", "hat": "ht", "por": "pt", "deu": "de", "ger": "de",
    "ita": "it", "pol": "pl", "hin": "hi", "jpn": "ja",
}  # fmt: skip


def language_code(value: str) -> str | None:
    """ "es", "es-MX", "es_MX", "Spanish (Mexico)", "Español", "spa" -> "es"; None when unknown.

    A routing preference, not a required answer: an unknown value leaves the patient at the
    default rather than refusing the request (the raw body keeps what was sent)."""
    text = value.strip().lower()
    if not text:
        return None
    if text in LANGUAGE_WORDS:
        return LANGUAGE_WORDS[text]
    first = re.split(r"[-_ (,;/]", text, maxsplit=1)[0]
    code = LANGUAGE_WORDS.get(first) or LANGUAGE_CODES3.get(first) or first
    return code if LANGUAGE_CODE_RE.match(code) and (len(code) == 2 or code in ("hmn",)) else None


MODE_WORDS = {
    "either": PreferredMode.EITHER, "any": PreferredMode.EITHER, "both": PreferredMode.EITHER,
    "no preference": PreferredMode.EITHER, "": PreferredMode.EITHER,
    "in_person": PreferredMode.IN_PERSON, "in person": PreferredMode.IN_PERSON, "in-person": PreferredMode.IN_PERSON,
    "office": PreferredMode.IN_PERSON, "office visit": PreferredMode.IN_PERSON,
    "telehealth": PreferredMode.TELEHEALTH, "video": PreferredMode.TELEHEALTH, "online": PreferredMode.TELEHEALTH,
    "virtual": PreferredMode.TELEHEALTH, "telemedicine": PreferredMode.TELEHEALTH,
}  # fmt: skip
STATE_NAMES = {name.lower(): code for code, name in US_STATES.items()}


class PayloadError(ValueError):
    """The body cannot be read (malformed JSON, not an object, unsupported type)."""


# --------------------------------------------------------------------------- validation (pure)


# NUL and other control characters (tab and line breaks are text): PostgreSQL cannot store NUL at
# all, so refusing them here keeps both databases answering the same 422 instead of a stored
# delivery that can never become a lead.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Half of a UTF-16 pair, as JSON can spell it ("\ud800"): no character, and no database stores it.
LONE_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def _text(value: Any) -> str:
    """A payload value as text; lists (multi-choice answers) are joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):  # JSON's 1e400 reads as inf
            raise ValueError("Expected a text value, not a number too large to write.")
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        value = ", ".join(str(v) for v in value)
    if isinstance(value, str):
        # Browsers send a textarea's line breaks as CRLF but count them as one character
        # against maxlength: count them the same way, or a message the browser allowed is refused.
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        if CONTROL_RE.search(value):
            raise ValueError("Contains control characters; send plain text.")
        if LONE_SURROGATE_RE.search(value):
            raise ValueError("Contains half of a UTF-16 pair (a lone \\ud800-\\udfff escape); send plain text.")
        return value.strip()
    raise ValueError("Expected a text value.")


def parse_consent(value: Any) -> bool | None:
    """True/False for a recognisable answer, None when absent; ValueError for an object, which
    is no answer at all (``{"checked": false}`` must not read as a yes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, dict):
        raise ValueError("Send consent as a yes or no (true/false), not an object.")
    if isinstance(value, list):
        if any(isinstance(v, list | dict) for v in value):
            raise ValueError("Send consent as a yes or no (true/false), not a list of lists or objects.")
        return any(parse_consent(v) for v in value) if value else False
    word = str(value).strip().lower().replace("\u2019", "'").rstrip(".!")
    if word in TRUE_WORDS:
        return True
    if _REFUSAL_START_RE.match(word):  # "No, please don't call me", "I do not agree to be contacted"
        return False
    return word not in FALSE_WORDS  # True also for a checkbox whose value is its label ("I agree to be contacted")


# A sentence that opens with a refusal. Only its start counts: consent labels often end with
# "Reply STOP to opt out", which is no refusal.
_REFUSAL_START_RE = re.compile(
    r"^(?:no|not|never|nope|don'?t|do not|decline|disagree|refuse|reject|deny|opt[- ]?out|unsubscribe"
    r"|i (?:do not|don'?t|decline|disagree|refuse|reject|deny|never|won'?t|will not|opt[- ]?out))\b"
)


# A choice's label with its detail after it: "Morning (9am-12pm)", "Evening - after 5", "Phone: cell".
# (Searched, then cut at: a pattern that starts with \s* and ends in .*$ backtracks over a long run
# of spaces in quadratic time, a minute for 65,000 of them.)
_CHOICE_DETAIL_RE = re.compile(r"[(:,/]|\s[-\u2013\u2014]\s")


def _word(value: str, table: dict, what: str):
    key = value.strip().lower().replace("_", " ").replace("\u2019", "'").rstrip(".!") if value else ""
    detail = _CHOICE_DETAIL_RE.search(key)
    head = key[: detail.start()].rstrip() if detail else key
    for candidate in (key, key.replace(" ", "_"), head, head.replace(" ", "_")):
        if candidate in table:
            return table[candidate]
    raise ValueError(f"Choose {what}.")


def validate_fields(
    raw: Mapping[str, Any], *, require_consent: bool = True, require_email_and_phone: bool = True
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Clean one submission. Returns (clean values, errors by field); no database access.

    ``clean`` has every key of ``FIELDS`` plus ``consent`` (bool or None).
    """
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}

    def err(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    texts: dict[str, str] = {}
    for name in FIELDS:
        if name == "consent":
            continue
        try:
            texts[name] = _text(raw.get(name))
        except ValueError as exc:
            err(name, str(exc))
            texts[name] = ""

    for name, label in (("first_name", "first name"), ("last_name", "last name")):
        value = clean_name(texts[name], refuse_controls=False)  # invisible characters dropped, never refused
        if not value and name not in errors:
            err(name, f"Enter your {label}.")
        elif len(value) > MAX_NAME:
            err(name, f"Use at most {MAX_NAME} characters.")
        clean[name] = value

    email, phone = texts["email"], texts["phone"]
    clean["email"] = clean["phone"] = clean["phone_extension"] = None
    if email:
        try:
            clean["email"] = normalise_email(email)
        except ValueError:
            err("email", "Enter a valid email address, like name@example.com.")
    if phone:
        try:
            # The patient's phone is E.164, which has no extension: the extension is kept apart
            # and goes on the lead's event, so a specialist can still dial it.
            clean["phone"], clean["phone_extension"] = phone_parts(phone)
        except ValueError as exc:
            err("phone", str(exc))
    if require_email_and_phone:
        if not email and "email" not in errors:
            err("email", "Enter your email address.")
        if not phone and "phone" not in errors:
            err("phone", "Enter a phone number we can reach you on.")
    elif not email and not phone:
        err("email", "Give an email address or a phone number.")
        err("phone", "Give an email address or a phone number.")

    raw_zip = raw.get("zip")
    if isinstance(raw_zip, float) and raw_zip.is_integer():
        raw_zip = int(raw_zip)  # 2134.0 from a tool that stores every answer as a number
    if (padded := zip_from_number(raw_zip)) is not None:
        texts["zip"] = padded  # a JSON number lost its leading zeros; a string is taken as typed
    try:
        clean["zip"] = normalise_zip(texts["zip"]) if texts["zip"] else None
        if clean["zip"] is None and "zip" not in errors:
            err("zip", "Enter your ZIP code.")
    except ValueError as exc:
        clean["zip"] = None
        err("zip", str(exc))

    for name, limit in MAX_TEXT.items():
        clean[name] = texts[name]
        if len(texts[name]) > limit:
            err(name, f"Use at most {limit:,} characters.")
    clean["message"] = texts["message"]
    if len(texts["message"]) > MAX_MESSAGE:
        err("message", f"Use at most {MAX_MESSAGE:,} characters (you wrote {len(texts['message']):,}).")

    state = texts["state"]
    clean["state"] = None
    if state:
        try:
            clean["state"] = STATE_NAMES.get(state.lower()) or normalise_state(state)
        except ValueError:
            err("state", "Use a US state, e.g. FL or Florida.")

    for name, table, what in (
        ("preferred_contact_method", CONTACT_METHOD_WORDS, "phone, text or email"),
        ("preferred_contact_time", CONTACT_TIME_WORDS, "any time, morning, afternoon or evening"),
        ("preferred_mode", MODE_WORDS, "in person, telehealth or either"),
    ):
        try:
            clean[name] = _word(texts[name], table, what) if texts[name] else None
        except ValueError as exc:
            clean[name] = None
            err(name, str(exc))

    clean["language"] = language_code(texts["language"])

    try:
        consent = parse_consent(raw.get("consent"))
    except ValueError as exc:
        consent = None
        err("consent", str(exc))
    clean["consent"] = consent
    if "consent" not in errors and (consent is False or (require_consent and not consent)):
        err("consent", "Please agree to be contacted so we can help you book the appointment.")

    # Tracking fields come from hidden inputs and query strings: cut, never refuse.
    for name, limit in TRACKING.items():
        clean[name] = texts[name][:limit]
    return clean, errors


# --------------------------------------------------------------------------- conditions

_WORD_RE = re.compile(r"[a-z0-9]+")


def words_of(text: str | None) -> list[str]:
    """Lower-cased words, punctuation dropped ("Crohn's, pain" -> crohn, s, pain)."""
    return _WORD_RE.findall((text or "").lower())


def _norm(text: str) -> str:
    return " ".join(words_of(text))


def _singular(word: str) -> str:
    """ "spasms" -> "spasm", "pains" -> "pain" ("ss" kept): free text and names compared in one number.
    Crude, but the same on both sides, so it can only make two spellings meet."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _norm_singular(text: str) -> str:
    return " ".join(_singular(w) for w in words_of(text))


def match_condition(text: str, conditions: list[Condition]) -> Condition | None:
    """Map free text to a condition: exact slug/name/synonym first, then a synonym or name inside the
    text; then both again with plurals read as singulars ("back pains"); then as the condition search
    finds it ("spasms" starts a word of Dystonia's "muscle spasms"), when one condition alone is best."""
    if not words_of(text):
        return None
    for norm in (_norm, _norm_singular):
        found = _match_words(norm(text), conditions, norm)
        if found is not None:
            return found
    return _best_search_match(words_of(text), conditions)


def _match_words(wanted: str, conditions: list[Condition], norm) -> Condition | None:
    for c in conditions:
        names = [c.slug.replace("-", " "), c.name, *(c.synonyms or [])]
        if wanted in {norm(n) for n in names}:
            return c
    for c in conditions:  # a renamed condition's old slug, only after every current name
        if wanted in {norm(s.replace("-", " ")) for s in c.former_slugs or []}:
            return c
    best: tuple[int, Condition] | None = None
    padded = f" {wanted} "
    for c in conditions:
        for n in [c.name, *(c.synonyms or [])]:
            key = norm(n)
            if key and f" {key} " in padded and (best is None or len(key) > best[0]):
                best = (len(key), c)
    return best[1] if best else None


def _best_search_match(words: list[str], conditions: list[Condition]) -> Condition | None:
    # Short words start too many others ("a", "arm"): only words of four letters or more.
    if any(len(w) < 4 for w in words):
        return None
    ranked = sorted(
        ((rank, c) for c in conditions if (rank := search_rank(c, words)) is not None and rank <= 2),
        key=lambda r: r[0],
    )
    if ranked and (len(ranked) == 1 or ranked[0][0] < ranked[1][0]):
        return ranked[0][1]
    return None


def search_rank(c, words: list[str]) -> int | None:
    """How well typed words find condition ``c`` (the condition search, and free text as a last
    resort): 0 the words are the name or a synonym; 1 they start words of the name; 2 of the names
    and synonyms; 3 of those or the summary; None no match."""
    names = [c.name, c.slug.replace("-", " "), *(c.synonyms or [])]
    if " ".join(words) in {" ".join(words_of(n)) for n in names}:
        return 0
    summary = getattr(c, "summary", None) or ""  # the cached rows intake uses carry none
    for rank, text in enumerate((c.name, " ".join(names), " ".join([*names, summary])), start=1):
        text_words = words_of(text)
        if all(any(t.startswith(w) for t in text_words) for w in words):
            return rank
    return None


def close_condition(text: str, conditions: list) -> Condition | None:
    """A condition whose name or synonym is spelled close to ``text`` ("migrane" -> Migraine),
    for a "did you mean" link; None when nothing is close enough."""
    wanted = _norm(text)
    if len(wanted) < 4:  # short words are close to too many things
        return None
    by_name: dict[str, Condition] = {}
    for c in conditions:
        for n in [c.name, *(c.synonyms or [])]:
            by_name.setdefault(_norm(n), c)
    close = difflib.get_close_matches(wanted, list(by_name), n=1, cutoff=0.8)
    return by_name[close[0]] if close else None


CONDITIONS_TTL = 30.0  # seconds another worker may use a condition list from before an admin's edit
_conditions_cache: tuple[float, list] | None = None
_CONDITION_ROWS = sa.select(
    Condition.id, Condition.slug, Condition.name, Condition.synonyms, Condition.former_slugs
).order_by(Condition.published.desc(), Condition.id)


def forget_conditions(*_args) -> None:
    global _conditions_cache
    _conditions_cache = None


def _forget_on_commit(flag: str, forget):
    """Clear at the flush and again when that transaction commits: a read by another thread in
    between would otherwise cache the old rows for a whole TTL."""

    def mark(_mapper, _connection, target) -> None:
        forget()
        session = sa.orm.object_session(target)
        if session is not None:
            session.info[flag] = forget

    return mark


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _forget_after_commit(session) -> None:
    for flag in ("intake_forget_conditions", "intake_forget_sources"):
        forget = session.info.pop(flag, None)
        if forget is not None:
            forget()


@sa.event.listens_for(sa.orm.Session, "after_rollback")
def _forget_nothing_after_rollback(session) -> None:
    session.info.pop("intake_forget_conditions", None)
    session.info.pop("intake_forget_sources", None)


# An edit in this process is seen at once; other workers re-read within CONDITIONS_TTL.
for _event in ("after_insert", "after_update", "after_delete"):
    sa.event.listen(Condition, _event, _forget_on_commit("intake_forget_conditions", forget_conditions))


def _condition_rows() -> list:
    global _conditions_cache
    now = time.monotonic()
    if _conditions_cache is None or now - _conditions_cache[0] > CONDITIONS_TTL:
        _conditions_cache = (now, list(db.session.execute(_CONDITION_ROWS).all()))
    return _conditions_cache[1]


def resolve_condition(text: str):
    """The matching condition as a row with ``id, slug, name, synonyms`` (no ORM objects: this is hot)."""
    if not text:
        return None
    return match_condition(text, _condition_rows())


# --------------------------------------------------------------------------- payloads


def parse_body(body: bytes, content_type: str) -> dict:
    """JSON object or form-encoded body -> dict; PayloadError explains what is wrong."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{":
        # A JSON object sent with the form type (some WordPress plugins do): an encoder would
        # have escaped a "{", so this is not form data. Read as JSON when it is an object.
        try:
            return parse_body(body, "application/json")
        except PayloadError:
            pass
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError("The form-encoded body is not UTF-8.") from exc
        data: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            if key in data:
                data[key] = (data[key] if isinstance(data[key], list) else [data[key]]) + [value]
            else:
                data[key] = value
        return data
    if kind and kind != "application/json" and not kind.endswith("+json") and kind != "text/plain":
        raise PayloadError(f"Unsupported content type {kind!r}: send application/json or form-encoded data.")
    try:
        data = json.loads(body, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"Malformed JSON: {exc}") from exc
    except RecursionError as exc:  # thousands of nested [ or {: no form nests like that
        raise PayloadError("Malformed JSON: nested too deeply.") from exc
    if not isinstance(data, dict):
        raise PayloadError("The JSON body must be an object.")
    return data


def _not_json(word: str):
    """NaN, Infinity and -Infinity: Python reads them, JSON does not have them."""
    raise ValueError(f"{word} is not a JSON value")


# Any other header that may carry a credential: another tool's signature passed on by a relay
# (Typeform-Signature, X-Hub-Signature-256, svix-signature), a secret, a token, a key.
_CREDENTIAL_HEADER_RE = re.compile(
    r"signature|secret|token|auth|cookie|passw|session|hmac|credential|bearer|(?:^|[-_])(?:api[-_]?)?key(?:$|[-_])",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=512)
def _kept_header(name: str) -> bool:
    """Whether a header (lower-case name) is kept: senders repeat the same few names, so each is
    judged once."""
    return name not in DROPPED_HEADERS and not _CREDENTIAL_HEADER_RE.search(name)


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers an inbox item keeps: none that signs or authenticates (SPEC 5: no secret or
    signature stored in clear)."""
    kept = {}
    for k, v in headers.items():
        name = k.lower()
        if _kept_header(name):
            kept[storable(name)] = storable(v)
    return kept


def raw_fields(item: InboxItem) -> dict[str, Any]:
    """Our field -> raw value, read from the stored body (with the source's current mapping)."""
    if item.channel == InboxChannel.FORM:
        data = json.loads(item.body or "{}")
        if not isinstance(data, dict):
            raise PayloadError("The stored form body is not an object.")
        return data
    payload = parse_body((item.body or "").encode("utf-8"), item.content_type)
    mapping = (item.source.field_mapping if item.source is not None else None) or {}
    return apply_mapping(payload, validate_mapping(mapping))


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    status: str  # accepted | resubmitted | duplicate | rejected | failed | spam
    inbox_id: int | None = None
    lead_id: int | None = None
    http_status: int = 202
    error: str | None = None
    fields: dict[str, list[str]] | None = None
    read_from: dict[str, str] | None = None  # webhook 422: where in the body each refused field was read

    def json(self) -> dict:
        if self.status == "rejected":
            if self.fields is not None:
                body: dict[str, Any] = {"error": "validation failed", "fields": self.fields}
                if self.read_from:
                    body["read_from"] = self.read_from
                return body
            return {"error": self.error or "rejected"}
        if self.status in ("accepted", "failed"):
            return {"status": "accepted", "lead_id": self.lead_id, "inbox_id": self.inbox_id}
        return {"status": self.status, "lead_id": self.lead_id}


@contextmanager
def _keep_loaded():
    """Our own freshly written rows stay loaded across commits (no reload SELECT per attribute)."""
    session = db.session()
    before = session.expire_on_commit
    session.expire_on_commit = False
    try:
        yield
    finally:
        session.expire_on_commit = before


def _store(**values) -> InboxItem:
    item = InboxItem(**values)
    with _keep_loaded():
        db.session.add(item)
        db.session.commit()
    return item


UNKNOWN_OR_INACTIVE = "unknown or inactive webhook source"


REFUSED_WHILE_INACTIVE_DAYS = 30


def refused_while_inactive(source_id: int, now: datetime | None = None) -> tuple[int, datetime | None]:
    """(count, latest) of the deliveries a source refused with 404 while it was inactive, in the last
    REFUSED_WHILE_INACTIVE_DAYS (older ones are past any sender's resending). They cannot be replayed
    (the signature is checked before anything else and is not stored): only the sender can send them
    again, so the source's page says how many there were."""
    since = (now or utcnow()) - timedelta(days=REFUSED_WHILE_INACTIVE_DAYS)
    count, latest = db.session.execute(
        sa.select(sa.func.count(), sa.func.max(InboxItem.received_at)).where(
            InboxItem.source_id == source_id,
            InboxItem.status == InboxStatus.REJECTED,
            InboxItem.error == f"[404] {UNKNOWN_OR_INACTIVE}",
            InboxItem.received_at >= since,
        )
    ).one()
    return int(count), latest


def _reject_now(item_values: dict, code: int, message: str) -> Outcome:
    item = _store(status=InboxStatus.REJECTED, error=f"[{code}] {message}", processed_at=utcnow(), **item_values)
    log.info("intake: inbox item %s rejected (%s)", item.id, code)
    return Outcome("rejected", inbox_id=item.id, http_status=code, error=message)


# --------------------------------------------------------------------------- webhook


def _signature_problem(source: WebhookSource, body: bytes, h: Mapping[str, str], now: datetime) -> str | None:
    """None when a live secret signed this body (``h``: the headers, lower-case names, already
    checked by ``signature_headers_problem``); otherwise the reason for a 401."""
    from standardwebhooks.webhooks import Webhook

    from crm.services.sources import active_secrets

    for secret in active_secrets(source, now):
        try:
            Webhook(secret.secret).verify(body, h, json_parse=False)
            return None
        except Exception:  # noqa: BLE001,S112 - any failure with this secret: try the next one
            continue
    return "invalid signature"


def signature_headers_problem(h: Mapping[str, str], now: datetime) -> str | None:
    """What is wrong with the signature headers themselves (``h``: lower-case names), before any
    secret is tried; None when all three are there and the timestamp is fresh."""
    if not (h.get("webhook-id") and h.get("webhook-timestamp") and h.get("webhook-signature")):
        return "missing webhook-id, webhook-timestamp or webhook-signature header"
    try:
        sent = int(h["webhook-timestamp"])
    except ValueError:
        return "webhook-timestamp must be Unix seconds"
    if abs(sent) > 10**15:  # hundreds of digits: no clock, and too large for the float arithmetic below
        return "stale webhook-timestamp (more than 5 minutes off)"
    if abs(now.timestamp() * 1000 - sent) <= 300_000:  # a common sender mistake, worth naming
        return "webhook-timestamp must be Unix seconds, not milliseconds"
    if abs(now.timestamp() - sent) > 300:
        return "stale webhook-timestamp (more than 5 minutes off)"
    return None


def storable(text: str) -> str:
    """``text`` as a database stores it: PostgreSQL text cannot hold NUL, so each is shown as ␀."""
    return text.replace("\x00", "\u2400")


def _decoded(body: bytes) -> tuple[str, bool]:
    """The body as text, and whether it was UTF-8 (else undecodable bytes are shown as U+FFFD)."""
    try:
        return body.decode("utf-8"), True
    except UnicodeDecodeError:
        return body.decode("utf-8", errors="replace"), False


WEBHOOK_ID_LENGTH = 200  # inbox_items.webhook_id


def stored_webhook_id(raw: str) -> str | None:
    """The webhook-id as stored (and so as deduplicated): whole when it fits the column; a longer
    one keeps its start and a digest of the whole, so two ids that share their first 200
    characters are still two deliveries, not one taken for the other's duplicate."""
    if len(raw) <= WEBHOOK_ID_LENGTH:
        return raw or None
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{raw[: WEBHOOK_ID_LENGTH - 42]}…#{digest}"


def receive_webhook(
    slug: str,
    body: bytes | None,
    headers: Mapping[str, str],
    *,
    remote_ip: str | None = None,
    too_large: bool = False,
    now: datetime | None = None,
) -> Outcome:
    """One delivery to ``/webhooks/intake/<slug>``: store, verify, process. Commits.

    No ORM session is opened for a new patient's delivery on PostgreSQL (its one call runs on the
    intake engine): opening and closing one cost a tenth of what the rest of the delivery costs its
    worker. The paths that commit ORM rows keep them loaded (``_keep_loaded``) themselves."""
    now = now or utcnow()
    kept = safe_headers(headers)
    content_type = kept.get("content-type", "")[:120]
    webhook_id = stored_webhook_id(kept.get("webhook-id") or "")
    slug = storable(slug[:80])
    source = load_source(slug)
    text, utf8 = _decoded(b"" if too_large or body is None else body)
    item_values = {
        "channel": InboxChannel.WEBHOOK,
        "source_id": source.id if source is not None else None,
        "source_slug": slug,
        "webhook_id": webhook_id,
        "received_at": now,
        "remote_ip": remote_ip,
        "headers": kept,
        "content_type": content_type,
        "body": storable(text),
    }
    if source is None or not source.active:
        return _reject_now(item_values, 404, UNKNOWN_OR_INACTIVE)
    if too_large:
        limit = current_app.config["WEBHOOK_MAX_BYTES"]
        return _reject_now(item_values, 413, f"body too large: at most {limit} bytes")
    h = {k.lower(): v for k, v in headers.items()}
    unsigned = signature_headers_problem(h, now)
    if unsigned:
        return _reject_now(item_values, 401, unsigned)
    if not utf8:
        # JSON and form bodies are UTF-8 (RFC 8259); the signing library reads the body as text,
        # so a signed one cannot be checked either way: an unreadable body, not a bad signature.
        return _reject_now(item_values, 400, "The body is not UTF-8 text (JSON and form bodies must be UTF-8).")
    if "\x00" in text:  # stored with each NUL shown as U+2400 (PostgreSQL text cannot hold one)
        return _reject_now(item_values, 400, "The body contains NUL (0x00) bytes, which no JSON or form body has.")
    reason = _signature_problem(source, body or b"", h, now)
    if reason:
        return _reject_now(item_values, 401, reason)
    # No look-up for an earlier delivery here: the item claims its dedupe key with its lead, and
    # the unique index turns a repeat (even a concurrent one) into "duplicate".
    return _store_and_process(item_values, now, source=source)


# --------------------------------------------------------------------------- form


def submit_form(fields: dict[str, Any], **kwargs) -> Outcome:
    """The public request form: ``fields`` are our field names (already shown back to the user if invalid)."""
    with _keep_loaded():
        return _submit_form(fields, **kwargs)


def _submit_form(
    fields: dict[str, Any],
    *,
    token: str | None,
    remote_ip: str | None,
    headers: Mapping[str, str] | None = None,
    spam: bool = False,
    now: datetime | None = None,
) -> Outcome:
    now = now or utcnow()
    token = token if token and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", token) else None
    item_values = {
        "channel": InboxChannel.FORM,
        "source_slug": "form",
        "webhook_id": token,
        "received_at": now,
        "remote_ip": remote_ip,
        "headers": safe_headers(headers or {}),
        "content_type": "application/json",
        "body": json.dumps(fields, sort_keys=True, default=str),
    }
    if spam:
        # Kept whole and not answered differently (a bot learns nothing); no dedupe key yet, so
        # a replay by an admin claims the form's token as any delivery does.
        item = _store(status=InboxStatus.SPAM, error=HONEYPOT_ERROR, processed_at=now, **item_values)
        log.info("intake: inbox item %s caught by the honeypot", item.id)
        return Outcome("spam", inbox_id=item.id, http_status=200)
    if token:
        original = db.session.scalar(sa.select(InboxItem).where(InboxItem.dedupe_key == f"form:{token}"))
        if original is not None and original.body != item_values["body"]:
            # The same page sent again with other answers (the patient went back and corrected
            # the phone, say): a new submission, not a double click. Keyed by its answers too, so
            # a double click of the corrected page is still one.
            digest = hashlib.sha256(item_values["body"].encode("utf-8")).hexdigest()[:16]
            item_values["webhook_id"] = f"{token}.{digest}"
            original = db.session.scalar(
                sa.select(InboxItem).where(InboxItem.dedupe_key == f"form:{item_values['webhook_id']}")
            )
        if original is not None:
            return _store_duplicate(original, item_values, now)
    return _store_and_process(item_values, now)


def _store_duplicate(original: InboxItem, item_values: dict, now: datetime) -> Outcome:
    """A repeat of ``original`` (same webhook-id or form token): stored as ``duplicate`` with the
    original's lead. A webhook repeat whose body differs is still answered "duplicate" (the id is
    the sender's idempotency key, SPEC 5) but says so on the item, for an admin to look at."""
    note = None
    if original.body != item_values["body"]:
        key = "form token" if item_values["channel"] == InboxChannel.FORM else "webhook-id"
        note = (
            f"Same {key} as inbox item #{original.id} but a different body: answered as its duplicate"
            " and not processed. Compare the two; if this is another request, ask the sender to deliver it"
            " with a new webhook-id."
        )
        log.warning("intake: a repeat of inbox item %s has a different body", original.id)
    item = _store(status=InboxStatus.DUPLICATE, lead_id=original.lead_id, processed_at=now, error=note, **item_values)
    return Outcome("duplicate", inbox_id=item.id, lead_id=original.lead_id, http_status=200)


# --------------------------------------------------------------------------- the hot path
# Every delivery runs this. At a burst, SQLAlchemy's per-statement work (building statements,
# the ORM unit of work, the execution context) cost more than the database, so fresh deliveries
# use statements compiled once and run on the DBAPI cursor (crm/prepared.py) and plain rows
# instead of ORM objects.

_sources = WebhookSource.__table__
_secrets = WebhookSecret.__table__
_items = InboxItem.__table__
_SOURCE_WITH_SECRETS = (
    sa.select(
        _sources.c.id,
        _sources.c.name,
        _sources.c.active,
        _sources.c.field_mapping,
        _sources.c.last_received_at,
        _secrets.c.id.label("secret_id"),
        _secrets.c.secret,
        _secrets.c.created_at.label("secret_created_at"),
        _secrets.c.expires_at.label("secret_expires_at"),
    )
    .select_from(_sources.outerjoin(_secrets, _secrets.c.source_id == _sources.c.id))
    .where(_sources.c.slug == sa.bindparam("slug"))
)
_TOUCH_SOURCE = Prepared(
    sa.update(_sources).where(_sources.c.id == sa.bindparam("source_id")).values(last_received_at=sa.bindparam("at"))
)
_INSERT_ITEM = Prepared.insert(_items)
_INSERT_PATIENT = Prepared.insert(Patient.__table__)
_INSERT_LEAD = Prepared.insert(Lead.__table__)
_INSERT_EVENT = Prepared.insert(LeadEvent.__table__, returning=None)


@dataclass(frozen=True)
class SecretRow:
    id: int
    secret: str
    created_at: datetime
    expires_at: datetime | None


@dataclass
class SourceRow:
    """What intake needs of a webhook source (``sources.active_secrets`` reads ``secrets``)."""

    id: int
    name: str
    slug: str
    active: bool
    field_mapping: dict
    last_received_at: datetime | None
    secrets: list[SecretRow]


SOURCES_TTL = 5.0  # seconds another worker may take to see a source or secret change made elsewhere
_source_cache: dict[str, tuple[float, SourceRow]] = {}


def forget_sources(*_args) -> None:
    _source_cache.clear()


# A change in this process is seen at once; other workers re-read within SOURCES_TTL.
for _model in (WebhookSource, WebhookSecret):
    for _event in ("after_insert", "after_update", "after_delete"):
        sa.event.listen(_model, _event, _forget_on_commit("intake_forget_sources", forget_sources))


def load_source(slug: str) -> SourceRow | None:
    """The source and its secrets, cached per process for a few seconds (unknown slugs are not)."""
    now = time.monotonic()
    hit = _source_cache.get(slug)
    if hit is not None and now - hit[0] <= SOURCES_TTL:
        return hit[1]
    rows = db.session.execute(_SOURCE_WITH_SECRETS, {"slug": slug}).all()
    if not rows:
        return None
    first = rows[0]
    secrets = [SecretRow(r.secret_id, r.secret, r.secret_created_at, r.secret_expires_at) for r in rows if r.secret_id]
    source = SourceRow(
        first.id, first.name, slug, first.active, first.field_mapping or {}, first.last_received_at, secrets
    )
    _source_cache[slug] = (now, source)
    return source


@dataclass
class FreshItem:
    """A delivery being stored now: the InboxItem attributes processing reads and sets, written
    with one INSERT once its outcome is known (in the transaction that writes its lead)."""

    channel: InboxChannel
    source_slug: str
    received_at: datetime
    headers: dict
    content_type: str
    body: str
    source_id: int | None = None
    source: SourceRow | None = None
    webhook_id: str | None = None
    remote_ip: str | None = None
    id: int | None = None
    status: InboxStatus = InboxStatus.RECEIVED
    error: str | None = None
    attempts: int = 1
    next_attempt_at: datetime | None = None
    processed_at: datetime | None = None
    lead_id: int | None = None
    dedupe_key: str | None = None

    COLUMNS = (
        "channel", "source_id", "source_slug", "webhook_id", "received_at", "remote_ip",
        "headers", "content_type", "body", "status", "attempts",
        "error", "processed_at", "next_attempt_at", "lead_id", "dedupe_key",
    )  # fmt: skip

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.COLUMNS}

    def insert(self) -> None:
        self.id = _INSERT_ITEM.scalar(db.session.connection(), self.values())


def _begin_write() -> None:
    """Start the transaction holding the database's write lock on SQLite (``BEGIN IMMEDIATE``,
    retried every 50 µs at first, then waiting up to the busy timeout: crm/sqlite_lock.py), so
    the patient look-up that follows sees every committed patient and no other writer can slip
    in before our INSERTs. PostgreSQL serialises the same contact with an advisory lock instead
    (``dedupe.lock_contact``)."""
    connection = db.session.connection()
    if connection.dialect.name != "sqlite":
        return
    dbapi_connection = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction and not try_begin_immediate(dbapi_connection):
        _BEGIN_IMMEDIATE.execute(connection, {})  # a timeout raises SQLAlchemy's OperationalError


_BEGIN_IMMEDIATE = Prepared(sa.text("BEGIN IMMEDIATE"))


# What _apply writes for a new patient and a new lead (the one-statement path lists exactly these).
_NEW_PATIENT_COLUMNS = (
    "first_name", "last_name", "email", "phone", "street", "city", "state", "zip",
    "geocode_status", "geocode_next_at", "created_at", "updated_at",
    "preferred_contact_method", "preferred_contact_time", "consent_text", "consent_at", "consent_ip", "language",
)  # fmt: skip
_NEW_LEAD_COLUMNS = (
    "patient_id", "condition_id", "condition_text", "message", "preferred_mode", "source_kind",
    "webhook_source_id", "landing_page_url", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "status", "version", "created_at", "updated_at", "sla_due_at",
)  # fmt: skip


def _new_patient_in_one_statement() -> Prepared:
    """PostgreSQL: a new patient, their lead, the inbox item and the lead's ``created`` event in
    ONE statement (data-modifying CTEs), where the other path needs four INSERTs and round trips.
    Parameters are the columns prefixed ``patient_``, ``lead_`` and ``item_`` (the keys linking
    the rows are filled in by the statement), ``event_data`` (to which ``inbox_id`` is added),
    ``event_kind`` and ``event_created_at``; it returns ``(lead id, item id)``."""
    from sqlalchemy.dialects.postgresql import JSONB

    patients, leads, events = Patient.__table__, Lead.__table__, LeadEvent.__table__
    # Only the columns _apply fills (the rest are NULL or their defaults): a statement over
    # 4,096 characters would be parsed by psycopg on every call instead of once.
    patient_binds, patient_defaults = insert_parameters(patients, "patient_", _NEW_PATIENT_COLUMNS)
    lead_binds, lead_defaults = insert_parameters(leads, "lead_", _NEW_LEAD_COLUMNS)
    item_binds, item_defaults = insert_parameters(_items, "item_", FreshItem.COLUMNS)
    del lead_binds["patient_id"], item_binds["lead_id"]
    new_patient = sa.insert(patients).values(patient_binds).returning(patients.c.id).cte("new_patient")
    new_lead = (
        sa.insert(leads)
        .from_select(["patient_id", *lead_binds], sa.select(new_patient.c.id, *lead_binds.values()))
        .returning(leads.c.id)
        .cte("new_lead")
    )
    new_item = (
        sa.insert(_items)
        .from_select([*item_binds, "lead_id"], sa.select(*item_binds.values(), new_lead.c.id))
        .returning(_items.c.id)
        .cte("new_item")
    )
    event_data = sa.cast(
        sa.cast(sa.bindparam("event_data", type_=sa.JSON), JSONB).op("||")(
            sa.func.jsonb_build_object("inbox_id", new_item.c.id)
        ),
        events.c.data.type,
    )
    new_event = (
        sa.insert(events)
        .from_select(
            ["lead_id", "kind", "data", "created_at"],
            sa.select(
                new_lead.c.id,
                sa.bindparam("event_kind", type_=events.c.kind.type),
                event_data,
                sa.bindparam("event_created_at", type_=events.c.created_at.type),
            ).select_from(new_lead.join(new_item, sa.true())),
        )
        .cte("new_event")
    )
    statement = sa.select(new_lead.c.id, new_item.c.id).add_cte(new_event)
    return Prepared(statement, {**patient_defaults, **lead_defaults, **item_defaults})


_NEW_PATIENT_IN_ONE_STATEMENT = _new_patient_in_one_statement()


# --------------------------------------------------------------------------- processing


def _dedupe_key(item: InboxItem) -> str | None:
    if not item.webhook_id:
        return None
    if item.channel == InboxChannel.FORM:
        return f"form:{item.webhook_id}"
    return f"webhook:{item.source_id}:{item.webhook_id}"


def _sla_due(created: datetime) -> datetime:
    return created + timedelta(minutes=int(current_app.config.get("SLA_MINUTES", 15)))


def _apply(item: InboxItem, clean: dict, now: datetime) -> tuple[str, int]:
    """Create (or fold into) the patient + lead for a validated submission; returns (result, lead id).

    New rows are written with plain INSERTs (this is the hot path of every delivery);
    a returning patient is updated through the ORM.
    """
    wish = _wish_of(item, clean, now)
    dedupe.lock_contact(clean["email"], clean["phone"])
    patient = dedupe.find_patient(clean["email"], clean["phone"])
    condition, condition_text, details = wish.condition, wish.condition_text, wish.details
    contact, consent = dict(wish.contact), wish.consent
    returning = patient is not None
    changes: dict[str, Any] = {}  # a returning patient's new details, for the event
    # Plain statements on the session's connection (same transaction): the ORM's per-statement
    # layer is measurable on this path and these rows need no objects.
    conn = db.session.connection()
    if patient is None:
        new_patient = _new_patient_row(clean, wish, now)
    else:
        patient_id = patient.id
        # What the patient sent that differs from the record is kept on the record's side (a
        # specialist may have corrected it) and written on the event, so nothing sent is unseen.
        sent = {**wish.address, "first_name": clean["first_name"], "last_name": clean["last_name"]}
        if kept := dedupe.differing(patient, sent):
            changes["details_sent"] = kept
        filled = dedupe.fill_missing(patient, wish.address)
        if {"zip", "street", "city", "state"} & set(filled):
            patient.geocode_status = GeocodeStatus.PENDING
            patient.geocode_next_at = now
        # A consent recorded with its wording (our form's text, or a sender's consent_text) is
        # evidence: a later delivery that only implies consent does not replace it.
        wording_known = item.channel == InboxChannel.FORM or bool(clean["consent_text"])
        if patient.consent_at is None or wording_known:
            contact.update(consent)
        if item.channel == InboxChannel.FORM:
            # The form starts on these answers, so one sent unchanged says nothing new: it must
            # not replace what the patient or a specialist put on file before (Spanish, say).
            for name, default in FORM_CONTACT_DEFAULTS.items():
                if contact.get(name) == default:
                    del contact[name]
        if updated := _details_updated(patient, contact, {name: wish.address[name] for name in filled}):
            changes["details_updated"] = updated
        for name, value in contact.items():
            setattr(patient, name, value)
        # The 24 hours count from when this request arrived: a re-send retried or replayed a day later
        # is still the re-send it was (SPEC 2.2), not a new request.
        asked = _asked_at(item, now)
        target = dedupe.open_resubmission_target(patient, condition.id if condition else None, condition_text, asked)
        if target is not None:
            _settle(item, "resubmitted", target.id, now)
            data = _source_info(item)
            if clean["message"] and clean["message"] != target.message:
                data["message"] = clean["message"]
            if details and details not in (target.condition_text or ""):
                data["condition_details"] = details  # new words about the same listed condition
            if clean["preferred_mode"] and clean["preferred_mode"] != target.preferred_mode:
                data["preferred_mode"] = str(clean["preferred_mode"])
            if wish.phone_extension:
                data["phone_extension"] = wish.phone_extension
            data.update(changes)
            # Not the specialist's activity (``last_activity_at``): a patient writing again because
            # nobody called is the sign of a neglected lead, which must still return to the pool.
            add_event(target, EventKind.RESUBMITTED, data, at=now)
            return "resubmitted", target.id

    new_lead = _new_lead_row(item, clean, wish, now)
    event, event_data = _created_event(wish, returning, now)
    if returning:
        event_data.update(changes)
    if patient is None and isinstance(item, FreshItem) and conn.dialect.name == "postgresql":
        return "accepted", _create_in_one_statement(conn, item, new_patient, new_lead, event, event_data, now)
    if patient is None:
        patient_id = _INSERT_PATIENT.scalar(conn, new_patient)
    lead_id = _INSERT_LEAD.scalar(conn, {"patient_id": patient_id, **new_lead})
    _settle(item, "accepted", lead_id, now)
    _INSERT_EVENT.execute(conn, {"lead_id": lead_id, **event, "data": {**_source_info(item), **event_data}})
    return "accepted", lead_id


def _details_updated(patient: Patient, contact: dict, filled: dict) -> dict[str, list]:
    """What a submission changes on a returning patient's record, {field: [on file before, now]}:
    contact preferences about to be set that differ, and the empty fields ``filled`` in."""
    updated = {
        name: [str(getattr(patient, name) or "") or None, str(value)]
        for name, value in contact.items()
        if name in FORM_CONTACT_DEFAULTS and getattr(patient, name) != value
    }
    updated.update({name: [None, str(value)] for name, value in filled.items()})
    return updated


@dataclass
class _Wish:
    """What a validated submission asks for, as the rows it writes need it."""

    condition: Any  # the matched condition's row, or None
    condition_text: str
    details: str  # the patient's own words beside a listed condition
    address: dict[str, Any]
    contact: dict[str, Any]
    consent: dict[str, Any]
    phone_extension: str | None = None  # not part of the patient's E.164 phone: kept on the event


def _wish_of(item: InboxItem | FreshItem, clean: dict, now: datetime) -> _Wish:
    condition = resolve_condition(clean["condition"])
    # The patient's own words beside a listed condition become the lead's condition text. When
    # the condition matched nothing, the text is what was sent and the words together ("Other —
    # fibromyalgia"): the 24-hour fold compares that text, so the same words fold and other
    # words (another condition) do not.
    details = clean.get("condition_details") or ""
    if condition is not None:
        condition_text = (details or clean["condition"])[:200]
    else:
        condition_text = " — ".join(t for t in (clean["condition"], details) if t)[:200]
    address = {k: clean[k] for k in ("email", "phone", "street", "city", "state", "zip") if clean.get(k)}
    if item.channel == InboxChannel.FORM:
        consent_text = clean["consent_text"] or None
    else:
        source_name = item.source.name if item.source is not None else item.source_slug
        consent_text = clean["consent_text"] or WEBHOOK_CONSENT.format(source=source_name)
    contact: dict[str, Any] = {}
    if clean["preferred_contact_method"]:
        contact["preferred_contact_method"] = clean["preferred_contact_method"]
    if clean["preferred_contact_time"]:
        contact["preferred_contact_time"] = clean["preferred_contact_time"]
    if clean.get("language"):  # routing prefers a specialist who speaks it
        contact["language"] = clean["language"]
    consent: dict[str, Any] = {}
    if clean["consent"] is not False:
        consent = {"consent_text": consent_text, "consent_at": item.received_at or now, "consent_ip": item.remote_ip}
    return _Wish(condition, condition_text, details, address, contact, consent, clean.get("phone_extension"))


def _new_patient_row(clean: dict, wish: _Wish, now: datetime) -> dict[str, Any]:
    return {
        "first_name": clean["first_name"],
        "last_name": clean["last_name"],
        "geocode_status": GeocodeStatus.PENDING,
        "geocode_next_at": now,
        "created_at": now,
        "updated_at": now,
        "preferred_contact_method": ContactMethod.PHONE,
        "language": "en",
        **wish.contact,
        **wish.consent,
        **wish.address,
    }


def _asked_at(item: InboxItem | FreshItem, now: datetime) -> datetime:
    """When the patient asked: the request's arrival. A lead made by a retry or a replay after an
    outage is as old as the request, so its speed-to-lead clock, its place in the queue, its report
    day and the re-send window count from then, not from when processing finally succeeded."""
    return min(item.received_at or now, now)


def _new_lead_row(item: InboxItem | FreshItem, clean: dict, wish: _Wish, now: datetime) -> dict[str, Any]:
    asked = _asked_at(item, now)
    return {
        "condition_id": wish.condition.id if wish.condition else None,
        "condition_text": wish.condition_text,
        "message": clean["message"],
        "preferred_mode": clean["preferred_mode"] or PreferredMode.EITHER,
        "source_kind": LeadSourceKind.FORM if item.channel == InboxChannel.FORM else LeadSourceKind.WEBHOOK,
        "webhook_source_id": item.source_id,
        "landing_page_url": clean["landing_page_url"],
        "utm_source": clean["utm_source"],
        "utm_medium": clean["utm_medium"],
        "utm_campaign": clean["utm_campaign"],
        "utm_term": clean["utm_term"],
        "utm_content": clean["utm_content"],
        "status": LeadStatus.NEW,
        "version": 1,
        "created_at": asked,
        "updated_at": now,
        "sla_due_at": _sla_due(asked),
    }


def _created_event(wish: _Wish, returning: bool, now: datetime) -> tuple[dict, dict]:
    event = {"kind": EventKind.CREATED, "created_at": now}
    data = {"returning_patient": returning, "condition": wish.condition.slug if wish.condition else None}
    if wish.phone_extension:
        data["phone_extension"] = wish.phone_extension
    return event, data


def _create_in_one_statement(
    conn: sa.Connection, item: FreshItem, patient: dict, lead: dict, event: dict, event_data: dict, now: datetime
) -> int:
    """PostgreSQL: the new patient, lead, fresh item and ``created`` event in one round trip
    (``_NEW_PATIENT_IN_ONE_STATEMENT``); returns the lead id."""
    _settle(item, "accepted", None, now, write=False)  # the statement writes the item
    values = _one_statement_values(item, patient, lead, event, event_data)
    ((item.lead_id, item.id),) = _NEW_PATIENT_IN_ONE_STATEMENT.rows(conn, values)
    return item.lead_id


def _one_statement_values(item: FreshItem, patient: dict, lead: dict, event: dict, event_data: dict) -> dict:
    values = {f"patient_{k}": v for k, v in patient.items()}
    values.update({f"lead_{k}": v for k, v in lead.items()})
    values.update({f"item_{k}": v for k, v in item.values().items() if k != "lead_id"})
    values.update({f"event_{k}": v for k, v in event.items()}, event_data={**_source_info(item), **event_data})
    return values


# The one statement above, after the contact's advisory lock and the look-up for a patient with
# the same email or phone (dedupe.lock_contact and dedupe.find_patient, written out again here),
# in one function: a new patient's delivery is then one round trip. Two EXISTS, not one with OR:
# the function keeps its plans for the connection's life, and for "email = $1 OR phone = $2" on a
# table not yet analyzed (a new install, a fresh benchmark) that plan is a sequential scan, a
# little slower with every patient (1.6 ms a call at 20,000); each single-column EXISTS is an
# index probe whatever the statistics say.
KNOWN_CONTACT = (
    "EXISTS (SELECT FROM patients WHERE email = {email}) OR EXISTS (SELECT FROM patients WHERE phone = {phone})"
)
_NEW_PATIENT_IN_ONE_CALL = TempFunction(
    "crm_intake_new_patient",
    _NEW_PATIENT_IN_ONE_STATEMENT,
    returns="new_lead_id integer, new_item_id integer",
    extra={"lock_a": "text", "lock_b": "text", "email": "text", "phone": "text"},
    preamble=f"""
IF {{lock_a}} IS NOT NULL THEN PERFORM pg_advisory_xact_lock({dedupe.CONTACT_LOCK_CLASS}, hashtext({{lock_a}})); END IF;
IF {{lock_b}} IS NOT NULL THEN PERFORM pg_advisory_xact_lock({dedupe.CONTACT_LOCK_CLASS}, hashtext({{lock_b}})); END IF;
IF {KNOWN_CONTACT} THEN RETURN; END IF;""",
)


def _create_new_patient_in_one_call(item: FreshItem, clean: dict, now: datetime) -> int | None:
    """PostgreSQL, a fresh delivery: lock the contact, look for the patient and, when there is
    none, write patient, lead, item and event, all in one call and one implicit transaction
    (autocommit, on the ``intake`` engine: no ping). Returns the lead id, or None when the
    contact belongs to a patient we know (nothing written: the caller takes the ordinary path).

    An IntegrityError (the item's dedupe key is taken) is raised as the ordinary path would.
    Any other failure is logged and answered with None too, so the ordinary path, on a pinged
    connection, stores the delivery or records it as failed; if a lost connection hid a
    commit, that path finds the patient and the item's dedupe key already written."""
    wish = _wish_of(item, clean, now)
    event, event_data = _created_event(wish, False, now)
    settled = dataclasses.replace(item)
    _settle(settled, "accepted", None, now, write=False)  # the call writes the item
    values = _one_statement_values(
        settled, _new_patient_row(clean, wish, now), _new_lead_row(item, clean, wish, now), event, event_data
    )
    lock_a, lock_b = (dedupe.contact_lock_keys(clean["email"], clean["phone"]) + [None, None])[:2]
    values.update(lock_a=lock_a, lock_b=lock_b, email=clean["email"] or None, phone=clean["phone"] or None)
    try:
        with db.engines[INTAKE_BIND].connect() as conn:  # autocommit (crm._add_intake_engine)
            if _touch_due(item.source, now):  # true whatever becomes of the delivery
                _TOUCH_SOURCE.execute(conn, {"source_id": item.source.id, "at": now})
                item.source.last_received_at = now  # the cached row too
            rows = _NEW_PATIENT_IN_ONE_CALL.rows(conn, values)
    except IntegrityError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        state = getattr(getattr(exc, "orig", None), "sqlstate", None)  # a code: no values in it
        log.warning("intake: the one-call path failed (%s %s); taking the ordinary path", type(exc).__name__, state)
        if getattr(exc, "connection_invalidated", False):
            # Lost: after a database restart the pool's other connections are gone too, and
            # without a ping each would cost a delivery its one call. Start a fresh pool.
            db.engines[INTAKE_BIND].dispose()
        return None
    if not rows:
        return None
    ((lead_id, item_id),) = rows
    _settle(item, "accepted", lead_id, now, write=False)
    item.id = item_id
    return lead_id


def _source_info(item: InboxItem | FreshItem) -> dict:
    return {"channel": str(item.channel), "inbox_id": item.id, "source": item.source_slug}


def _settle(item: InboxItem | FreshItem, result: str, lead_id: int | None, now: datetime, write: bool = True) -> None:
    """Record the item's outcome. The item claims its dedupe key here, in the transaction that
    writes the lead: a concurrent twin waits on (PostgreSQL) or fails against (SQLite) the
    unique index and rolls back. A fresh item is written now (its id goes into the lead's
    event) unless the caller writes it; a stored one is updated when the session flushes."""
    item.dedupe_key = _dedupe_key(item)
    item.status = InboxStatus.RESUBMITTED if result == "resubmitted" else InboxStatus.ACCEPTED
    item.lead_id = lead_id
    item.error = None
    item.next_attempt_at = None
    item.processed_at = now
    if isinstance(item, FreshItem) and write:
        item.insert()


def _backoff(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_MAX)


def _mark_failed(item_id: int, exc: BaseException, now: datetime) -> InboxItem | None:
    db.session.rollback()
    item = db.session.get(InboxItem, item_id)
    if item is None:
        return None
    item.status = InboxStatus.FAILED
    item.error = error_text(exc)
    item.attempts = (item.attempts or 0) + 1
    item.next_attempt_at = now + _backoff(item.attempts)
    item.dedupe_key = None
    db.session.commit()
    log.warning("intake: inbox item %s failed (%s), retry at %s", item.id, type(exc).__name__, item.next_attempt_at)
    return item


def _process_in_transaction(item: InboxItem | FreshItem, now: datetime) -> Outcome:
    """Parse, validate and apply ``item`` inside the current transaction; the caller commits (a
    stored item's outcome is written by the commit's flush; a FreshItem writes itself in ``_settle``).

    Raises when processing fails (the caller records the item ``failed``); an IntegrityError
    means the dedupe key is taken (a duplicate) unless no other item holds it."""
    clean, rejected = _check(item, now)
    return rejected or _accept(item, clean, now)


def _check(item: InboxItem | FreshItem, now: datetime) -> tuple[dict | None, Outcome | None]:
    """Parse and validate ``item`` (no writes): its clean fields, or the rejection it was given."""
    try:
        raw = raw_fields(item)
    except PayloadError as exc:
        item.status, item.error, item.processed_at = InboxStatus.REJECTED, f"[400] {exc}", now
        item.next_attempt_at = None
        return None, Outcome("rejected", http_status=400, error=str(exc))
    except MappingError as exc:
        raise RuntimeError(f"field mapping of source {item.source_slug!r} is unusable: {exc}") from exc
    clean, errors = validate_fields(
        raw,
        require_consent=item.channel == InboxChannel.FORM or _maps_consent(item),
        require_email_and_phone=item.channel == InboxChannel.FORM,
    )
    if errors:
        item.status, item.processed_at = InboxStatus.REJECTED, now
        item.error = "[422] validation failed: " + json.dumps(errors, sort_keys=True)
        item.next_attempt_at = None
        read_from = None
        if item.channel == InboxChannel.WEBHOOK:
            # The messages speak to a patient ("Enter your first name."); the sender's developer
            # needs to know which part of their body was read, i.e. which mapping path to check.
            mapping = (item.source.field_mapping if item.source is not None else None) or {}
            read_from = {name: mapping.get(name, name) for name in errors if name in FIELDS}
            item.error += "; read from: " + json.dumps(read_from, sort_keys=True)
        return None, Outcome("rejected", http_status=422, fields=errors, read_from=read_from or None)
    return clean, None


def _maps_consent(item: InboxItem | FreshItem) -> bool:
    """The source's mapping names a consent field: the sending form asks for consent, so a
    delivery without a yes (an unticked checkbox is simply left out of the body) has none."""
    source = item.source
    return source is not None and "consent" in (source.field_mapping or {})


def _accept(item: InboxItem | FreshItem, clean: dict, now: datetime) -> Outcome:
    """Write the patient + lead (or the fold) for a checked item and mark it accepted."""
    if isinstance(item, InboxItem):
        item.attempts = (item.attempts or 0) + 1
        db.session.flush()
    _begin_write()
    result, lead_id = _apply(item, clean, now)
    log.info("intake: inbox item %s -> lead %s (%s)", item.id, lead_id, result)
    return Outcome(result, lead_id=lead_id, http_status=202 if result == "accepted" else 200)


def _holder_of(key: str | None, item_id: int | None) -> InboxItem | None:
    """The other item that owns dedupe ``key`` (after an IntegrityError on it), if any."""
    original = db.session.scalar(sa.select(InboxItem).where(InboxItem.dedupe_key == key)) if key else None
    return None if original is None or original.id == item_id else original


def _store_and_process(item_values: dict, now: datetime, source: SourceRow | None = None) -> Outcome:
    """A fresh delivery: its raw item and the patient + lead it makes commit in ONE transaction.

    If processing fails, that transaction is rolled back and the raw item is committed alone as
    ``failed`` (retried by the scheduler, replayable by an admin) before we answer; if even that
    cannot be written the route answers 503 and the sender retries. So an answered delivery is
    always stored, and a burst costs one commit per delivery (docs/intake.md, "Performance")."""
    item = FreshItem(source=source, **item_values)
    key = _dedupe_key(item)
    try:
        # Parsing and validation need no database: done before the first write, so the write
        # transaction (SQLite's single writer lock, PostgreSQL's row and advisory locks) is short.
        clean, rejected = _check(item, now)
        if rejected is None and _one_call_allowed():
            lead_id = _create_new_patient_in_one_call(item, clean, now)
            if lead_id is not None:
                log.info("intake: inbox item %s -> lead %s (accepted)", item.id, lead_id)
                return Outcome("accepted", inbox_id=item.id, lead_id=lead_id, http_status=202)
        with _keep_loaded():
            _begin_write()
            if _touch_due(source, now):
                _TOUCH_SOURCE.execute(db.session.connection(), {"source_id": source.id, "at": now})
                source.last_received_at = now  # the cached row too
            if rejected is None:
                outcome = _accept(item, clean, now)
            else:
                # The sender's idempotency key names a request we already took: answered "duplicate"
                # whatever this body is (SPEC 5), not refused as though it were a new request.
                original = _holder_of(key, None)
                if original is not None:
                    db.session.rollback()
                    return _store_duplicate(original, item_values, now)
                item.insert()
                outcome = rejected
            db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        original = _holder_of(key, None)
        if original is None:
            failed = _store_failed(item_values, exc, now)
            return Outcome("failed", inbox_id=failed.id, http_status=202, error=failed.error)
        return _store_duplicate(original, item_values, now)
    except Exception as exc:  # noqa: BLE001 - the raw item is kept as failed, to be retried
        log.exception("intake: processing a new %s delivery failed", item_values.get("channel"))
        db.session.rollback()
        failed = _store_failed(item_values, exc, now)
        return Outcome("failed", inbox_id=failed.id, http_status=202, error=failed.error)
    outcome.inbox_id = item.id
    return outcome


def _touch_due(source: SourceRow | None, now: datetime) -> bool:
    """A source's "last received" is written at most once a minute, so busy sources do not
    contend on their row."""
    return source is not None and (
        source.last_received_at is None or now - source.last_received_at >= timedelta(minutes=1)
    )


def _one_call_allowed() -> bool:
    """PostgreSQL with INTAKE_ONE_CALL on (crm._add_intake_engine made its engine)."""
    return INTAKE_BIND in db.engines


def _store_failed(item_values: dict, exc: BaseException, now: datetime) -> InboxItem:
    item = _store(
        status=InboxStatus.FAILED,
        error=error_text(exc),
        attempts=1,
        next_attempt_at=now + _backoff(1),
        **item_values,
    )
    log.warning("intake: inbox item %s failed (%s), retry at %s", item.id, type(exc).__name__, item.next_attempt_at)
    return item


def process(item_id: int, *, now: datetime | None = None) -> Outcome:
    """Reprocess a stored item (retry job, admin replay) into a lead, a rejection, a duplicate or
    a fold. Commits; never raises."""
    now = now or utcnow()
    item = db.session.get(InboxItem, item_id)
    key = _dedupe_key(item)
    try:
        outcome = _process_in_transaction(item, now)
        original = _holder_of(key, item_id) if outcome.status == "rejected" else None
        if original is None:
            db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        original = _holder_of(key, item_id)
        if original is None:
            failed = _mark_failed(item_id, exc, now)
            return Outcome("failed", inbox_id=item_id, lead_id=None, http_status=202, error=failed and failed.error)
        return _mark_duplicate(item_id, original, now)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the raw item failed, to be retried
        log.exception("intake: processing inbox item %s failed", item_id)
        failed = _mark_failed(item_id, exc, now)
        return Outcome("failed", inbox_id=item_id, http_status=202, error=failed.error if failed else error_text(exc))
    if original is not None:  # refused again, but its webhook-id made a lead meanwhile (a corrected resend)
        db.session.rollback()
        return _mark_duplicate(item_id, original, now)
    outcome.inbox_id = item_id
    if outcome.status == "accepted" and outcome.lead_id is not None:
        _settle_late_test_delivery(item_id, outcome.lead_id)
    return outcome


def _mark_duplicate(item_id: int, original: InboxItem, now: datetime) -> Outcome:
    item = db.session.get(InboxItem, item_id)
    item.status, item.lead_id, item.processed_at = InboxStatus.DUPLICATE, original.lead_id, now
    item.error, item.next_attempt_at, item.dedupe_key = None, None, None
    db.session.commit()
    return Outcome("duplicate", inbox_id=item_id, lead_id=original.lead_id, http_status=200)


def _settle_late_test_delivery(item_id: int, lead_id: int) -> None:
    """An admin's test delivery that failed at first and made its lead here (retry, replay) is
    flagged and closed as the admin page does at once: never in a report or a specialist's queue."""
    from crm.services import sources

    item = db.session.get(InboxItem, item_id)
    close = sources.test_delivery_choice(item.source_id, item.webhook_id) if item is not None else None
    if close is None:
        return
    try:
        sources.mark_test_lead(lead_id)
        if close:
            sources.close_test_lead(lead_id, actor=None)
        db.session.commit()
    except Exception:  # noqa: BLE001 - the lead is stored; the admin can close it by hand
        db.session.rollback()
        log.exception("intake: could not flag the test delivery's lead %s", lead_id)


# --------------------------------------------------------------------------- retries and replay

REPLAYABLE = (InboxStatus.FAILED, InboxStatus.RECEIVED, InboxStatus.SPAM, InboxStatus.DISMISSED)
# Rejections that a fix on our side (mapping, condition list) can turn into a lead.
REPLAYABLE_REJECTIONS = ("[422]",)


def _refused_for_content(item: InboxItem) -> bool:
    return item.status == InboxStatus.REJECTED and (item.error or "").startswith(REPLAYABLE_REJECTIONS)


# Why an admin sets an item aside, as the dismiss form offers them.
DISMISS_REASONS = {
    "entered_by_hand": "Entered by hand as a lead",
    "not_a_request": "Not a patient request (test, junk)",
    "sender_resent": "The sender delivered it again",
    "other": "Other",
}


def _dedupe_key_sql(item: type[InboxItem]) -> sa.ColumnElement[str]:
    """``_dedupe_key`` of each row, in SQL (NULL without a webhook-id or form token)."""
    return sa.case(
        (item.channel == InboxChannel.FORM.value, sa.literal("form:") + item.webhook_id),
        else_=sa.literal("webhook:") + sa.cast(item.source_id, sa.String) + sa.literal(":") + item.webhook_id,
    )


def needs_attention() -> sa.ColumnElement[bool]:
    """Items that became no lead but could: processing failed, or the content was refused (422)
    and a fix on our side (mapping, condition list) and a replay would rescue the patient's
    request. Refusals by signature, source or size are not here: nothing on our side fixes them;
    nor is a refusal whose webhook-id a later delivery (the sender's corrected resend) made a lead with."""
    holder = aliased(InboxItem)
    superseded = sa.exists().where(holder.dedupe_key == _dedupe_key_sql(InboxItem))
    return sa.or_(
        InboxItem.status == InboxStatus.FAILED,
        sa.and_(
            InboxItem.status == InboxStatus.REJECTED,
            sa.or_(*(InboxItem.error.startswith(prefix, autoescape=True) for prefix in REPLAYABLE_REJECTIONS)),
            sa.not_(superseded),
        ),
    )


def is_attention(item: InboxItem) -> bool:
    """``needs_attention`` for one loaded item."""
    return item.status == InboxStatus.FAILED or (_refused_for_content(item) and superseded_by(item) is None)


def superseded_by(item: InboxItem) -> InboxItem | None:
    """For a refused item: the later item with the same webhook-id (or form token) that made a lead."""
    return _holder_of(_dedupe_key(item), item.id)


def dismiss(item: InboxItem, actor: User, reason: str, note: str = "") -> None:
    """An admin sets a failed or content-refused item aside (the patient was entered by hand, or it
    was no request at all): it leaves "Needs attention" and the retry job. Audited, with the reason;
    a replay can still take it up. Raises ValueError for an item that needs no attention."""
    if reason not in DISMISS_REASONS:
        raise ValueError("Choose why this item is set aside.")
    if not is_attention(item):
        raise ValueError("Only a failed item or one refused for its content can be set aside.")
    before = item.status
    # Conditional, as a claim is: the retry job or another admin's replay may have taken it meanwhile.
    stmt = (
        sa.update(InboxItem)
        .where(InboxItem.id == item.id, InboxItem.status == before)
        .values(status=InboxStatus.DISMISSED, next_attempt_at=None)
    )
    if db.session.execute(stmt.execution_options(synchronize_session=False)).rowcount != 1:
        raise ValueError("This item changed meanwhile (a replay or the retry job took it); look at it again.")
    db.session.expire(item)
    detail = {"before": str(before), "reason": reason}
    if note.strip():
        detail["note"] = note.strip()[:500]
    audit.record("dismiss_inbox_item", "inbox_item", item.id, user=actor, detail=detail)
    db.session.flush()


def can_replay(item: InboxItem) -> bool:
    """Failed or stuck items, forms caught by the honeypot (a real patient's autofill), and items
    refused for their content (a mapping fix may rescue them)."""
    return item.status in REPLAYABLE or _refused_for_content(item)


def _claim(item_id: int, seen: InboxStatus, now: datetime, *, due: bool = False) -> bool:
    """Take ``item_id`` for processing with a conditional UPDATE: it must still have the status
    the caller saw and, for the retry job (``due``), a retry time that has come; an admin may
    replay a failed item early, but not a ``received`` one under a live lease (being processed).
    It becomes ``received`` with a lease of CLAIM_LEASE, which processing ends (every outcome
    clears ``next_attempt_at`` or sets the next retry). Of two admins pressing Replay at once,
    or a replay and the retry job, exactly one UPDATE matches the row. Commits."""
    stmt = sa.update(InboxItem).where(InboxItem.id == item_id, InboxItem.status == seen)
    if due:
        stmt = stmt.where(InboxItem.next_attempt_at <= now)
    elif seen == InboxStatus.RECEIVED:
        stmt = stmt.where(sa.or_(InboxItem.next_attempt_at.is_(None), InboxItem.next_attempt_at <= now))
    stmt = stmt.values(status=InboxStatus.RECEIVED, next_attempt_at=now + CLAIM_LEASE)
    claimed = db.session.execute(stmt.execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return claimed == 1


def retry_failed_items(now: datetime, limit: int = 50) -> int:
    """Scheduler job: reprocess failed items that are due, and items whose processing stopped
    mid-way (a worker killed: still ``received`` after the lease); returns how many were tried."""
    due = db.session.execute(
        sa.select(InboxItem.id, InboxItem.status)
        .where(InboxItem.status.in_((InboxStatus.FAILED, InboxStatus.RECEIVED)), InboxItem.next_attempt_at <= now)
        .order_by(InboxItem.next_attempt_at)
        .limit(limit)
    ).all()
    db.session.rollback()
    tried = 0
    for item_id, status in due:
        # A second runner, or an admin's replay, that got there first leaves no row to claim.
        if not _claim(item_id, status, now, due=True):
            continue
        tried += 1
        process(item_id, now=now)  # a failure schedules the next try from the recorded attempts
    if tried:
        log.info("intake: retried %s failed inbox item(s)", tried)
    return tried


def replay(item: InboxItem, actor: User) -> InboxItem:
    """An admin reprocesses one item (failed, stuck or rejected for its content). Audited; commits."""
    if not can_replay(item):
        if item.status in (InboxStatus.ACCEPTED, InboxStatus.RESUBMITTED, InboxStatus.DUPLICATE):
            raise ValueError(
                f"This item was already processed (lead #{item.lead_id}); replaying it would not change anything."
            )
        raise ValueError(
            "This delivery was refused before processing (source, size or signature) and cannot be replayed."
        )
    item_id = item.id
    before = str(item.status)
    if not _claim(item_id, item.status, utcnow()):
        db.session.expire_all()
        item = db.session.get(InboxItem, item_id)
        if item.status in (InboxStatus.ACCEPTED, InboxStatus.RESUBMITTED, InboxStatus.DUPLICATE):
            raise ValueError(
                f"This item was processed meanwhile (lead #{item.lead_id}), by another admin's replay or the"
                " retry job; replaying it again would not change anything."
            )
        raise ValueError(
            "This item is being processed right now (another admin's replay or the retry job); look again in a minute."
        )
    outcome = process(item_id)
    item = db.session.get(InboxItem, item_id)
    audit.record(
        "replay_inbox_item",
        "inbox_item",
        item_id,
        user=actor,
        detail={"before": before, "after": str(item.status), "lead_id": item.lead_id, "result": outcome.status},
    )
    db.session.commit()
    return item
