"""/admin/audit: the append-only audit trail, filtered and paginated. There is no edit or delete."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.orm import joinedload

from crm.admin.forms import AuditFilterForm
from crm.admin.routes import bp
from crm.extensions import db
from crm.form_filters import filter_value
from crm.models import AuditLog, User
from crm.services.audit import mentions_lead

OBJECT_TYPE_RE = re.compile(r"^[a-z_]{1,40}$")
# Object types once written under another name: the CSV export and import were "physicians" until
# December 2026. Filtering by the type finds the old rows too, and the filter lists the type once.
OBJECT_TYPE_ALIASES = {"physicians": "physician"}


def object_types(object_type: str) -> list[str]:
    """``object_type`` and the older names of the same type."""
    canonical = OBJECT_TYPE_ALIASES.get(object_type, object_type)
    return [canonical, *sorted(old for old, new in OBJECT_TYPE_ALIASES.items() if new == canonical)]


def _day_start(day: date, tz: str) -> datetime:
    try:
        zone = ZoneInfo(tz)
    except (KeyError, ValueError):
        zone = UTC
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def audit_select(
    *,
    user_id: int | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    tz: str = "UTC",
) -> sa.Select:
    """Newest first; dates are whole days in the viewer's time zone, both ends included."""
    stmt = sa.select(AuditLog).options(joinedload(AuditLog.user)).order_by(AuditLog.id.desc())
    if user_id == 0:
        stmt = stmt.where(AuditLog.user_id.is_(None))
    elif user_id:
        stmt = stmt.where(AuditLog.user_id == user_id)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if object_type:
        stmt = stmt.where(AuditLog.object_type.in_(object_types(object_type)))
    if object_id:
        same_object = AuditLog.object_id == object_id
        if object_type in (None, "lead") and object_id.isascii() and object_id.isdigit():  # not "²"
            same_object = sa.or_(same_object, mentions_lead(int(object_id)))  # queue pages that listed it
        stmt = stmt.where(same_object)
    if date_from:
        stmt = stmt.where(AuditLog.at >= _day_start(date_from, tz))
    if date_to:
        stmt = stmt.where(AuditLog.at < _day_start(date_to + timedelta(days=1), tz))
    return stmt


@bp.get("/audit")
def audit():
    form = AuditFilterForm(request.args)
    users = db.session.scalars(sa.select(User).order_by(User.name)).all()
    form.user.choices = [("", "Anyone"), ("0", "System / signed out")] + [(str(u.id), u.name) for u in users]
    actions = db.session.scalars(sa.select(AuditLog.action).distinct().order_by(AuditLog.action)).all()
    form.action.choices = [("", "Any action")] + [(a, a.replace("_", " ")) for a in actions]
    types = db.session.scalars(
        sa.select(AuditLog.object_type)
        .where(AuditLog.object_type.is_not(None))
        .distinct()
        .order_by(AuditLog.object_type)
    ).all()
    types = sorted({OBJECT_TYPE_ALIASES.get(t, t) for t in types})
    asked = (request.args.get("object_type") or "").strip()
    if asked in OBJECT_TYPE_ALIASES:  # an old link: the type under its current name
        asked = form.object_type.data = OBJECT_TYPE_ALIASES[asked]
    if asked and asked not in types and OBJECT_TYPE_RE.match(asked):
        # A type nobody has an entry for yet (a "History" link of an object never changed): still a
        # filter, which finds nothing, rather than an ignored one that lists other objects' rows with
        # the same id (lead 40's views as physician 40's history).
        types = sorted([*types, asked])
    form.object_type.choices = [("", "Any object")] + [(t, t.replace("_", " ")) for t in types]
    form.validate()  # GET filters: invalid values are shown and ignored
    ok = filter_value
    user_raw = ok(form.user)
    stmt = audit_select(
        user_id=int(user_raw) if user_raw and user_raw.isdigit() else None,
        action=ok(form.action),
        object_type=ok(form.object_type),
        object_id=(ok(form.object_id) or "").strip() or None,
        # A reversed range trusts neither end (the queue does the same), not the start alone.
        date_from=None if form.date_to.errors else ok(form.date_from),
        date_to=ok(form.date_to),
        tz=current_user.timezone,
    )
    page = db.paginate(stmt, per_page=50, error_out=False)
    # The form's own filters only: any other name (?endpoint=x) would clash with url_for's arguments.
    args = {k: v for k, v in request.args.items() if k in form._fields and k != "csrf_token" and v}
    if page.pages and page.page > page.pages:  # past the end (an old link, a typed ?page=99): the last page
        return redirect(url_for("admin.audit", **args, page=page.pages))
    return render_template("admin/audit.html", form=form, page=page, args=args)
