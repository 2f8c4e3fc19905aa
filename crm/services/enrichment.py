"""Enrichment of a lead: locate the patient, check eligibility, match physicians; and the retry sweep.

``enrich_lead`` runs for each new lead a few seconds after intake stored it (the ``enrich_new``
job, crm/services/pipeline.py); a failed geocode is retried by the ``geocode_retry`` job. It leaves the patient
``pending`` with a backoff; the lead is matched anyway (a lead without a location still gets its
telehealth list) and matched again once located. After the last attempt the patient is ``failed``
and admins get a notification.

Storing a match does not bump the lead's optimistic-locking version: it is the system's annotation,
and a specialist typing a note must not get a conflict because a background re-match landed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from crm.extensions import db
from crm.logging_setup import error_text
from crm.models import Lead, Patient, Physician, User
from crm.models.enums import OPEN_STATUSES, EventKind, GeocodeStatus
from crm.services.geocoding import (
    Address,
    AddressChanged,
    ensure_address_unchanged,
    geocode_patient,
    get_geocoder,
    max_attempts,
    record_geocode_failure,
)
from crm.services.matching import match_lead
from crm.services.notifications import active_admins, notify
from crm.services.timeline import add_event

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=10)  # a claimed patient is free again if the worker died


def store_match(lead: Lead, result: dict, now: datetime) -> None:
    """Write eligibility and match result with a plain UPDATE (no version bump), keep the object in step."""
    values = {"eligibility": result["eligibility"], "match_result": result, "matched_at": now}
    db.session.flush()  # pending changes of the lead go first, with their own version check
    db.session.execute(sa.update(Lead.__table__).where(Lead.__table__.c.id == lead.id).values(**values))
    for name, value in values.items():
        set_committed_value(lead, name, value)


def _summary(result: dict) -> dict:
    cands = result["candidates"]
    return {
        "candidates": len(cands),
        "in_person": sum(1 for c in cands if c["mode"] == "in_person"),
        "telehealth": sum(1 for c in cands if c["mode"] == "telehealth"),
        "excluded": len(result["excluded"]),
        "radius_miles": result["rules"]["radius_miles"],
        "eligible": result["eligibility"].get("eligible"),
    }


def match_and_store(
    lead: Lead, now: datetime, *, actor: User | None = None, trigger: str = "intake", event: bool = True
) -> dict:
    result = match_lead(lead, now)
    store_match(lead, result, now)
    if event:
        add_event(lead, EventKind.MATCHED, {**_summary(result), "trigger": trigger}, actor=actor, at=now)
    return result


def _geocode_event(lead: Lead, patient: Patient, outcome, now: datetime) -> None:
    if outcome.ok:
        add_event(
            lead,
            EventKind.GEOCODED,
            {"precision": str(patient.geocode_precision), "state": patient.state, "timezone": patient.timezone},
            at=now,
        )
    elif outcome.final:
        add_event(
            lead, EventKind.GEOCODE_FAILED, {"error": outcome.error, "attempts": patient.geocode_attempts}, at=now
        )


def _lease(patient: Patient, now: datetime) -> bool:
    """Claim a due pending patient inside the current transaction (no commit): the geocode_retry
    job's compare-and-set on ``geocode_next_at`` then finds it taken, so one patient is never sent
    to the geocoder twice at once. False when it is backing off or someone else holds it."""
    seen = patient.geocode_next_at
    if seen is not None and seen > now:
        return False
    t = Patient.__table__.c
    same = t.geocode_next_at.is_(None) if seen is None else t.geocode_next_at == seen
    taken = db.session.execute(
        sa.update(Patient.__table__)
        .where(t.id == patient.id, t.geocode_status == GeocodeStatus.PENDING.value, same)
        .values(geocode_next_at=now + CLAIM_LEASE)
    ).rowcount
    if taken == 1:
        set_committed_value(patient, "geocode_next_at", now + CLAIM_LEASE)
    return taken == 1


def enrich_lead(lead: Lead, now: datetime | None = None, config: Mapping | None = None) -> dict:
    """Geocode the patient if needed, then eligibility and matching, stored on the lead. Flushes only.

    At intake this is part of receiving the request: its result is on the lead (``matched_at``, the
    workspace panels) rather than in extra timeline events; the timeline records what happens later
    (located by the retry job, re-matches) and a failed geocode.
    """
    now = now or datetime.now(UTC)
    patient = lead.patient
    if patient.geocode_status == GeocodeStatus.PENDING and _lease(patient, now):
        located = Address.of(patient)
        outcome = geocode_patient(patient, now, config)
        ensure_address_unchanged(patient, located)
        if outcome.final and not outcome.ok:
            _geocode_event(lead, patient, outcome, now)
            _notify_admins_failed(lead, patient, now)
    if lead.match_result is not None:  # matched before, queued again: its state's program changed
        return match_and_store(lead, now, trigger="program_changed")
    return match_and_store(lead, now, trigger="intake", event=False)


def rematch_lead(lead: Lead, actor: User | None, now: datetime | None = None) -> dict:
    """Recompute eligibility and the match on demand (the workspace's Re-match button, the CLI)."""
    now = now or datetime.now(UTC)
    return match_and_store(lead, now, actor=actor, trigger="manual" if actor is not None else "command")


def rematch_patient(patient: Patient, now: datetime, trigger: str, actor: User | None = None) -> int:
    """Re-match every open lead of a patient (its location changed); returns how many."""
    leads = db.session.scalars(
        sa.select(Lead).where(Lead.patient_id == patient.id, Lead.status.in_([s.value for s in OPEN_STATUSES]))
    ).all()
    for lead in leads:
        match_and_store(lead, now, trigger=trigger, actor=actor)
    return len(leads)


def _notify_admins_failed(lead: Lead | None, patient: Patient, now: datetime) -> int:
    admins = active_admins()
    what = f"Lead #{lead.id}" if lead is not None else f"Patient #{patient.id}"
    message = (
        f"{what}: the patient's address could not be located after {patient.geocode_attempts} attempt(s) "
        f"({patient.geocode_error}). Check the ZIP with the patient; only the telehealth list is available."
    )
    sent = 0
    for admin in admins:
        sent += notify(
            admin,
            "geocode_failed",
            message,
            lead=lead,
            # per failure, not per patient for ever: a fixed address that fails again is news again
            dedupe_key=f"geocode:{patient.id}:{lead.id if lead else 0}:{now:%Y%m%d%H%M}:{admin.id}",
            at=now,
        )
    return sent


@dataclass
class RetrySummary:
    claimed: int = 0
    located: int = 0
    pending: int = 0
    failed: int = 0
    rematched: int = 0
    unavailable: int = 0  # of the pending: the geocoder did not answer
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.claimed} patient(s) tried: {self.located} located, {self.pending} still pending, "
            f"{self.failed} failed for good; {self.rematched} lead(s) re-matched"
            + (f"; {len(self.errors)} error(s): {', '.join(sorted(set(self.errors)))}" if self.errors else "")
        )

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("claimed", "located", "pending", "failed", "rematched")}


def _due(t, now: datetime, ignore_backoff: bool):
    due = t.geocode_status == GeocodeStatus.PENDING.value
    if ignore_backoff:
        return due
    return sa.and_(due, sa.or_(t.geocode_next_at.is_(None), t.geocode_next_at <= now))


def _claim(model, row_id: int, seen_next_at, now: datetime) -> bool:
    """Compare-and-set on ``geocode_next_at`` (patients, physicians): only one worker gets a row,
    and the lease frees it again if that worker dies."""
    t = model.__table__.c
    same = t.geocode_next_at.is_(None) if seen_next_at is None else t.geocode_next_at == seen_next_at
    claimed = db.session.execute(
        sa.update(model.__table__)
        .where(t.id == row_id, t.geocode_status == GeocodeStatus.PENDING.value, same)
        .values(geocode_next_at=now + CLAIM_LEASE)
    ).rowcount
    db.session.commit()
    return claimed == 1


def due_patients(now: datetime, limit: int, ignore_backoff: bool = False) -> list[tuple[int, datetime | None]]:
    t = Patient.__table__.c
    return [
        (row.id, row.geocode_next_at)
        for row in db.session.execute(
            sa.select(t.id, t.geocode_next_at)
            .where(_due(t, now, ignore_backoff))
            .order_by(t.geocode_next_at.asc().nulls_first(), t.id)
            .limit(limit)
        )
    ]


def retry_patient(patient_id: int, seen_next_at, now: datetime, config: Mapping, summary: RetrySummary) -> None:
    """Claim one pending patient, geocode it, re-match its open leads, commit."""
    if not _claim(Patient, patient_id, seen_next_at, now):
        return
    summary.claimed += 1
    try:
        patient = db.session.get(Patient, patient_id)
        located = Address.of(patient)
        outcome = geocode_patient(patient, now, config)
        ensure_address_unchanged(patient, located)
        leads = db.session.scalars(
            sa.select(Lead)
            .where(Lead.patient_id == patient.id, Lead.status.in_([s.value for s in OPEN_STATUSES]))
            .options(selectinload(Lead.condition))
        ).all()
        for lead in leads:
            _geocode_event(lead, patient, outcome, now)
        if outcome.ok:
            summary.located += 1
        elif outcome.final:
            summary.failed += 1
            for lead in leads:  # a patient whose leads are all closed needs nobody to act
                _notify_admins_failed(lead, patient, now)
        else:
            summary.pending += 1
            summary.unavailable += outcome.unavailable
        trigger = "geocoded" if outcome.ok else "geocode_failed" if outcome.final else "telehealth_only"
        for lead in leads:
            # Located or given up: match again. Still pending: match once, so the lead has its
            # telehealth list while it waits, and again when the ZIP gave it its state.
            if outcome.ok or outcome.final or outcome.changed or lead.matched_at is None:
                match_and_store(lead, now, trigger=trigger)
                summary.rematched += 1
        db.session.commit()
    except AddressChanged:
        # Saved meanwhile: the new address is due at once and was never tried; nothing to count.
        db.session.rollback()
        log.info("geocode retry: patient %s: the address changed while it was being located", patient_id)
    except Exception as exc:  # noqa: BLE001 - one patient's failure never stops the others
        db.session.rollback()
        summary.errors.append(type(exc).__name__)
        log.warning("geocode retry: patient %s failed: %s", patient_id, error_text(exc), exc_info=exc)
        _count_failed_retry(patient_id, error_text(exc, 250), now, config, summary)


def _count_failed_retry(patient_id: int, error: str, now: datetime, config: Mapping, summary: RetrySummary) -> None:
    """An unexpected error counts as an attempt, in a transaction of its own (the rollback took the
    claim's), so a patient that always fails ends ``failed`` with admins told, instead of being
    tried again every lease for ever."""
    try:
        patient = db.session.get(Patient, patient_id)
        if patient is None or patient.geocode_status != GeocodeStatus.PENDING:
            return
        if record_geocode_failure(patient, error, False, now, config):
            summary.failed += 1
            leads = db.session.scalars(
                sa.select(Lead).where(Lead.patient_id == patient.id, Lead.status.in_([s.value for s in OPEN_STATUSES]))
            ).all()
            for lead in leads:
                _notify_admins_failed(lead, patient, now)
        db.session.commit()
    except Exception as again:  # noqa: BLE001 - the lease still brings the patient back later
        db.session.rollback()
        log.warning("geocode retry: patient %s attempt not counted: %s", patient_id, error_text(again))


def retry_pending_geocodes(
    now: datetime | None = None, limit: int = 100, config: Mapping | None = None
) -> RetrySummary:
    """The ``geocode_retry`` job: locate due pending patients, re-match their open leads.

    Each patient is claimed, then committed on its own, so a slow or failing geocoder never
    holds a long transaction and one bad row never undoes the others.
    """
    now = now or datetime.now(UTC)
    config = config if config is not None else current_app.config
    get_geocoder(config)  # a misconfigured geocoder fails the job loudly, before claiming anything
    summary = RetrySummary()
    for patient_id, seen_next_at in due_patients(now, limit):
        retry_patient(patient_id, seen_next_at, now, config, summary)
    return summary


@dataclass
class PhysicianRetrySummary:
    claimed: int = 0
    located: int = 0
    pending: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.claimed} physician(s) tried: {self.located} located, {self.pending} still pending, "
            f"{self.failed} failed for good"
        )


def _notify_admins_physician_failed(physician: Physician, now: datetime) -> int:
    admins = active_admins()
    message = (
        f"Physician {physician.full_name} (NPI {physician.npi}): the practice address could not be located "
        f"after {physician.geocode_attempts} attempt(s) ({physician.geocode_error}). They are not matched by "
        "distance until the address is fixed in Admin > Physicians."
    )
    key = f"geocode-physician:{physician.id}:{now:%Y%m%d%H%M}"  # per failure: a later one is news again
    return sum(notify(admin, "geocode_failed", message, dedupe_key=f"{key}:{admin.id}", at=now) for admin in admins)


def retry_pending_physicians(now: datetime, limit: int, config: Mapping) -> PhysicianRetrySummary:
    """Active physicians left ``pending`` (a geocoder outage at save or import), due by their backoff:
    claim, geocode, commit one by one; the last failed attempt notifies the admins."""
    from crm.services.geocoding import geocode_physician

    t = Physician.__table__.c
    due = db.session.execute(
        sa.select(t.id, t.geocode_next_at)
        .where(
            t.active.is_(True),
            t.geocode_status == GeocodeStatus.PENDING.value,
            sa.or_(t.geocode_next_at.is_(None), t.geocode_next_at <= now),
        )
        .order_by(t.geocode_next_at.asc().nulls_first(), t.id)
        .limit(limit)
    ).all()
    summary = PhysicianRetrySummary()
    for physician_id, seen_next_at in due:
        if not _claim(Physician, physician_id, seen_next_at, now):
            continue
        summary.claimed += 1
        try:
            physician = db.session.get(Physician, physician_id)
            located = Address.of(physician)
            ok = geocode_physician(physician, config, now)
            ensure_address_unchanged(physician, located)
            if ok:
                summary.located += 1
            elif physician.geocode_status == GeocodeStatus.FAILED:
                summary.failed += 1
                _notify_admins_physician_failed(physician, now)
            else:
                summary.pending += 1
            db.session.commit()
        except Exception as exc:  # noqa: BLE001 - the lease brings it back later
            db.session.rollback()
            log.warning("geocode retry: physician %s failed (%s)", physician_id, type(exc).__name__)
    return summary


def geocode_backlog_status() -> dict:
    """Counts for the CLI and admins: how many patients wait, and how many gave up."""
    t = Patient.__table__.c
    rows = db.session.execute(sa.select(t.geocode_status, sa.func.count()).group_by(t.geocode_status)).all()
    counts = {str(s): n for s, n in rows}
    return {
        "pending": counts.get("pending", 0),
        "failed": counts.get("failed", 0),
        "ok": counts.get("ok", 0),
        "max_attempts": max_attempts(current_app.config),
    }
