"""Lead statuses: one transition table, one function that changes status (SPEC 4).

``new -> attempting -> contacted -> booked -> completed``; ``lost`` from any open
status with a reason; ``booked -> contacted`` when the appointment is cancelled
(or the patient did not show); ``lost -> new|attempting|contacted`` is an admin's
"reopen". Everything else is refused with a message saying why. Every change is a
``status_changed`` LeadEvent.

Booked, completed and back-to-contacted follow the appointment (``by_appointment``): booking
one makes the lead booked, recording its outcome completes it or sends it back to contacted.
Nobody sets them by hand, so a booked lead always has its appointment. Closing a booked lead
as lost cancels the appointment it had (no reminder goes to a patient who said no).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value

from crm.extensions import db
from crm.models import FollowUp, Lead, User
from crm.models.enums import AppointmentStatus, EventKind, LeadStatus, LostReason
from crm.services import followups
from crm.services.timeline import add_event

S = LeadStatus


@dataclass(frozen=True)
class Rule:
    label: str  # the button/option text
    admin_only: bool = False
    needs_reason: bool = False  # lost needs a LostReason
    by_appointment: bool = False  # made by booking and appointment outcomes (crm/services/booking.py)


TRANSITIONS: dict[tuple[LeadStatus, LeadStatus], Rule] = {
    (S.NEW, S.ATTEMPTING): Rule("Attempting contact"),
    (S.NEW, S.LOST): Rule("Close as lost", needs_reason=True),
    (S.ATTEMPTING, S.CONTACTED): Rule("Contacted"),
    (S.ATTEMPTING, S.LOST): Rule("Close as lost", needs_reason=True),
    (S.CONTACTED, S.BOOKED): Rule("Booked", by_appointment=True),
    (S.CONTACTED, S.LOST): Rule("Close as lost", needs_reason=True),
    (S.BOOKED, S.COMPLETED): Rule("Completed", by_appointment=True),
    (S.BOOKED, S.CONTACTED): Rule("Back to contacted (appointment cancelled)", by_appointment=True),
    (S.BOOKED, S.LOST): Rule("Close as lost", needs_reason=True),
    (S.LOST, S.NEW): Rule("Reopen as new", admin_only=True),
    (S.LOST, S.ATTEMPTING): Rule("Reopen as attempting", admin_only=True),
    (S.LOST, S.CONTACTED): Rule("Reopen as contacted", admin_only=True),
}

CLOSED = (S.COMPLETED, S.LOST)

LOST_REASON_LABELS = {
    LostReason.UNREACHABLE: "Unreachable",
    LostReason.NOT_ELIGIBLE: "Not eligible",
    LostReason.NOT_INTERESTED: "Not interested",
    LostReason.PRICE: "Price",
    LostReason.CHOSE_ELSEWHERE: "Chose elsewhere",
    LostReason.DUPLICATE: "Duplicate",
    LostReason.SPAM: "Spam",
    LostReason.OTHER: "Other",
}


class TransitionError(ValueError):
    """A refused status change; ``str(err)`` is the message to show."""


def allowed_targets(lead: Lead, actor: User | None) -> list[tuple[LeadStatus, Rule]]:
    """The transitions this actor may make from the lead's current status (for the UI)."""
    is_admin = actor is None or actor.is_admin
    return [
        (to, rule)
        for (frm, to), rule in TRANSITIONS.items()
        if frm == lead.status and (is_admin or not rule.admin_only) and not rule.by_appointment
    ]


BY_APPOINTMENT = (
    "A lead becomes booked when an appointment is booked for it, and completed (or contacted again) "
    "when the appointment's outcome is recorded: use Book or the appointment's outcome on the lead's page."
)


def check_transition(
    current: LeadStatus,
    to: LeadStatus,
    *,
    is_admin: bool,
    reason: LostReason | str | None = None,
    by_appointment: bool = False,
) -> Rule:
    """The Rule for ``current -> to`` or TransitionError explaining the refusal (pure).
    ``by_appointment``: the change comes from booking or an appointment's outcome."""
    if current == to:
        raise TransitionError(f"The lead is already {to.value}.")
    rule = TRANSITIONS.get((current, to))
    if rule is None:
        if current == S.COMPLETED:
            raise TransitionError("A completed lead is closed; its status cannot change.")
        if current == S.LOST:
            raise TransitionError(
                f"A lost lead can only be reopened (as new, attempting or contacted), not moved to {to.value}."
            )
        allowed = ", ".join(t.value for (f, t), r in TRANSITIONS.items() if f == current and not r.by_appointment)
        raise TransitionError(
            f"A lead that is {current.value} cannot move to {to.value}. From {current.value} it can go to: {allowed}."
        )
    if rule.by_appointment and not by_appointment:
        raise TransitionError(BY_APPOINTMENT)
    if rule.admin_only and not is_admin:
        raise TransitionError("Only an admin can reopen a lost lead.")
    if rule.needs_reason:
        valid = {r.value for r in LostReason}
        if not reason or str(reason) not in valid:
            raise TransitionError("Choose why the lead is lost (" + ", ".join(sorted(valid)) + ").")
    return rule


# A move to one of these means the patient was reached: the first sets ``Lead.reached_at``.
REACHED = (S.CONTACTED, S.BOOKED, S.COMPLETED)


def change_status(
    lead: Lead,
    to: LeadStatus | str,
    *,
    actor: User | None,
    reason: LostReason | str | None = None,
    note: str | None = None,
    now: datetime | None = None,
    by_appointment: bool = False,
) -> Lead:
    """Move ``lead`` to ``to`` through the transition table; ``actor`` None is the system.
    ``by_appointment`` is for crm/services/booking.py only (see the module's docstring).

    ``reason`` is the LostReason for ``lost`` and an optional free-text reason
    otherwise. Writes a ``status_changed`` event and flushes; the caller commits.
    """
    now = now or datetime.now(UTC)
    try:
        target = LeadStatus(to)
    except ValueError as exc:
        raise TransitionError(f"Unknown status {to!r}.") from exc
    is_admin = actor is None or actor.is_admin
    check_transition(
        lead.status,
        target,
        is_admin=is_admin,
        reason=reason if target == S.LOST else "ok",
        by_appointment=by_appointment,
    )
    previous = lead.status
    data: dict = {"from": previous.value, "to": target.value}
    if reason:
        data["reason"] = str(reason.value if isinstance(reason, LostReason) else reason)[:200]
    if note:
        data["note"] = note.strip()[:2000]
    lead.status = target
    lead.last_activity_at = now
    if target in (S.ATTEMPTING, S.CONTACTED) and lead.first_contact_at is None:
        # Reached or tried some other way (an email, a text) without a logged call: the first
        # contact is now, for the SLA clock and speed-to-lead alike.
        lead.first_contact_at = now
    if target in REACHED and lead.reached_at is None:
        lead.reached_at = now  # the funnel's "contacted": kept whatever the lead's status later
    if target == S.LOST:
        lead.lost_reason = LostReason(str(reason))
        lead.closed_at = now
    elif target == S.COMPLETED:
        lead.closed_at = now
    elif previous == S.LOST:  # reopened
        lead.lost_reason = None
        lead.closed_at = None
        # The unreachable sweep counts the attempts made since: without this it would close the
        # lead again on its next run (the timeline and this event keep the earlier count).
        data["attempts_before"] = lead.attempts or 0
        lead.attempts = 0
    if target in CLOSED:
        closed = _close_open_follow_ups(lead, now, f"lead {target.value}")
        if closed:
            data["follow_ups_closed"] = closed  # the timeline says so: they leave Due without an entry of their own
    if target == S.LOST:
        _cancel_live_appointments(lead, actor, now)
    add_event(lead, EventKind.STATUS_CHANGED, data, actor=actor, at=now)
    return lead


def _cancel_live_appointments(lead: Lead, actor: User | None, now: datetime) -> None:
    from crm.services.booking import record_outcome  # booking builds on this module

    for appt in lead.live_appointments:
        record_outcome(appt, AppointmentStatus.CANCELLED, actor=actor, note="lead closed as lost", now=now)


def _close_open_follow_ups(lead: Lead, now: datetime, outcome: str) -> int:
    closed = [fu for fu in lead.follow_ups if fu.done_at is None]
    for fu in closed:
        fu.done_at = now
        fu.outcome = outcome
    # Their reminders would otherwise wait unread in Alerts, pointing at a closed lead.
    followups.put_away_alerts(closed, now)
    lead.next_follow_up_at = None
    return len(closed)


def open_follow_ups(lead: Lead) -> list[FollowUp]:
    return [fu for fu in lead.follow_ups if fu.done_at is None]


CALL_OUTCOME_LABELS = {
    "no_answer": "No answer",
    "voicemail": "Left voicemail",
    "wrong_number": "Wrong number",
    "reached": "Reached the patient",
}


def log_call(lead: Lead, outcome: str, *, actor: User, note: str = "", now: datetime | None = None) -> Lead:
    """Record one call attempt; the status follows (new -> attempting, reached -> contacted).

    The first attempt sets ``first_contact_at`` (speed to lead). Call follow-ups that
    were due are closed with this outcome.
    """
    from crm.models.enums import CallOutcome
    from crm.services.followups import complete_due_calls

    now = now or datetime.now(UTC)
    try:
        outcome = CallOutcome(outcome)
    except ValueError as exc:
        raise TransitionError("Choose the call's outcome.") from exc
    if not lead.is_open:
        raise TransitionError("This lead is closed; reopen it before logging calls.")
    _count_attempt(lead, now)
    data = {"outcome": outcome.value, "attempt": lead.attempts}
    if note and note.strip():
        data["note"] = note.strip()[:2000]
    add_event(lead, EventKind.CALL_ATTEMPT, data, actor=actor, at=now)
    if lead.status == S.NEW:
        change_status(lead, S.ATTEMPTING, actor=actor, reason="call attempt", now=now)
    if outcome == CallOutcome.REACHED and lead.status == S.ATTEMPTING:
        change_status(lead, S.CONTACTED, actor=actor, reason="reached by phone", now=now)
    complete_due_calls(lead, actor=actor, outcome=CALL_OUTCOME_LABELS[outcome.value], now=now)
    return lead


def record_message_sent(lead: Lead, channel: str, *, actor: User, now: datetime) -> Lead:
    """An email or a text sent to the patient (its follow-up closed as sent) is a contact attempt like
    a call: counted, the first one stops the speed-to-lead clock, and a new lead moves to attempting."""
    if not lead.is_open:
        return lead
    _count_attempt(lead, now)
    if lead.status == S.NEW:
        change_status(lead, S.ATTEMPTING, actor=actor, reason=f"{channel} sent", now=now)
    return lead


def _count_attempt(lead: Lead, now: datetime) -> None:
    """One more attempt to reach the patient (a call, a text, an email); the first is the first contact."""
    lead.attempts = (lead.attempts or 0) + 1
    if lead.first_contact_at is None:
        lead.first_contact_at = now
    lead.last_activity_at = now


def add_note(lead: Lead, text: str, *, actor: User, now: datetime | None = None) -> Lead:
    now = now or datetime.now(UTC)
    text = (text or "").strip()
    if not text:
        raise TransitionError("Write the note first.")
    # A plain UPDATE, not the ORM's: that would bump the lead's version, and a colleague's form open
    # on this lead (a status change, a booking) would then be refused as a conflict over a note,
    # which changes nothing their form was based on.
    table = Lead.__table__
    db.session.execute(sa.update(table).where(table.c.id == lead.id).values(last_activity_at=now))
    set_committed_value(lead, "last_activity_at", now)
    add_event(lead, EventKind.NOTE, {"text": text[:5000]}, actor=actor, at=now)
    return lead
