"""Who works which lead: "get next lead", auto-assignment, manual (re)assignment (SPEC 7).

A lead is never assigned to two specialists at once:

- ``claim_next`` reads the most urgent unassigned leads, chooses one (the first whose patient
  can be called now), then claims it with one ``UPDATE ... WHERE id = (SELECT id ... AND
  assignee_id IS NULL) AND assignee_id IS NULL RETURNING id``; on PostgreSQL the inner SELECT
  is ``FOR UPDATE SKIP LOCKED``. A lead someone else claimed first (or holds the lock of)
  updates nothing, and the next choice is tried, so two specialists pressing the button at
  once get two different leads; on SQLite the UPDATE holds the write lock for the statement.
- ``auto_assign`` and manual assignment go through the ORM, whose optimistic
  version check (``Lead.version``) refuses a save based on a stale read.
- A specialist is never auto-assigned past their capacity: on PostgreSQL ``auto_assign`` takes a
  transaction-level advisory lock before it counts open leads, so two assigners (the
  ``enrich_new`` and ``auto_assign`` jobs run on two threads, a second process) take turns and
  the second counts what the first committed. SQLite allows one writer at a time anyway: the
  second writer's stale count ends in "database is locked", not in a lead too many.
"""

from __future__ import annotations

import logging
import zlib
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from crm.extensions import db
from crm.models import Lead, LeadEvent, Patient, User
from crm.models.enums import ContactMethod, EventKind, LeadStatus, Role
from crm.services import followups
from crm.services.calling_window import Window, is_allowed
from crm.services.leads_query import OPEN as OPEN_SQL
from crm.services.settings import auto_assign_enabled
from crm.services.timeline import add_event

log = logging.getLogger(__name__)

OPEN = [s.value for s in (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED, LeadStatus.BOOKED)]
WORKABLE = [s.value for s in (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REACH_LOOKAHEAD = 200  # unassigned leads Get next looks through for one reachable now
GAVE_BACK_LOOKAHEAD = 20  # without a calling window: for one the specialist did not give back
ASSIGNMENT_LOCK_KEY = zlib.crc32(b"appointment-desk:auto-assignment")  # a stable 32-bit key


class AssignmentError(ValueError):
    """A refused (re)assignment; ``str(err)`` is the message to show."""


def urgency_order():
    """Most urgent first: priority, then the oldest (the SLA clock runs longest)."""
    return (Lead.priority.desc(), Lead.created_at.asc(), Lead.id.asc())


def claim_next(user: User, *, now: datetime | None = None, window: Window | None = None) -> Lead | None:
    """Atomically assign the most urgent unassigned lead to ``user``; None when the pool is empty.

    With a calling ``window``, the most urgent lead whose patient can be reached now comes first
    (inside their calling window, or preferring email, or in an unknown zone); when nobody among
    the next ``REACH_LOOKAHEAD`` can be, the most urgent of all. A lead ``user`` was the last to
    give back comes after the others it is looked up with."""
    now = now or datetime.now(UTC)
    t = Lead.__table__.c
    candidates = (
        sa.select(Lead.id, Patient.timezone, Patient.zip, Patient.preferred_contact_method)
        .join(Patient, Patient.id == Lead.patient_id)
        .where(Lead.assignee_id.is_(None), OPEN_SQL, Lead.status != LeadStatus.BOOKED.value)
        .order_by(*urgency_order())
        .limit(REACH_LOOKAHEAD if window is not None else GAVE_BACK_LOOKAHEAD)
    )
    postgres = db.session.get_bind().dialect.name == "postgresql"
    passed: set[int] = set()
    for _ in range(8):  # another specialist may take the chosen lead first: choose again
        rows = db.session.execute(candidates.where(Lead.id.not_in(passed)) if passed else candidates).all()
        if not rows:
            return None
        # A lead this specialist just gave back comes last: only when nothing else is waiting.
        gave_back = {i for i, u in last_returned_by([r.id for r in rows]).items() if u == user.id}
        rows = [r for r in rows if r.id not in gave_back] or rows
        choice = next((r.id for r in rows if _reachable(r, now, window)), rows[0].id)
        free = sa.select(t.id).where(t.id == choice, t.assignee_id.is_(None), OPEN_SQL)
        if postgres:  # a lead another claimer holds is passed over, not waited for
            free = free.with_for_update(skip_locked=True)
        claim = (
            sa.update(Lead.__table__)
            .where(t.id == free.scalar_subquery(), t.assignee_id.is_(None))
            .values(assignee_id=user.id, assigned_at=now, version=t.version + 1, updated_at=now)
            .returning(t.id)
        )
        lead_id = db.session.execute(claim).scalar()
        if lead_id is not None:
            break
        passed.add(choice)
    else:
        return None
    lead = db.session.get(Lead, lead_id, populate_existing=True)
    user.last_assigned_at = now
    add_event(lead, EventKind.ASSIGNED, {"to": user.id, "by": "get_next"}, actor=user, at=now)
    followups.hand_over(lead, user.id, now)
    return lead


def _reachable(row, now: datetime, window: Window | None) -> bool:
    if window is None or row.preferred_contact_method == ContactMethod.EMAIL:
        return True
    # Not yet located: the ZIP's zone, as the call form and the SLA clock take it.
    zone = followups.zone_of(row.timezone, row.zip)
    return zone is None or is_allowed(now, zone, window)


def unowned_booked_count() -> int:
    """Booked leads in Unassigned (their owner was deactivated or let them go): ``claim_next``
    skips them, so the queue says how many wait for someone to take them by hand."""
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Lead)
        .where(Lead.assignee_id.is_(None), Lead.status == LeadStatus.BOOKED.value)
    )


def open_counts(user_ids: list[int]) -> dict[int, int]:
    if not user_ids:
        return {}
    rows = db.session.execute(
        sa.select(Lead.assignee_id, sa.func.count())
        .where(Lead.assignee_id.in_(user_ids), Lead.status.in_(OPEN))
        .group_by(Lead.assignee_id)
    ).all()
    return dict(rows)


def last_returned_by(lead_ids: list[int]) -> dict[int, int]:
    """Who gave each lead back to the pool most recently (its last ``unassigned`` event's owner)."""
    if not lead_ids:
        return {}
    rows = db.session.execute(
        sa.select(LeadEvent.lead_id, LeadEvent.data)
        .where(LeadEvent.lead_id.in_(lead_ids), LeadEvent.kind == EventKind.UNASSIGNED)
        .order_by(LeadEvent.created_at, LeadEvent.id)
    ).all()
    returned = {}
    for lead_id, data in rows:
        returned[lead_id] = (data or {}).get("from")
    return {lead_id: user_id for lead_id, user_id in returned.items() if user_id is not None}


def patient_owner(lead: Lead) -> User | None:
    """The on-shift specialist who holds another open lead of the same patient (the latest one
    assigned): a returning patient's new request goes to them, so one person calls the patient."""
    if lead.patient_id is None:
        return None
    return db.session.scalar(
        sa.select(User)
        .join(Lead, Lead.assignee_id == User.id)
        .where(Lead.patient_id == lead.patient_id, Lead.id != lead.id, *_open_and_held_on_shift(Lead))
        .order_by(Lead.assigned_at.desc().nulls_last(), Lead.id.desc())
        .limit(1)
    )


def _open_and_held_on_shift(lead) -> tuple:
    """Conditions on ``lead`` (the model or an alias) joined to its assignee ``User``: open, and held
    by an active specialist on shift."""
    return (lead.status.in_(OPEN), User.role == Role.SPECIALIST, User.active.is_(True), User.on_shift.is_(True))


def pick_assignee(language: str | None, *, exclude: set[int] | frozenset[int] = frozenset()) -> User | None:
    """Round robin among on-shift, active specialists under capacity, preferring ``language``;
    ``exclude`` are people this lead must not go to (who just gave it back)."""
    stmt = sa.select(User).where(User.role == Role.SPECIALIST, User.active.is_(True), User.on_shift.is_(True))
    people = [u for u in db.session.scalars(stmt) if u.id not in exclude]
    counts = open_counts([u.id for u in people])
    under = [u for u in people if counts.get(u.id, 0) < (u.capacity or 0)]
    if not under:
        return None
    lang = (language or "").lower()
    speaking = [u for u in under if lang and lang in [x.lower() for x in (u.languages or [])]]
    pool = speaking or under
    return min(pool, key=lambda u: (u.last_assigned_at or _EPOCH, u.id))


def _one_assigner_at_a_time() -> None:
    """PostgreSQL: wait for any other auto-assignment to commit, and keep the others waiting until
    this transaction ends, so the capacity count that follows sees every lead already given out."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(ASSIGNMENT_LOCK_KEY)))


def auto_assign(lead: Lead, *, now: datetime | None = None) -> User | None:
    """Assign a lead by round robin; None when off, already assigned or nobody can take it.

    The owner of the patient's other open lead gets it first, whatever their load (one caller per
    patient); the specialist who last gave the lead back never gets it straight back. Writes an
    ``assigned`` event and flushes (a stale read raises StaleDataError).
    """
    now = now or datetime.now(UTC)
    if not auto_assign_enabled(current_app.config):
        return None
    if lead.assignee_id is not None or lead.status.value not in WORKABLE:
        return None
    _one_assigner_at_a_time()
    gave_back = set(last_returned_by([lead.id]).values())
    by = "patient_owner"
    user = patient_owner(lead)
    if user is None or user.id in gave_back:
        by = "auto"
        user = pick_assignee(lead.patient.language if lead.patient else None, exclude=gave_back)
    if user is None:
        return None
    lead.assignee_id = user.id
    lead.assigned_at = now
    user.last_assigned_at = now
    add_event(lead, EventKind.ASSIGNED, {"to": user.id, "by": by}, at=now)
    followups.hand_over(lead, user.id, now)
    db.session.flush()
    return user


def auto_assign_sweep(now: datetime, limit: int = 200) -> int:
    """Scheduler job: offer waiting unassigned leads (oldest first) to whoever is on shift."""
    if not auto_assign_enabled(current_app.config):
        return 0
    ids = db.session.scalars(
        sa.select(Lead.id)
        .where(Lead.assignee_id.is_(None), OPEN_SQL, Lead.status != LeadStatus.BOOKED.value)
        .order_by(*urgency_order())
        .limit(limit)
    ).all()
    assigned = 0
    owned: set[int] | None = None  # once everyone is full: the leads whose patient's owner still takes them
    for lead_id in ids:
        if owned is not None and lead_id not in owned:
            continue
        lead = db.session.get(Lead, lead_id)
        if lead is None:
            continue
        try:
            with db.session.begin_nested():
                # One sweep, one clock reading: each assignment a microsecond later, so round robin
                # (who was dealt a lead longest ago) has no ties for the lowest id to break.
                user = auto_assign(lead, now=now + timedelta(microseconds=assigned))
        except StaleDataError:
            continue  # someone took it meanwhile
        if user is None:
            if owned is None and pick_assignee(None) is None:
                owned = _with_patient_owner(ids)  # nobody has room: only those go on
            continue
        assigned += 1
    return assigned


def _with_patient_owner(lead_ids: list[int]) -> set[int]:
    """Of ``lead_ids``, those whose patient has another open lead held by an on-shift specialist."""
    other = sa.orm.aliased(Lead)
    held = (
        sa.select(other.id)
        .join(User, User.id == other.assignee_id)
        .where(other.patient_id == Lead.patient_id, other.id != Lead.id, *_open_and_held_on_shift(other))
        .exists()
    )
    return set(db.session.scalars(sa.select(Lead.id).where(Lead.id.in_(lead_ids), held)))


def assign(lead: Lead, user: User, *, actor: User, now: datetime | None = None) -> Lead:
    """Assign to ``user`` ("assign to me", or an admin's reassignment)."""
    now = now or datetime.now(UTC)
    if not user.active:
        raise AssignmentError(f"{user.name} is deactivated and cannot take leads.")
    if actor.id != user.id and not actor.is_admin:
        raise AssignmentError("Only an admin can assign a lead to someone else.")
    if lead.assignee_id is not None and lead.assignee_id != actor.id and not actor.is_admin:
        raise AssignmentError(f"This lead is already assigned to {lead.assignee.name}; ask an admin to reassign it.")
    if lead.assignee_id == user.id:
        raise AssignmentError(f"The lead is already assigned to {user.name}.")
    if not lead.is_open:
        raise AssignmentError("A closed lead cannot be assigned.")
    previous = lead.assignee_id
    lead.assignee_id = user.id
    lead.assignee = user
    lead.assigned_at = now
    lead.last_activity_at = now
    by = "self" if actor.id == user.id else "admin"
    add_event(lead, EventKind.ASSIGNED, {"to": user.id, "from": previous, "by": by}, actor=actor, at=now)
    followups.hand_over(lead, user.id, now)
    return lead


def take_if_unassigned(lead: Lead, actor: User, now: datetime | None = None) -> bool:
    """A specialist who calls or books a lead waiting in the pool is working it: it becomes theirs,
    or auto-assignment would hand it to a colleague and the patient would get two callers. Admins,
    who take no leads of their own, leave it where it is."""
    if lead.assignee_id is not None or not lead.is_open or actor.is_admin:
        return False
    assign(lead, actor, actor=actor, now=now)
    return True


def unassign(lead: Lead, *, actor: User, now: datetime | None = None, reason: str = "") -> Lead:
    """Give the lead back to the pool (its owner or an admin)."""
    now = now or datetime.now(UTC)
    if lead.assignee_id is None:
        raise AssignmentError("The lead is not assigned to anyone.")
    if lead.assignee_id != actor.id and not actor.is_admin:
        raise AssignmentError("Only the assignee or an admin can unassign this lead.")
    previous = lead.assignee_id
    lead.assignee_id = None
    lead.assignee = None
    lead.assigned_at = None
    lead.last_activity_at = now
    data = {"from": previous, "reason": reason} if reason else {"from": previous}
    add_event(lead, EventKind.UNASSIGNED, data, actor=actor, at=now)
    followups.hand_over(lead, None, now)
    return lead
