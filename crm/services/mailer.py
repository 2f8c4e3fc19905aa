"""The mail outbox: every email is written to ``outbox_emails`` first, then sent by a job.

With ``MAIL_SERVER`` set, the ``outbox`` job sends through Flask-Mail (SMTP);
without it, a message is marked ``stored`` and one masked log line says so. A
failed send is retried (``MAIL_MAX_ATTEMPTS``, default 5) before it is ``failed``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import current_app

from crm.extensions import db, mail
from crm.logging_setup import mask_email
from crm.models import Lead, OutboxEmail, User
from crm.models.enums import OutboxStatus

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


def queue_email(
    to_addr: str,
    subject: str,
    body_text: str,
    *,
    kind: str,
    lead: Lead | None = None,
    user: User | None = None,
    ics: str | None = None,
) -> OutboxEmail:
    """Write one email to the outbox (flushes; the caller commits)."""
    if not to_addr or "@" not in to_addr:
        raise ValueError("an email address is needed")
    row = OutboxEmail(
        kind=kind[:40],
        to_addr=to_addr.strip()[:254],
        subject=subject[:200],
        body_text=body_text,
        ics=ics,
        status=OutboxStatus.QUEUED,
        lead_id=lead.id if lead is not None else None,
        user_id=user.id if user is not None else None,
        created_at=datetime.now(UTC),
    )
    db.session.add(row)
    db.session.flush()
    return row


def _claim(row_id: int, seen_attempts: int) -> bool:
    """Conditional UPDATE: only one runner bumps ``attempts`` from the value it read."""
    result = db.session.execute(
        sa.update(OutboxEmail)
        .where(
            OutboxEmail.id == row_id,
            OutboxEmail.status == OutboxStatus.QUEUED,
            OutboxEmail.attempts == seen_attempts,
        )
        .values(attempts=seen_attempts + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def ics_method(ics: str) -> str:
    """The iTIP method of a calendar part (PUBLISH, CANCEL), which its Content-Type must repeat."""
    found = re.search(r"^METHOD:([A-Z-]+)\r?$", ics, re.MULTILINE)
    return found.group(1) if found else "PUBLISH"


def _smtp_send(row: OutboxEmail) -> None:
    from flask_mail import Message

    msg = Message(
        subject=row.subject,
        recipients=[row.to_addr],
        body=row.body_text,
        sender=current_app.config.get("MAIL_DEFAULT_SENDER"),
    )
    if row.ics:
        msg.attach(
            "invite.ics",
            f"text/calendar; method={ics_method(row.ics)}; charset=UTF-8",
            row.ics.encode("utf-8"),
            headers={"Content-Class": "urn:content-classes:calendarmessage"},
        )
    mail.send(msg)


def send_pending(now: datetime | None = None, limit: int = 50) -> dict[str, int]:
    """Send (or store) queued emails, oldest first. Each row is claimed before it is sent."""
    now = now or datetime.now(UTC)
    smtp = bool(current_app.config.get("MAIL_SERVER")) and not current_app.config.get("MAIL_SUPPRESS_SEND")
    max_attempts = int(current_app.config.get("MAIL_MAX_ATTEMPTS", MAX_ATTEMPTS))
    candidates = db.session.execute(
        sa.select(OutboxEmail.id, OutboxEmail.attempts)
        .where(OutboxEmail.status == OutboxStatus.QUEUED)
        .order_by(OutboxEmail.created_at, OutboxEmail.id)
        .limit(limit)
    ).all()
    db.session.rollback()
    counts = {"sent": 0, "stored": 0, "retry": 0, "failed": 0}
    for row_id, attempts in candidates:
        if not _claim(row_id, attempts):
            continue  # another runner has it
        row = db.session.get(OutboxEmail, row_id)
        if not smtp:
            row.status = OutboxStatus.STORED
            row.sent_at = now
            counts["stored"] += 1
            log.info(
                "outbox: email %s (%s) to %s stored, not sent: MAIL_SERVER is not set",
                row.id,
                row.kind,
                mask_email(row.to_addr),
            )
        else:
            try:
                _smtp_send(row)
            except Exception as exc:  # noqa: BLE001 - SMTP errors come in many types
                row.error = f"{type(exc).__name__}: {exc}"[:500]
                if row.attempts >= max_attempts:
                    row.status = OutboxStatus.FAILED
                    counts["failed"] += 1
                else:
                    counts["retry"] += 1
                log.warning(
                    "outbox: email %s (%s) to %s failed (attempt %s): %s",
                    row.id,
                    row.kind,
                    mask_email(row.to_addr),
                    row.attempts,
                    type(exc).__name__,
                )
            else:
                row.status = OutboxStatus.SENT
                row.sent_at = now
                row.error = None
                counts["sent"] += 1
                log.info("outbox: email %s (%s) sent to %s", row.id, row.kind, mask_email(row.to_addr))
        db.session.commit()
    return counts
