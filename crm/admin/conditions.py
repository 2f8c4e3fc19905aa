"""/admin/conditions: the conditions we match on and their public pages (Markdown, previewed)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for

from crm.admin.forms import ConditionForm
from crm.admin.routes import bp, saved_meanwhile
from crm.extensions import db
from crm.models import Condition, Lead, Physician
from crm.models.directory import physician_conditions
from crm.services import audit, directory, edit_guard
from crm.services.markdown import render_markdown


@bp.get("/conditions")
def conditions():
    rows = db.session.scalars(sa.select(Condition).order_by(sa.func.lower(Condition.name))).all()
    doctors = dict(
        db.session.execute(
            sa.select(physician_conditions.c.condition_id, sa.func.count())
            .join(Physician, Physician.id == physician_conditions.c.physician_id)
            .where(Physician.active.is_(True))
            .group_by(physician_conditions.c.condition_id)
        ).all()
    )
    leads = dict(db.session.execute(sa.select(Lead.condition_id, sa.func.count()).group_by(Lead.condition_id)).all())
    return render_template("admin/conditions/list.html", conditions=rows, doctors=doctors, leads=leads)


def _values(form: ConditionForm) -> dict:
    return {
        "name": form.name.data.strip(),
        "slug": form.slug.data,
        "synonyms": form.synonym_list(),
        "summary": (form.summary.data or "").strip(),
        "body": (form.body.data or "").replace("\r\n", "\n").strip(),
        "published": bool(form.published.data),
    }


def _edit(condition: Condition | None):
    # A posted form is read from the request alone: with obj= a field missing from the post would
    # keep the model's value (the synonyms list, where the form expects text).
    form = ConditionForm(obj=condition) if condition and request.method == "GET" else ConditionForm()
    if condition and not form.is_submitted():
        form.synonyms.data = "\n".join(condition.synonyms or [])
        form.loaded.data = edit_guard.token(directory.condition_snapshot(condition))
    preview = None
    confirm_unpublish = False
    if form.validate_on_submit():
        previewing = request.form.get("action") == "preview"
        # Unpublishing takes the public page down (a 404) and the condition off the request form:
        # asked once more on the page, as the Save button cannot tell it apart from any other save.
        unpublishing = condition is not None and condition.published and not form.published.data
        if previewing or (
            condition is not None and saved_meanwhile(form, condition, directory.condition_snapshot, "condition")
        ):
            preview = render_markdown(form.body.data)  # the form again, with what was typed
        elif unpublishing and request.form.get("confirm") != "unpublish":
            confirm_unpublish = True
            preview = render_markdown(form.body.data)
        else:
            before = directory.condition_snapshot(condition) if condition is not None else {}
            try:
                saved, changes = directory.save_condition(condition, _values(form))
            except ValueError as exc:
                db.session.rollback()
                getattr(form, getattr(exc, "field", "slug")).errors = [str(exc)]
            else:
                if changes:
                    detail = {"fields": changes}
                    if condition is not None:
                        after = directory.condition_snapshot(saved)
                        detail["changes"] = directory.audit_changes(before, after, changes)
                    audit.record(
                        "create_condition" if condition is None else "update_condition",
                        "condition",
                        saved.id,
                        detail=detail,
                    )
                    db.session.commit()
                    flash(f"Saved {saved.name}.", "success")
                else:
                    flash("Nothing changed.", "info")
                return redirect(url_for("admin.condition_edit", condition_id=saved.id))
    elif condition is not None and not form.is_submitted():
        preview = render_markdown(condition.body)
    return render_template(
        "admin/conditions/form.html",
        form=form,
        condition=condition,
        preview=preview,
        confirm_unpublish=confirm_unpublish,
    )


@bp.route("/conditions/new", methods=["GET", "POST"])
def condition_new():
    return _edit(None)


@bp.route("/conditions/<int:condition_id>/edit", methods=["GET", "POST"])
def condition_edit(condition_id: int):
    return _edit(db.session.get(Condition, condition_id) or abort(404))
