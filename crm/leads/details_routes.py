"""The workspace's "Edit details" page: correct the patient's contact and address and the lead's
request; a new address is located again and the match recomputed (crm/services/patient_details.py).

Added to the leads blueprint (imported at the bottom of crm/leads/routes.py). Any signed-in staff
member may edit, like every other workspace action; the save is audited and carries the lead's
version, so an edit based on a stale page is refused with the usual conflict message.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy.orm.exc import StaleDataError

from crm.extensions import db
from crm.leads.forms import DetailsForm
from crm.leads.routes import _conflict_message, _load, bp
from crm.models import Condition
from crm.services import audit
from crm.services.contact import US_STATES, format_phone
from crm.services.patient_details import DetailsError, update_details


def _form(lead=None) -> DetailsForm:
    form = DetailsForm()
    form.state.choices = [("", "—")] + [(code, f"{code} · {name}") for code, name in sorted(US_STATES.items())]
    conditions = db.session.execute(
        sa.select(Condition.id, Condition.name).order_by(sa.func.lower(Condition.name))
    ).all()
    form.condition_id.choices = [("", "Not specified")] + [(i, n) for i, n in conditions]
    if lead is not None:
        p = lead.patient
        for name in ("first_name", "last_name", "email", "date_of_birth", "street", "city", "zip", "language"):
            getattr(form, name).data = getattr(p, name)
        form.phone.data = format_phone(p.phone)
        form.state.data = p.state or ""
        form.preferred_contact_method.data = p.preferred_contact_method.value
        form.preferred_contact_time.data = p.preferred_contact_time.value
        form.condition_id.data = lead.condition_id
        form.preferred_mode.data = lead.preferred_mode.value
        form.version.data = str(lead.version)
        form.patient_stamp.data = patient_stamp(p)
    return form


def patient_stamp(patient) -> str:
    return patient.updated_at.isoformat() if patient.updated_at else ""


def _page(lead, form, status: int = 200):
    """The page shows the patient's details: audited like the workspace (after rendering: a
    commit first would expire what the page reads), also when re-shown after a refused save."""
    page = render_template("leads/details.html", lead=lead, p=lead.patient, form=form), status
    where = "edit details" if status == 200 else f"edit details, re-shown after a form ({status})"
    audit.record("view_lead", "lead", lead.id, detail={"patient_id": lead.patient_id, "page": where})
    db.session.commit()
    return page


@bp.get("/leads/<int:lead_id>/details")
@login_required
def edit_details(lead_id: int):
    lead = _load(lead_id)
    return _page(lead, _form(lead))


def _conflict_page(lead, form):
    """What was typed stays, stamped with the record as it is now: after a review, a second Save
    goes through (the old stamps would refuse every later Save)."""
    form.version.data = str(lead.version)
    form.patient_stamp.data = patient_stamp(lead.patient)
    return _page(lead, form, 409)


@bp.post("/leads/<int:lead_id>/details")
@login_required
def save_details(lead_id: int):
    lead = _load(lead_id)
    form = _form()
    if not form.validate_on_submit():
        return _page(lead, form, 422)
    if form.version_int() != lead.version:
        flash(_conflict_message(lead.id), "warning")
        return _conflict_page(lead, form)
    if form.patient_stamp.data != patient_stamp(lead.patient):
        # Keep what was typed; the current stamp lets a second Save, after review, go through.
        form.patient_stamp.data = patient_stamp(lead.patient)
        flash(
            "This patient's record was changed while you were editing (from another of their leads, or by "
            "locating the address). Nothing was saved: check the fields and save again.",
            "warning",
        )
        return _page(lead, form, 409)
    try:
        result = update_details(
            lead,
            form.values(),
            actor=current_user._get_current_object(),
            now=datetime.now(UTC),
            config=current_app.config,
        )
        db.session.commit()
    except DetailsError as exc:
        db.session.rollback()
        for name, message in exc.errors.items():
            getattr(form, name).errors = [*getattr(form, name).errors, message]
        return _page(_load(lead_id), form, 422)
    except StaleDataError:
        db.session.rollback()
        flash(_conflict_message(lead_id), "warning")
        return _conflict_page(_load(lead_id), form)
    flash(result.describe(), "success" if result.changed or result.phone_extension else "info")
    return redirect(url_for("leads.detail", lead_id=lead_id))
