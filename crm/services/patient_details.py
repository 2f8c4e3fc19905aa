"""A specialist corrects the patient's details or the lead's request from the workspace.

After a call the desk often knows better than the form did: the right ZIP, the real condition,
a phone number that works. A changed address is located again (at once with the offline
geocoder; with an online one the ``enrich_new`` job does it within seconds) and every open lead of
the patient is matched again; a changed condition or visit mode re-matches this lead (SPEC 2.3,
2.4, 6: "recomputed when the lead's location or condition changes"). The timeline records which
fields changed, never their values (the audit log holds the same, SPEC 12).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Condition, Lead, Patient, User
from crm.models.enums import OPEN_STATUSES, EventKind, GeocodeStatus
from crm.services import audit
from crm.services.directory import check_zip_in_state
from crm.services.timeline import add_event

PATIENT_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "street",
    "city",
    "state",
    "zip",
    "preferred_contact_method",
    "preferred_contact_time",
    "language",
)
ADDRESS_FIELDS = frozenset({"street", "city", "state", "zip"})
LEAD_FIELDS = ("condition_id", "preferred_mode")


class DetailsError(ValueError):
    """Field errors the form shows next to the fields (``errors``: field name -> message)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass
class DetailsResult:
    changed: list[str] = field(default_factory=list)
    relocated: bool = False  # the address changed
    located: bool | None = None  # located again right away (None: left to the enrich_new job)
    rematched: int = 0
    phone_extension: str | None = None  # noted on the timeline event (E.164 has none)

    def describe(self) -> str:
        noted = f"Phone extension {self.phone_extension} noted on the timeline." if self.phone_extension else ""
        if not self.changed:
            return noted or "Nothing changed."
        parts = [f"Saved ({', '.join(name.replace('_', ' ') for name in self.changed)})."]
        if noted:
            parts.append(noted)
        if self.relocated:
            if self.located is None:
                parts.append("The new address is being located; the match follows within seconds.")
            elif self.located:
                parts.append("The new address is located.")
            else:
                parts.append("The new address could not be located.")
        if self.rematched:
            parts.append(f"Re-matched {self.rematched} open lead{'s' if self.rematched != 1 else ''}.")
        return " ".join(parts)


def contact_conflicts(patient: Patient, email: str | None, phone: str | None) -> dict[str, str]:
    """An email or phone that already belongs to another patient record would split the history
    that intake's de-duplication (SPEC 2.2) keeps together: refuse it, naming the record."""
    errors = {}
    for name, value in (("email", email), ("phone", phone)):
        if not value or value == getattr(patient, name):
            continue
        other = db.session.scalar(
            sa.select(Patient.id)
            .where(getattr(Patient, name) == value, Patient.id != patient.id)
            .order_by(Patient.id)
            .limit(1)
        )
        if other is not None:
            lead_id = db.session.scalar(
                sa.select(Lead.id).where(Lead.patient_id == other).order_by(Lead.id.desc()).limit(1)
            )
            where = f"lead #{lead_id}" if lead_id else f"patient record #{other}"
            errors[name] = f"This {name} already belongs to another patient ({where}); work on that lead instead."
    return errors


def _changes(obj, values: Mapping, names) -> list[str]:
    return [name for name in names if name in values and getattr(obj, name) != values[name]]


def update_details(
    lead: Lead,
    values: Mapping,
    *,
    actor: User,
    now: datetime,
    config: Mapping | None = None,
) -> DetailsResult:
    """Apply ``values`` (already normalised: E.164 phone, lower-case email, ``date`` of birth,
    state code, condition id or None) to the lead's patient and the lead. Flushes only."""
    from crm.services.enrichment import match_and_store, rematch_patient
    from crm.services.geocoding import geocode_patient, provider_name, reset_patient_location

    patient = lead.patient
    errors = contact_conflicts(patient, values.get("email"), values.get("phone"))
    if not (values.get("email") or values.get("phone")):
        errors["phone"] = "Keep a phone number or an email address: the desk needs a way to reach the patient."
    dob = values.get("date_of_birth")
    if isinstance(dob, date) and dob > now.date():
        errors["date_of_birth"] = "The date of birth is in the future."
    zip_code, state = values.get("zip", patient.zip), values.get("state", patient.state)
    if (zip_code != patient.zip or state != patient.state) and zip_code and state:
        # Geocoding goes by the ZIP: a ZIP of another state would silently move the patient there
        # (and change the state program that decides eligibility) while the form said otherwise.
        try:
            check_zip_in_state(zip_code, state)
        except ValueError as exc:
            errors["zip"] = str(exc)
    if errors:
        raise DetailsError(errors)

    result = DetailsResult()
    patient_changed = _changes(patient, values, PATIENT_FIELDS)
    lead_changed = _changes(lead, values, LEAD_FIELDS)
    result.changed = patient_changed + lead_changed
    # The phone column is E.164, which has no extension: one typed with the number ("ext 12") is
    # kept on this edit's timeline event, where the specialist who rings sees it.
    result.phone_extension = extension = values.get("phone_extension")
    if not result.changed and not extension:
        return result
    old_condition = lead.condition  # before the new condition_id is set
    for name in patient_changed:
        setattr(patient, name, values[name])
    for name in lead_changed:
        setattr(lead, name, values[name])
    event = {"fields": result.changed}
    if extension:
        event["phone_extension"] = extension
    if "condition_id" in lead_changed:
        # The relationship too: eligibility and matching read lead.condition, not the column.
        lead.condition = db.session.get(Condition, values["condition_id"]) if values["condition_id"] else None
        # Words the patient typed (not just the old condition's name) described the old condition:
        # kept in the event rather than erased.
        typed = (lead.condition_text or "").strip()
        if typed and (old_condition is None or typed.lower() != old_condition.name.lower()):
            event["condition_text_was"] = typed
        lead.condition_text = ""
    if "date_of_birth" in patient_changed and values["date_of_birth"] is not None:
        patient.age_confirmed = True
    lead.last_activity_at = now
    add_event(lead, EventKind.UPDATED, event, actor=actor, at=now)
    audit.record(
        "edit_details", "lead", lead.id, user=actor, detail={"patient_id": patient.id, "fields": result.changed}
    )
    db.session.flush()

    result.relocated = bool(ADDRESS_FIELDS & set(patient_changed))
    if result.relocated:
        reset_patient_location(patient, now)
        if provider_name(config) == "offline":
            outcome = geocode_patient(patient, now, config)  # a dictionary look-up: the specialist waits for it
            result.located = patient.geocode_status == GeocodeStatus.OK and bool(outcome)
        else:
            # Never wait on the network in a request: clear the stale match so the enrich_new job
            # locates and matches these leads within seconds (the workspace says so meanwhile).
            db.session.execute(
                sa.update(Lead.__table__)
                .where(
                    Lead.__table__.c.patient_id == patient.id,
                    Lead.__table__.c.status.in_([s.value for s in OPEN_STATUSES]),
                )
                .values(matched_at=None, match_result=None, eligibility=None)
            )
            db.session.expire(lead, ["matched_at", "match_result", "eligibility"])
            return result
        result.rematched = rematch_patient(patient, now, trigger="details edited", actor=actor)
    elif "condition_id" in lead_changed or "preferred_mode" in lead_changed or "date_of_birth" in patient_changed:
        # Eligibility reads the condition and the age; matching reads both and the visit mode.
        match_and_store(lead, now, actor=actor, trigger="details edited")
        result.rematched = 1
    return result


def confirm_adult(lead: Lead, *, actor: User, now: datetime) -> int:
    """The patient said on the phone they are 18 or older (the request form does not ask): the age
    check of every open lead of theirs passes where the state's minimum is 18. Returns how many
    leads were checked and matched again; 0 when it was confirmed already."""
    from crm.services.enrichment import rematch_patient

    if not lead.is_open:
        raise ValueError("This lead is closed; reopen it before changing what it records.")
    patient = lead.patient
    if patient.age_confirmed:
        return 0
    patient.age_confirmed = True
    lead.last_activity_at = now
    add_event(lead, EventKind.UPDATED, {"fields": ["age_confirmed"]}, actor=actor, at=now)
    audit.record(
        "edit_details", "lead", lead.id, user=actor, detail={"patient_id": patient.id, "fields": ["age_confirmed"]}
    )
    db.session.flush()
    return rematch_patient(patient, now, trigger="age confirmed", actor=actor)
