"""The mail outbox: every email is written to ``outbox_emails`` first, then sent by a job.

With ``MAIL_SERVER`` set, the ``outbox`` job sends through Flask-Mail (SMTP);
without it, a message is marked ``stored`` and one masked log line says so.

A runner claims a row before sending it (``sending``, with a lease in ``next_attempt_at``), so two
runners never send one email twice; a runner that dies mid-send leaves the row to be taken again
when the lease ends. A failed send waits longer before each new try (``RETRY_AFTER_MINUTES``: an
SMTP outage of most of a day is ridden out) and after ``MAIL_MAX_ATTEMPTS`` (8) tries it is
``failed``: the admins are told, the lead's timeline says so, and /admin/outbox sends it again.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from crm.extensions import db, mail
from crm.logging_setup import error_text, mask_email, scrub
from crm.models import Appointment, Lead, Notification, OutboxEmail, User
from crm.models.enums import AppointmentStatus, EventKind, OutboxStatus
from crm.services.notifications import active_admins, key_prefixed, notify

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# The wait after the n-th failed try (the last value repeats): 1 min, 5 min, ... 12 h; with 8 tries
# the last one comes about 22 hours after the first.
RETRY_AFTER_MINUTES = (1, 5, 15, 60, 180, 360, 720)
# How long a claimed row is left to its runner before another may take it: far longer than one SMTP
# exchange, which MAIL_TIMEOUT bounds (crm/mail_connection.py), so only a runner that died loses its rows.
SEND_LEASE = timedelta(minutes=10)


def queue_email(
    to_addr: str,
    subject: str,
    body_text: str,
    *,
    kind: str,
    lead: Lead | None = None,
    user: User | None = None,
    ics: str | None = None,
    appointment: Appointment | None = None,
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
        appointment_id=appointment.id if appointment is not None else None,
        created_at=datetime.now(UTC),
    )
    db.session.add(row)
    db.session.flush()
    return row


def _due(now: datetime):
    """Rows a runner may take now: queued and due, or claimed by a runner whose lease has ended."""
    return sa.or_(
        sa.and_(
            OutboxEmail.status == OutboxStatus.QUEUED,
            sa.or_(OutboxEmail.next_attempt_at.is_(None), OutboxEmail.next_attempt_at <= now),
        ),
        sa.and_(OutboxEmail.status == OutboxStatus.SENDING, OutboxEmail.next_attempt_at <= now),
    )


def _claim(row_id: int, now: datetime) -> bool:
    """Take the row for this runner (``sending`` until the lease ends), counting the attempt. A
    conditional UPDATE: a second runner finds it ``sending`` with a lease running and leaves it
    (on PostgreSQL it waits for the first one's commit, then sees that)."""
    result = db.session.execute(
        sa.update(OutboxEmail)
        .where(OutboxEmail.id == row_id, _due(now))
        .values(status=OutboxStatus.SENDING, attempts=OutboxEmail.attempts + 1, next_attempt_at=now + SEND_LEASE)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def retry_after(attempts: int) -> timedelta:
    """The wait before the next try after ``attempts`` failed ones."""
    return timedelta(minutes=RETRY_AFTER_MINUTES[min(attempts, len(RETRY_AFTER_MINUTES)) - 1])


# Emails that tell the patient when to come: a later email about the same visit replaces them.
_ABOUT_THE_TIME = ("appointment_confirmation", "appointment_rescheduled", "appointment_reminder")


def overtaken(row: OutboxEmail, now: datetime) -> str | None:
    """Why an appointment email still waiting must not go out any more, or None. Retries last most
    of a day: a confirmation must not reach the patient after the visit was cancelled or moved
    again, nor a reminder after the visit."""
    if row.appointment_id is None or row.kind not in _ABOUT_THE_TIME:
        return None
    appt = db.session.get(Appointment, row.appointment_id)
    if appt is None:
        return None
    if appt.status == AppointmentStatus.CANCELLED:
        return "withdrawn: the visit was cancelled meanwhile"
    if appt.starts_at <= now:
        return "withdrawn: the visit's time has passed"
    later = db.session.scalar(
        sa.select(OutboxEmail.id).where(
            OutboxEmail.appointment_id == row.appointment_id,
            OutboxEmail.id > row.id,
            OutboxEmail.kind.in_(["appointment_rescheduled", "appointment_cancellation"]),
        )
    )
    if later is not None:
        return f"withdrawn: email #{later} about the same visit replaces it"
    return None


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


def _relay_unreachable(exc: BaseException) -> bool:
    """A failure of the connection to the relay (refused, timed out, hung up, name not found), as
    opposed to the relay refusing this one email (a bad recipient)."""
    import smtplib
    import socket

    return isinstance(
        exc,
        (TimeoutError, ConnectionError, socket.gaierror, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError),
    )


def send_pending(now: datetime | None = None, limit: int = 50) -> dict[str, int]:
    """Send (or store) due emails, oldest first. Each row is claimed before it is sent."""
    now = now or datetime.now(UTC)
    started = time.monotonic()

    def clock() -> datetime:
        # The run's time plus what the run has taken so far: a lease or a backoff is measured from
        # the row's own claim or failure, not from the start of a batch of slow sends.
        return now + timedelta(seconds=time.monotonic() - started)

    smtp = bool(current_app.config.get("MAIL_SERVER")) and not current_app.config.get("MAIL_SUPPRESS_SEND")
    max_attempts = int(current_app.config.get("MAIL_MAX_ATTEMPTS", MAX_ATTEMPTS))
    candidates = db.session.scalars(
        sa.select(OutboxEmail.id).where(_due(now)).order_by(OutboxEmail.created_at, OutboxEmail.id).limit(limit)
    ).all()
    db.session.rollback()
    counts = {"sent": 0, "stored": 0, "retry": 0, "failed": 0, "withdrawn": 0}
    for row_id in candidates:
        if not _claim(row_id, clock()):
            continue  # another runner has it
        row = db.session.get(OutboxEmail, row_id, populate_existing=True)
        reason = overtaken(row, clock())
        if reason:
            row.status, row.error, row.next_attempt_at = OutboxStatus.WITHDRAWN, reason, None
            counts["withdrawn"] += 1
            log.info("outbox: email %s (%s) %s", row.id, row.kind, reason)
        elif not smtp:
            row.status = OutboxStatus.STORED
            row.sent_at, row.next_attempt_at = now, None
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
                relay_down = _relay_unreachable(exc)
                row.error = scrub(error_text(exc, 480))
                if row.attempts >= max_attempts:
                    _give_up(row, now)
                    counts["failed"] += 1
                else:
                    row.status = OutboxStatus.QUEUED
                    row.next_attempt_at = clock() + retry_after(row.attempts)
                    counts["retry"] += 1
                log.warning(
                    "outbox: email %s (%s) to %s failed (attempt %s of %s): %s",
                    row.id,
                    row.kind,
                    mask_email(row.to_addr),
                    row.attempts,
                    max_attempts,
                    row.error,
                )
                if relay_down:
                    # The relay did not answer (or hung up): the rest of the batch would each wait
                    # MAIL_TIMEOUT for the same silence. They stay queued, untried, for the next run.
                    db.session.commit()
                    log.warning("outbox: the mail relay is unreachable; the other emails wait for the next run")
                    break
            else:
                row.status = OutboxStatus.SENT
                row.sent_at, row.next_attempt_at = now, None
                row.error = None
                counts["sent"] += 1
                log.info("outbox: email %s (%s) sent to %s", row.id, row.kind, mask_email(row.to_addr))
        db.session.commit()
    return counts


def _give_up(row: OutboxEmail, now: datetime) -> None:
    """``failed`` for good: said on the lead's timeline and to every active admin (once each)."""
    from crm.services.timeline import add_event

    row.status = OutboxStatus.FAILED
    row.next_attempt_at = None
    what = row.kind.replace("_", " ")
    lead = db.session.get(Lead, row.lead_id) if row.lead_id is not None else None
    if lead is not None:
        add_event(
            lead, EventKind.EMAIL_FAILED, {"kind": row.kind, "attempts": row.attempts, "outbox_id": row.id}, at=now
        )
    about = f" for lead #{row.lead_id}" if row.lead_id is not None else ""
    tries = f"{row.attempts} {'try' if row.attempts == 1 else 'tries'}"
    message = f"Email not sent{about} ({what}) after {tries}: resend it from Admin → Outbox."
    for admin in active_admins():
        notify(
            admin,
            "email_failed",
            message,
            lead=lead,
            dedupe_key=f"email_failed:{row.id}:{admin.id}:{now:%Y%m%d%H%M%S}",
            at=now,
        )


def needs_attention():
    """Failed for good, or waiting for another try after a failed one: what /admin/outbox lists."""
    return sa.or_(
        OutboxEmail.status == OutboxStatus.FAILED,
        sa.and_(OutboxEmail.status.in_([OutboxStatus.QUEUED, OutboxStatus.SENDING]), OutboxEmail.attempts > 0),
    )


def attention_counts() -> tuple[int, int]:
    """(failed, retrying): the /admin card's figures."""
    failed = sa.func.count().filter(OutboxEmail.status == OutboxStatus.FAILED)
    retrying = sa.func.count().filter(OutboxEmail.status != OutboxStatus.FAILED)
    row = db.session.execute(sa.select(failed, retrying).where(needs_attention())).one()
    return int(row[0] or 0), int(row[1] or 0)


def resend(row: OutboxEmail, now: datetime) -> None:
    """An admin's "Send again" for a failed email: queued now, with a fresh count of tries."""

    if row.status != OutboxStatus.FAILED:
        raise ValueError("Only an email that failed can be sent again.")
    reason = overtaken(row, now)
    if reason:
        raise ValueError(f"Not sent again: {reason.removeprefix('withdrawn: ')}.")
    row.status = OutboxStatus.QUEUED
    row.attempts = 0
    row.next_attempt_at = None
    # The admins' alerts about it are dealt with (a new failure raises new ones).
    db.session.execute(
        sa.update(Notification)
        .where(key_prefixed(Notification.dedupe_key, f"email_failed:{row.id}:"), Notification.read_at.is_(None))
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.flush()
