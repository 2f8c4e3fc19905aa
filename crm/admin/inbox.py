"""/admin/inbox: every intake delivery, filtered by status, with the raw body and a replay button."""

from __future__ import annotations

import json

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from crm.admin.routes import bp
from crm.extensions import db
from crm.models import AuditLog, InboxItem, WebhookSource
from crm.models.enums import InboxChannel, InboxStatus
from crm.services import audit
from crm.services import intake as intake_service


def _source_and_channel(source: str | None, channel: str | None) -> list:
    conditions = []
    if source:
        conditions.append(InboxItem.source_slug == source)
    if channel:
        conditions.append(InboxItem.channel == InboxChannel(channel))
    return conditions


ATTENTION = "attention"  # not a status: failed items and content refusals, what an admin should act on


def inbox_select(status: str | None = None, source: str | None = None, channel: str | None = None) -> sa.Select:
    stmt = sa.select(InboxItem).where(*_source_and_channel(source, channel)).order_by(InboxItem.id.desc())
    if status == ATTENTION:
        stmt = stmt.where(intake_service.needs_attention())
    elif status:
        stmt = stmt.where(InboxItem.status == InboxStatus(status))
    return stmt


def attention_count(source: str | None = None, channel: str | None = None) -> int:
    stmt = (
        sa.select(sa.func.count())
        .select_from(InboxItem)
        .where(intake_service.needs_attention(), *_source_and_channel(source, channel))
    )
    return db.session.scalar(stmt) or 0


def status_counts(source: str | None = None, channel: str | None = None) -> dict[str, int]:
    """Items per status under the same source/channel filter as the list, so each tab's badge
    is the number of rows that tab shows."""
    stmt = (
        sa.select(InboxItem.status, sa.func.count())
        .where(*_source_and_channel(source, channel))
        .group_by(InboxItem.status)
    )
    return {str(status): n for status, n in db.session.execute(stmt).all()}


@bp.get("/inbox")
def inbox():
    asked_status, asked_channel = request.args.get("status") or None, request.args.get("channel") or None
    status = asked_status if asked_status in {s.value for s in InboxStatus} | {ATTENTION} else None
    channel = asked_channel if asked_channel in {c.value for c in InboxChannel} else None
    # A value that is none of the choices (a hand-edited or old link) is said to be not applied.
    not_applied = [
        (what, asked)
        for what, asked, used in (("status", asked_status, status), ("channel", asked_channel, channel))
        if asked and used is None
    ]
    source = (request.args.get("source") or "").strip()[:80] or None
    page = db.paginate(inbox_select(status, source, channel), per_page=50, error_out=False)
    slugs = ["form"] + list(db.session.scalars(sa.select(WebhookSource.slug).order_by(WebhookSource.slug)))
    args = {k: v for k, v in {"status": status, "source": source, "channel": channel}.items() if v}
    return render_template(
        "admin/inbox.html",
        page=page,
        counts=status_counts(source, channel),
        attention=attention_count(source, channel),
        statuses=list(InboxStatus),
        channels=list(InboxChannel),
        slugs=slugs,
        status=status,
        source=source,
        channel=channel,
        args=args,
        not_applied=not_applied,
    )


def _pretty(item: InboxItem) -> tuple[str, str | None]:
    """The body to show, and how it was decoded (None: as received). JSON is indented; a
    form-encoded body is decoded into its fields (it is one long escaped line as received)."""
    body = item.body or ""
    if "x-www-form-urlencoded" in (item.content_type or ""):
        try:
            fields = intake_service.parse_body(body.encode("utf-8"), item.content_type)
        except intake_service.PayloadError:
            return body, None
        return _shown(fields), "form fields, decoded"
    try:
        return _shown(json.loads(body)), None
    except (ValueError, TypeError, RecursionError):  # RecursionError: a body nested thousands deep
        return body, None


def _shown(data) -> str:
    """Indented JSON with its characters as they read, except half of a UTF-16 pair (JSON's
    "\\ud800"), which is no character and cannot be sent in a page: kept as its escape."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return intake_service.LONE_SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@bp.get("/inbox/<int:item_id>")
def inbox_item(item_id: int):
    item = db.session.get(InboxItem, item_id) or abort(404)
    # The raw body is patient data: who looked at it is recorded.
    audit.record("view_inbox_item", "inbox_item", item.id, detail={"lead_id": item.lead_id})
    db.session.commit()
    body, decoded_as = _pretty(item)
    return render_template(
        "admin/inbox_item.html",
        item=item,
        body=body,
        decoded_as=decoded_as,
        can_replay=intake_service.can_replay(item),
        can_dismiss=intake_service.is_attention(item),
        dismiss_reasons=intake_service.DISMISS_REASONS,
        dismissed=_dismissal(item) if item.status == InboxStatus.DISMISSED else None,
    )


def _dismissal(item: InboxItem):
    """The audit row that set the item aside: who, when and why."""
    return db.session.scalar(
        sa.select(AuditLog)
        .where(AuditLog.action == "dismiss_inbox_item", AuditLog.object_type == "inbox_item")
        .where(AuditLog.object_id == str(item.id))
        .order_by(AuditLog.id.desc())
        .limit(1)
    )


@bp.post("/inbox/<int:item_id>/dismiss")
def inbox_dismiss(item_id: int):
    item = db.session.get(InboxItem, item_id) or abort(404)
    try:
        intake_service.dismiss(
            item, current_user._get_current_object(), request.form.get("reason", ""), request.form.get("note", "")
        )
    except ValueError as exc:
        db.session.rollback()
        flash(str(exc), "warning")
        return redirect(url_for("admin.inbox_item", item_id=item_id))
    db.session.commit()
    flash(f"Inbox item #{item_id} set aside. Replay still takes it up if needed.", "success")
    return redirect(url_for("admin.inbox", status=ATTENTION))


@bp.post("/inbox/<int:item_id>/replay")
def inbox_replay(item_id: int):
    item = db.session.get(InboxItem, item_id) or abort(404)
    try:
        item = intake_service.replay(item, current_user._get_current_object())
    except ValueError as exc:
        db.session.rollback()
        flash(str(exc), "warning")
        return redirect(url_for("admin.inbox_item", item_id=item_id))
    messages = {
        InboxStatus.ACCEPTED: ("success", f"Replayed: lead #{item.lead_id}."),
        InboxStatus.RESUBMITTED: ("info", f"Replayed: folded into the patient's open lead #{item.lead_id}."),
        InboxStatus.DUPLICATE: ("info", f"Replayed: it duplicates an earlier delivery (lead #{item.lead_id})."),
        InboxStatus.REJECTED: ("warning", "Replayed, but the submission is still refused; see the error below."),
        InboxStatus.SPAM: ("warning", "Replayed, but it is still marked as spam."),
        InboxStatus.FAILED: ("danger", "Replayed, but processing failed again; see the error below."),
    }
    category, message = messages.get(item.status, ("info", "Replayed."))
    flash(message, category)
    return redirect(url_for("admin.inbox_item", item_id=item_id))
