"""Returning patients and folded resubmissions (SPEC 2.2)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Lead, Patient
from crm.models.enums import OPEN_STATUSES
from crm.prepared import Prepared

RESUBMISSION_WINDOW = timedelta(hours=24)

# Patient fields a later submission may fill in when the record has them empty.
FILLABLE = ("email", "phone", "street", "city", "state", "zip")
# What a returning patient's submission is compared on: a different name on the same email or phone
# may be another person (a spouse, a parent asking for a child), which the specialist must see.
COMPARED = ("first_name", "last_name", *FILLABLE)


CONTACT_LOCK_CLASS = 7301  # advisory-lock key space for patient contact details


_LOCK_ONE = Prepared(sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:a))"))
# Locked in sorted order, so two deliveries that share an email or a phone cannot deadlock.
_LOCK_TWO = Prepared(
    sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:a)), pg_advisory_xact_lock(:space, hashtext(:b))")
)


def contact_lock_keys(email: str | None, phone: str | None) -> list[str]:
    """What a delivery locks (with CONTACT_LOCK_CLASS), in sorted order, so two deliveries that
    share an email or a phone cannot deadlock."""
    return sorted(v for v in (email, phone) if v)


def lock_contact(email: str | None, phone: str | None) -> None:
    """Serialise concurrent intake for one email or phone until the transaction ends, so two
    deliveries from a new patient cannot both create the patient (PostgreSQL; SQLite has one writer)."""
    if db.session.get_bind().dialect.name != "postgresql":
        return
    values = contact_lock_keys(email, phone)
    if len(values) == 2:
        _LOCK_TWO.execute(db.session.connection(), {"space": CONTACT_LOCK_CLASS, "a": values[0], "b": values[1]})
    elif values:
        _LOCK_ONE.execute(db.session.connection(), {"space": CONTACT_LOCK_CLASS, "a": values[0]})


# Built once (every delivery runs it); "= NULL" matches nothing, so a missing email or phone just drops out.
# Ids and emails only: most deliveries are new patients, and only a match needs the ORM object.
_SAME_CONTACT = Prepared(
    sa.select(Patient.id, Patient.email)
    .where(sa.or_(Patient.email == sa.bindparam("email"), Patient.phone == sa.bindparam("phone")))
    .order_by(Patient.id)
    .limit(20)
)


def find_patient(email: str | None, phone: str | None) -> Patient | None:
    """The patient with the same normalised email, else the same E.164 phone (oldest record wins)."""
    if not (email or phone):
        return None
    rows = _SAME_CONTACT.rows(db.session.connection(), {"email": email or None, "phone": phone or None})
    by_email = [patient_id for patient_id, patient_email in rows if email and patient_email == email]
    first = (by_email or [patient_id for patient_id, _ in rows] or [None])[0]
    return db.session.get(Patient, first) if first is not None else None


def fill_missing(patient: Patient, values: dict) -> list[str]:
    """Copy values into fields the patient record has empty; returns the names filled."""
    filled = []
    for name in FILLABLE:
        new = values.get(name)
        if new and not getattr(patient, name):
            setattr(patient, name, new)
            filled.append(name)
    return filled


def differing(patient: Patient, values: dict) -> dict[str, str]:
    """Names, contact and address values a returning patient sent that differ from the ones on
    file (which the record keeps): {field: the value sent}. Case and spacing do not count, nor a
    ZIP sent without the +4 the record has."""
    found = {}
    for name in COMPARED:
        new, old = values.get(name), getattr(patient, name)
        if not new or not old or " ".join(str(new).split()).casefold() == " ".join(str(old).split()).casefold():
            continue
        if name == "zip" and str(old).startswith(str(new)):
            continue
        found[name] = new
    return found


def open_resubmission_target(
    patient: Patient, condition_id: int | None, condition_text: str, now: datetime
) -> Lead | None:
    """An open lead of this patient for the same condition created within the last 24 hours."""
    stmt = (
        sa.select(Lead)
        .where(
            Lead.patient_id == patient.id,
            Lead.status.in_(OPEN_STATUSES),
            Lead.created_at >= now - RESUBMISSION_WINDOW,
        )
        .order_by(Lead.created_at.desc())
        .limit(1)
    )
    if condition_id is not None:
        stmt = stmt.where(Lead.condition_id == condition_id)
    else:
        stmt = stmt.where(Lead.condition_id.is_(None), sa.func.lower(Lead.condition_text) == condition_text.lower())
    return db.session.scalar(stmt)
