"""Admin: routing settings (auto-assignment on/off), who is on shift, the scheduler's jobs.

Registered on the admin blueprint (every /admin route is admins only).
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from crm.admin.routes import bp
from crm.extensions import db
from crm.jobs import JOBS, run_is_stuck, scheduler_silence
from crm.leads.forms import RoutingSettingsForm
from crm.models import JobRun, User
from crm.models.enums import Role
from crm.services import settings
from crm.services.routing import open_counts


@bp.route("/routing", methods=["GET", "POST"])
def routing():
    form = RoutingSettingsForm()
    stored = settings.get_setting(settings.AUTO_ASSIGN)
    if form.validate_on_submit():
        me = current_user._get_current_object()
        if form.auto_assign.data == "default":
            settings.clear_setting(settings.AUTO_ASSIGN, actor=me)
        else:
            settings.set_setting(settings.AUTO_ASSIGN, form.auto_assign.data == "on", actor=me)
        db.session.commit()
        flash("Routing settings saved.", "success")
        return redirect(url_for("admin.routing"))
    if not form.is_submitted():
        form.auto_assign.data = "default" if stored is None else ("on" if stored else "off")
    people = list(
        db.session.scalars(
            sa.select(User).where(User.role == Role.SPECIALIST, User.active.is_(True)).order_by(User.name)
        )
    )
    loads = open_counts([u.id for u in people])
    last_runs = {}
    for job in JOBS:
        last_runs[job.id] = db.session.scalar(
            sa.select(JobRun).where(JobRun.job_id == job.id).order_by(JobRun.id.desc()).limit(1)
        )
    return render_template(
        "leads/admin_routing.html",
        form=form,
        effective=settings.auto_assign_enabled(current_app.config),
        config_default=bool(current_app.config.get("AUTO_ASSIGN", True)),
        people=people,
        loads=loads,
        jobs=JOBS,
        last_runs=last_runs,
        silence=scheduler_silence(),
        stuck={job_id for job_id, run in last_runs.items() if run is not None and run_is_stuck(run)},
    )
