from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import login_required

from crm.extensions import db
from crm.models import AuditLog, InboxItem, JobRun, Lead, Physician, User
from crm.models.enums import InboxStatus
from crm.security import admin_required

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
        "leads": count(Lead),
        "inbox_failed": count(InboxItem, InboxItem.status == InboxStatus.FAILED),
    }
    recent_audit = db.session.scalars(sa.select(AuditLog).order_by(AuditLog.id.desc()).limit(10)).all()
    recent_jobs = db.session.scalars(sa.select(JobRun).order_by(JobRun.id.desc()).limit(10)).all()
    return render_template("admin/index.html", stats=stats, recent_audit=recent_audit, recent_jobs=recent_jobs)


# Each admin area lives in its own module and adds its routes to ``bp``.
# (imports at the bottom on purpose: the modules import ``bp`` from here)
from crm.admin import physicians  # noqa: E402,F401,I001
from crm.admin import states  # noqa: E402,F401,I001
from crm.admin import conditions  # noqa: E402,F401,I001
from crm.admin import users  # noqa: E402,F401,I001
from crm.admin import audit  # noqa: E402,F401,I001
from crm.admin import sources  # noqa: E402,F401,I001
from crm.admin import inbox  # noqa: E402,F401,I001
from crm.leads import admin_routing  # noqa: E402,F401,I001
