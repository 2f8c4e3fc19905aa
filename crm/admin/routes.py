from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Blueprint, flash, render_template
from flask_login import login_required

from crm.extensions import db
from crm.jobs import scheduler_silence
from crm.models import AuditLog, InboxItem, JobRun, Lead, Physician, User
from crm.models.enums import OPEN_STATUSES
from crm.security import admin_required
from crm.services import booking, directory, edit_guard, mailer
from crm.services import intake as intake_service

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
@admin_required
def require_admin():
    """Every /admin route is admins only."""


@bp.get("/")
def index():
    count = lambda model, *where: db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))  # noqa: E731
    stats = {
        "users": count(User, User.active.is_(True)),
        "physicians": count(Physician, Physician.active.is_(True)),
        "leads": count(Lead, Lead.is_test.is_(False)),  # test deliveries are not leads to anyone
        "inbox_attention": count(InboxItem, intake_service.needs_attention()),
        # Open leads nobody holds (booked ones too: someone must record the visit's outcome).
        "unowned": count(
            Lead, Lead.assignee_id.is_(None), Lead.status.in_([s.value for s in OPEN_STATUSES]), Lead.is_test.is_(False)
        ),
    }
    stats["emails_failed"], stats["emails_retrying"] = mailer.attention_counts()
    expiry = directory.expiry_summary()
    at_risk = booking.visits_at_risk(datetime.now(UTC), limit=10)
    recent_audit = db.session.scalars(sa.select(AuditLog).order_by(AuditLog.id.desc()).limit(10)).all()
    recent_jobs = db.session.scalars(sa.select(JobRun).order_by(JobRun.id.desc()).limit(10)).all()
    return render_template(
        "admin/index.html",
        stats=stats,
        expiry=expiry,
        at_risk=at_risk,
        recent_audit=recent_audit,
        recent_jobs=recent_jobs,
        silence=scheduler_silence(),
    )


def saved_meanwhile(form, record, snapshot, what: str) -> bool:
    """Whether someone else saved ``record`` after ``form``'s page was opened (its ``loaded``
    snapshot differs from ``snapshot(record)`` read under a lock held until the commit,
    crm/services/edit_guard.py). If so the admin is told what changed, and the form, which keeps
    what they typed, now carries the current values: saving it again overwrites them knowingly."""
    edit_guard.lock_for_edit(record)
    current = snapshot(record)
    meanwhile = edit_guard.changed_since(current, form.loaded.data)
    if not meanwhile:
        return False
    form.loaded.data = edit_guard.token(current)
    flash(
        f"Not saved: someone else changed this {what} after you opened the page ("
        + ", ".join(name.replace("_", " ") for name in meanwhile)
        + "). Your entries are still below: check them against the current values (open the page "
        "again in another tab to see them) and save again to overwrite.",
        "danger",
    )
    return True


# Each admin area lives in its own module and adds its routes to ``bp``.
# (imports at the bottom on purpose: the modules import ``bp`` from here)
from crm.admin import physicians  # noqa: E402,F401,I001
from crm.admin import states  # noqa: E402,F401,I001
from crm.admin import conditions  # noqa: E402,F401,I001
from crm.admin import users  # noqa: E402,F401,I001
from crm.admin import audit  # noqa: E402,F401,I001
from crm.admin import sources  # noqa: E402,F401,I001
from crm.admin import inbox  # noqa: E402,F401,I001
from crm.admin import outbox  # noqa: E402,F401,I001
from crm.leads import admin_routing  # noqa: E402,F401,I001
