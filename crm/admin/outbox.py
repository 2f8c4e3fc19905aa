"""/admin/outbox: emails that could not be sent yet or at all, with "Send again" for a failed one.

Only what an admin needs to act on is shown (kind, masked recipient, lead, tries, error): the
subject and body stay in the database, so listing them is no view of patient data."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for

from crm.admin.routes import bp
from crm.extensions import db
from crm.logging_setup import scrub
from crm.models import OutboxEmail
from crm.models.enums import OutboxStatus
from crm.services import audit, mailer

ATTENTION = "attention"  # failed for good, or waiting for another try: what an admin may act on


@bp.get("/outbox")
def outbox():
    asked = request.args.get("status") or ATTENTION
    status = asked if asked in {s.value for s in OutboxStatus} | {ATTENTION, "all"} else ATTENTION
    # A value that is none of the tabs (a hand-edited or old link) is said to be not applied.
    not_applied = [("status", asked)] if asked != status else []
    stmt = sa.select(OutboxEmail).order_by(OutboxEmail.id.desc())
    if status == ATTENTION:
        stmt = stmt.where(mailer.needs_attention())
    elif status != "all":
        stmt = stmt.where(OutboxEmail.status == OutboxStatus(status))
    page = db.paginate(stmt, per_page=50, error_out=False)
    counts = dict(db.session.execute(sa.select(OutboxEmail.status, sa.func.count()).group_by(OutboxEmail.status)).all())
    failed, retrying = mailer.attention_counts()
    return render_template(
        "admin/outbox.html",
        page=page,
        status=status,
        statuses=[s for s in OutboxStatus],
        counts={str(k): v for k, v in counts.items()},
        attention=failed + retrying,
        max_attempts=int(current_app.config.get("MAIL_MAX_ATTEMPTS", mailer.MAX_ATTEMPTS)),
        mask=mailer.mask_email,
        # Rows written before errors were cleaned may quote an address (SMTPRecipientsRefused).
        clean=scrub,
        not_applied=not_applied,
    )


@bp.post("/outbox/<int:email_id>/resend")
def outbox_resend(email_id: int):
    row = db.session.get(OutboxEmail, email_id) or abort(404)
    try:
        mailer.resend(row, datetime.now(UTC))
    except ValueError as exc:
        db.session.rollback()
        flash(str(exc), "warning")
        return redirect(url_for("admin.outbox"))
    audit.record("resend_email", "outbox_email", row.id, detail={"kind": row.kind, "lead_id": row.lead_id})
    db.session.commit()
    flash(f"Email #{row.id} ({row.kind.replace('_', ' ')}) is queued again: it goes out within a minute.", "success")
    return redirect(url_for("admin.outbox"))
