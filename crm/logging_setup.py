"""Logging that never writes patient contact details (SPEC 12)."""

from __future__ import annotations

import logging
import re

EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# E.164, or US-style 3-3-4 groups; not dates (4-2-2) or IP addresses.
PHONE_RE = re.compile(r"(?<![\w.+])(\+\d{10,15}|\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4})(?![\w.])")


# Query strings in access logs (the dev server's, gunicorn's): a search box or a filter can hold
# a patient's name or a phone number in a form no pattern recognises ("Zelda+Quixote",
# "%2B13055550199"), so every value is masked except those of parameters known to hold none.
QUERY_VALUE_RE = re.compile(r"([?&])([^=&\s\"'#?]+)=([^&\s\"'#]+)")
SAFE_QUERY_KEYS = frozenset(
    {
        "page", "per_page", "view", "status", "sort", "order", "source", "channel", "show", "active",
        "state", "condition", "assignee", "mode", "range", "start", "end", "days", "tab", "kind",
        "action", "specialty", "radius", "utm_source", "utm_medium", "utm_campaign",
    }
)  # fmt: skip


def _mask_query_value(match: re.Match) -> str:
    sep, key, value = match.groups()
    return match.group(0) if key in SAFE_QUERY_KEYS else f"{sep}{key}=***"


def mask_email(value: str | None) -> str:
    if not value:
        return ""
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(value: str | None) -> str:
    if not value:
        return ""
    digits = re.sub(r"\D", "", value)
    return f"***{digits[-2:]}" if len(digits) >= 4 else "***"


def scrub(text: str) -> str:
    text = QUERY_VALUE_RE.sub(_mask_query_value, text)
    text = EMAIL_RE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return PHONE_RE.sub(lambda m: mask_phone(m.group(1)), text)


class PiiScrubFilter(logging.Filter):
    """Last line of defence: masks anything shaped like an email or phone number."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set: the traceback is scrubbed once, here.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


_base_factory = logging.getLogRecordFactory()


def _scrubbing_record_factory(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    PiiScrubFilter().filter(record)
    return record


def configure(app) -> None:
    # Scrub at record creation so every handler (files, stderr, test capture) sees masked text.
    if logging.getLogRecordFactory() is not _scrubbing_record_factory:
        logging.setLogRecordFactory(_scrubbing_record_factory)
    level = getattr(logging, str(app.config.get("LOG_LEVEL", "INFO")).upper(), logging.INFO)
    root = logging.getLogger()
    if not any(isinstance(f, PiiScrubFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(PiiScrubFilter())
        root.addHandler(handler)
    root.setLevel(level)
    for h in root.handlers:
        if not any(isinstance(f, PiiScrubFilter) for f in h.filters):
            h.addFilter(PiiScrubFilter())
    app.logger.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
