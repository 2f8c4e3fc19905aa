"""Logging that never writes patient contact details (SPEC 12)."""

from __future__ import annotations

import logging
import re

# The local part may hold an apostrophe (o'brien@...): without it in the class, "mary.o'" would be
# left in clear before the masked rest.
# It starts only where a run of such characters starts, and reads the run once (possessive): tried
# at every position of a long run with no "@", it took seconds on one long log line.
EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+'-])([A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]*+@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# E.164, or US-style 3-3-4 groups; not dates (4-2-2) or IP addresses.
PHONE_RE = re.compile(r"(?<![\w.+])(\+\d{10,15}|\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4})(?![\w.])")


# Query strings in access logs (the dev server's, gunicorn's): a search box or a filter can hold
# a patient's name or a phone number in a form no pattern recognises ("Zelda+Quixote",
# "%2B13055550199"), so every value is masked except those of parameters known to hold none.
# A value runs to the next "&", space or "#": an apostrophe or a quote is part of it (q=O'Brien,
# q=Ann"Smith, sent unencoded by some clients), not its end; a parameter without a name is masked too.
QUERY_VALUE_RE = re.compile(r"([?&])([^=&\s\"'#?]*)=([^&\s#]+)")
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


DETAIL_WITHHELD = "(detail withheld: it may hold patient data)"


def database_details(exc: BaseException | None) -> list[str]:
    """The DETAIL texts of PostgreSQL errors in ``exc`` and its causes: "Failing row contains
    (...)" and "Key (email)=(...)" quote the row's values, patient data included."""
    details: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        detail = getattr(getattr(getattr(exc, "orig", exc), "diag", None), "message_detail", None)
        if detail:
            details.append(detail)
        exc = exc.__cause__ or exc.__context__
    return details


def withhold_details(text: str, exc: BaseException | None) -> str:
    for detail in database_details(exc):
        text = text.replace(detail, DETAIL_WITHHELD)
    return text


def error_text(exc: BaseException, limit: int = 1000) -> str:
    """An exception as stored for admins to read (e.g. a failed inbox item): its class and
    message, without a database error's quoted values."""
    return f"{type(exc).__name__}: {withhold_details(str(exc), exc)[:limit]}"


class PiiScrubFilter(logging.Filter):
    """Last line of defence: masks anything shaped like an email or phone number."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        cleaned = scrub(withhold_details(message, exc))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set: the traceback is scrubbed once, here.
            record.exc_text = scrub(withhold_details(logging.Formatter().formatException(record.exc_info), exc))
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
    # APScheduler says "Running job" and "executed successfully" for every run (enrich_new: every
    # 5 s). run_job logs each run that did something, and every failure, itself; misfires
    # ("was missed by") are warnings and still show.
    logging.getLogger("apscheduler.executors").setLevel(max(level, logging.WARNING))
    # "Adding job tentatively" and "Added job" for each job at start: the scheduler's own list of the
    # jobs (crm/cli/scheduler.py) already says it once.
    logging.getLogger("apscheduler.scheduler").setLevel(max(level, logging.WARNING))
