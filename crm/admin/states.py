"""/admin/states: the state program reference data, editable by admins."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy.orm import selectinload

from crm.admin.forms import StateProgramForm
from crm.admin.routes import bp, saved_meanwhile
from crm.extensions import db
from crm.models import Condition, StateProgram
from crm.models.enums import ProgramType
from crm.services import audit, directory, edit_guard


@bp.get("/states")
def states():
    # The conditions of all 51 programs in one more query, not one per row.
    programs = db.session.scalars(
        sa.select(StateProgram).options(selectinload(StateProgram.qualifying_conditions)).order_by(StateProgram.state)
    ).all()
    return render_template("admin/states/list.html", programs=programs)


def _program(code: str) -> StateProgram:
    program = db.session.scalar(sa.select(StateProgram).where(StateProgram.state == (code or "").upper()[:2]))
    return program or abort(404)


@bp.route("/states/<code>/edit", methods=["GET", "POST"])
def state_edit(code: str):
    program = _program(code)
    form = StateProgramForm(obj=program)
    form.qualifying_conditions.choices = [
        (c.id, c.name) for c in db.session.scalars(sa.select(Condition).order_by(sa.func.lower(Condition.name)))
    ]
    if not form.is_submitted():
        form.program_type.data = str(program.program_type)
        form.qualifying_conditions.data = [c.id for c in program.qualifying_conditions]
        form.loaded.data = edit_guard.token(directory.state_program_snapshot(program))
    confirm = None
    if form.validate_on_submit() and not saved_meanwhile(
        form, program, directory.state_program_snapshot, "state program"
    ):
        values = {
            "program_type": ProgramType(form.program_type.data),
            "physician_discretion": bool(form.physician_discretion.data),
            "telehealth_allowed": bool(form.telehealth_allowed.data),
            "minimum_age": int(form.minimum_age.data),
            "patient_fee_note": (form.patient_fee_note.data or "").strip(),
            "registry_url": (form.registry_url.data or "").strip(),
            "reviewed_on": form.reviewed_on.data,
            "notes": (form.notes.data or "").strip(),
        }
        confirm = _confirmation_needed(program, values, form.qualifying_conditions.data or [])
        if confirm is None or request.form.get("confirm") == confirm:
            return _save(program, values, form.qualifying_conditions.data or [])
    return render_template("admin/states/form.html", form=form, program=program, confirm=confirm)


_MEDICAL = (ProgramType.MEDICAL, ProgramType.MEDICAL_AND_ADULT_USE)


def _confirmation_needed(program: StateProgram, values: dict, condition_ids: list[int]) -> str | None:
    """A save that turns every lead of the state away is asked once more on the page (the Save
    button cannot tell it from any other save): "no_program" while qualifying conditions stay
    ticked, or "no_conditions" for a medical program with none ticked and no physician discretion.
    Asked only when this save makes it so, not again on every later save."""
    new_type = values["program_type"]
    if new_type == ProgramType.NONE and program.program_type != ProgramType.NONE and condition_ids:
        return "no_program"
    if new_type in _MEDICAL and not condition_ids and not values["physician_discretion"]:
        already = program.program_type in _MEDICAL and not program.physician_discretion
        if not (already and not program.qualifying_conditions):
            return "no_conditions"
    return None


def _save(program: StateProgram, values: dict, condition_ids: list[int]):
    before = directory.state_program_values(program)
    try:
        changes = directory.update_state_program(program, values, condition_ids)
    except ValueError as exc:
        db.session.rollback()
        flash(str(exc), "danger")
        return redirect(url_for("admin.state_edit", code=program.state))
    if changes:
        after = directory.state_program_values(program)
        detail = {"fields": changes, "changes": directory.audit_changes(before, after, changes)}
        audit.record("update_state_program", "state_program", program.state, detail=detail)
        requeued = directory.requeue_state_leads(program.state)
        db.session.commit()
        message = f"Saved {program.name}: {', '.join(c.replace('_', ' ') for c in changes)}."
        if requeued:
            leads = f"{requeued} open lead{'s' if requeued != 1 else ''} in {program.state}"
            message += (
                f" {leads} {'are' if requeued != 1 else 'is'} checked again against the new rules "
                "(eligibility and matches) within a minute."
            )
        flash(message, "success")
    else:
        flash("Nothing changed.", "info")
    return redirect(url_for("admin.states"))
