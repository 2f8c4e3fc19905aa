"""Follow-ups: the next step of every open lead, in the patient's time (SPEC 7).

A call is only scheduled inside the patient's calling window; outside it the
request is refused with the next allowed time (``CallingWindowError.suggestion``).
``Lead.next_follow_up_at`` mirrors the earliest open follow-up so the queue can
sort and count without a join. Owners are reminded once when one comes due.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app, url_for

from crm.extensions import db
from crm.models import FollowUp, Lead, Notification, Patient, User
from crm.models.enums import ContactMethod, EventKind, FollowUpKind, LeadStatus
from crm.services.calling_window import Window, is_allowed, next_allowed, window_from_config, zone
from crm.services.notifications import key_prefixed, notify
from crm.services.timeline import add_event

log = logging.getLogger(__name__)

PAST_GRACE = timedelta(minutes=5)


class FollowUpError(ValueError):
    """A refused follow-up; ``str(err)`` is the message to show."""


class CallingWindowError(FollowUpError):
    def __init__(self, message: str, suggestion: datetime):
        super().__init__(message)
        self.suggestion = suggestion


def patient_timezone(patient: Patient, fallback: str | None = None) -> tuple[str, bool]:
    """(IANA zone, known?): the geocoded zone, else the ZIP's zone, else the business zone."""
    known = zone_of(patient.timezone, patient.zip)
    if known:
        return known, True
    return fallback or current_app.config.get("BUSINESS_TIMEZONE") or "America/New_York", False


def zone_of(timezone: str | None, zip_code: str | None) -> str | None:
    """A patient's zone from their columns (the geocoded zone, else the ZIP's), or None."""
    if timezone or not zip_code:
        return timezone or None
    # By key from the offline table (``zipcodes.matching`` scans every ZIP: 2.5 ms a look-up, and Get
    # next may look up a couple of hundred patients not yet located).
    from crm.services.geocoding import zip_row

    row = zip_row(zip_code)
    return (row.get("timezone") or None) if row else None


def refresh_next_follow_up(lead: Lead) -> None:
    due = [fu.due_at for fu in lead.follow_ups if fu.done_at is None]
    lead.next_follow_up_at = min(due) if due else None


def schedule(
    lead: Lead,
    *,
    due_at: datetime,
    kind: FollowUpKind | str,
    actor: User,
    note: str = "",
    owner: User | None = None,
    now: datetime | None = None,
    window: Window | None = None,
    automatic: bool = False,
) -> FollowUp:
    """Add a follow-up; a call outside the patient's window raises CallingWindowError. One planned by
    hand replaces the lead's open default next step (``automatic``, planned by ``ensure_next_step``)."""
    now = now or datetime.now(UTC)
    if due_at.tzinfo is None:
        raise FollowUpError("The due time needs a time zone.")
    kind = FollowUpKind(kind)
    if not lead.is_open:
        raise FollowUpError("This lead is closed; reopen it before planning a follow-up.")
    if due_at < now - PAST_GRACE:
        raise FollowUpError("That time is in the past. Pick a time from now on.")
    if due_at > now + timedelta(days=366):
        raise FollowUpError("Pick a time within the next year.")
    tz, _known = patient_timezone(lead.patient)
    if kind == FollowUpKind.CALL:
        window = window or window_from_config(current_app.config)
        if not is_allowed(due_at, tz, window):
            suggestion = next_allowed(due_at, tz, window)
            local = due_at.astimezone(zone(tz))
            raise CallingWindowError(
                f"{local:%a %b %d, %I:%M %p} is outside the patient's calling window "
                f"({window.describe()}, {zone(tz).key}). The next allowed time is "
                f"{suggestion.astimezone(zone(tz)):%a %b %d, %I:%M %p %Z} patient time.",
                suggestion,
            )
    owner = owner or lead.assignee or actor  # None: a job planned it for a lead nobody holds (the pool's)
    if not automatic:
        close_automatic(lead, actor=actor, outcome="replaced by a follow-up planned by hand", now=now)
    fu = FollowUp(
        owner_id=owner.id if owner is not None else None,
        due_at=due_at.astimezone(UTC),
        kind=kind,
        note=(note or "").strip()[:500],
        created_at=now,
        automatic=automatic,
    )
    # Through the collection only: added to the session as well, a lazy load of an unloaded
    # collection would autoflush it in and the append would list it twice.
    lead.follow_ups.append(fu)
    refresh_next_follow_up(lead)
    lead.last_activity_at = now
    add_event(
        lead,
        EventKind.FOLLOW_UP_SCHEDULED,
        {"due_at": fu.due_at.isoformat(), "kind": kind.value, "owner": fu.owner_id, "note": fu.note, "patient_tz": tz},
        actor=actor,
        at=now,
    )
    return fu


# --------------------------------------------------------------------------- the next step (SPEC 2.7)

DEFAULT_NEXT_ATTEMPT_HOURS = "4,24,48"
NEXT_STEP_STATUSES = (LeadStatus.ATTEMPTING, LeadStatus.CONTACTED)
KIND_FOR_CONTACT = {ContactMethod.PHONE: FollowUpKind.CALL, ContactMethod.TEXT: FollowUpKind.SMS}


def parse_attempt_hours(spec: str | None) -> tuple[int, ...]:
    """``NEXT_ATTEMPT_HOURS``: hours from an unanswered attempt to the next, by attempt ("4,24,48":
    4 h after the first, a day after the second, two days after each later one)."""
    try:
        hours = tuple(int(part) for part in str(spec or DEFAULT_NEXT_ATTEMPT_HOURS).split(","))
    except ValueError:
        hours = ()
    if not hours or any(h < 1 or h > 24 * 30 for h in hours):
        raise ValueError("expected whole hours from 1 to 720, comma-separated, e.g. 4,24,48")
    return hours


def needs_next_step(lead: Lead) -> bool:
    """A lead someone holds, being worked (attempting or contacted), with nothing planned. A new lead's
    next step is its first call, due by the speed-to-lead clock; a booked lead's is its visit; a lead
    in the pool waits to be taken."""
    return (
        lead.assignee_id is not None
        and lead.status in NEXT_STEP_STATUSES
        and not any(fu.done_at is None for fu in lead.follow_ups)
    )


def default_next_step(
    status: LeadStatus, attempts: int, contact: ContactMethod | None, now: datetime, tz: str, window: Window, config
) -> tuple[datetime, FollowUpKind, str]:
    """(due, kind, note) of the step planned for a lead left without one: after unanswered
    attempts the next attempt (NEXT_ATTEMPT_HOURS), after the patient was reached a check-in
    (CHECK_IN_HOURS); by the patient's preferred channel, a call or a text inside their calling window."""
    kind = KIND_FOR_CONTACT.get(contact, FollowUpKind.EMAIL) if contact else FollowUpKind.CALL
    if status == LeadStatus.CONTACTED:
        hours = int(config.get("CHECK_IN_HOURS", 24))
        note = "Check in: the patient was reached but nothing is booked yet (planned automatically)."
    else:
        cadence = parse_attempt_hours(config.get("NEXT_ATTEMPT_HOURS"))
        hours = cadence[min(max(attempts, 1), len(cadence)) - 1]
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        note = f"Try again: {tries} so far without reaching the patient (planned automatically)."
    due = now + timedelta(hours=hours)
    if kind in (FollowUpKind.CALL, FollowUpKind.SMS) and not is_allowed(due, tz, window):  # no texts at night either
        due = next_allowed(due, tz, window)
    return due, kind, note


def ensure_next_step(lead: Lead, *, actor: User | None, now: datetime | None = None) -> FollowUp | None:
    """Plan the default next step when the lead has none (``needs_next_step``); the follow-up
    planned, or None. The owner is the lead's holder; it shows in their Due view when it comes due."""
    if not needs_next_step(lead):
        return None
    now = now or datetime.now(UTC)
    window = window_from_config(current_app.config)
    tz, _known = patient_timezone(lead.patient)
    contact = lead.patient.preferred_contact_method if lead.patient else None
    wrong_number = _last_call_outcome(lead) == "wrong_number"
    if wrong_number:
        if not (lead.patient and lead.patient.email):
            return None  # no number to call and no email: the record needs fixing, or the lead closing
        contact = ContactMethod.EMAIL
    due, kind, note = default_next_step(lead.status, lead.attempts or 0, contact, now, tz, window, current_app.config)
    if wrong_number:
        note = "The phone number is wrong: email the patient to ask for theirs (planned automatically)."
    return schedule(
        lead, due_at=due, kind=kind, actor=actor, owner=lead.assignee, note=note, now=now, window=window, automatic=True
    )


def _last_call_outcome(lead: Lead) -> str | None:
    calls = [e for e in lead.events if e.kind == EventKind.CALL_ATTEMPT]
    return (max(calls, key=lambda e: (e.created_at, e.id or 0)).data or {}).get("outcome") if calls else None


def close_automatic(lead: Lead, *, actor: User | None, outcome: str, now: datetime) -> int:
    """Close the lead's open default next steps: what a specialist did or planned replaces them."""
    done = 0
    for fu in list(lead.follow_ups):
        if fu.done_at is None and fu.automatic:
            complete(fu, actor=actor, outcome=outcome, now=now)
            done += 1
    return done


def describe_next_step(fu: FollowUp, lead: Lead, viewer_tz: str | None) -> str:
    """ "Next step planned: a call on Fri Dec 04, 10:00 AM EST patient time" (and the viewer's time)."""
    ptz = patient_timezone(lead.patient)[0]
    what = {FollowUpKind.CALL: "a call", FollowUpKind.SMS: "a text", FollowUpKind.EMAIL: "an email"}[fu.kind]
    text = f"Next step planned: {what} on {fu.due_at.astimezone(zone(ptz)):%a %b %d, %I:%M %p %Z} patient time"
    if viewer_tz and zone(viewer_tz).key != zone(ptz).key:
        text += f" ({fu.due_at.astimezone(zone(viewer_tz)):%a %I:%M %p %Z} yours)"
    return text + "; plan another follow-up by hand to replace it."


def complete(fu: FollowUp, *, actor: User, outcome: str = "done", now: datetime | None = None) -> FollowUp:
    now = now or datetime.now(UTC)
    if fu.done_at is not None:
        raise FollowUpError("This follow-up is already done.")
    fu.done_at = now
    fu.outcome = (outcome or "done").strip()[:200]
    # Its "follow-up due" alert has been dealt with: it should not wait unread in Alerts.
    put_away_alerts([fu], now)
    lead = fu.lead
    refresh_next_follow_up(lead)
    lead.last_activity_at = now
    add_event(
        lead,
        EventKind.FOLLOW_UP_DONE,
        {"follow_up_id": fu.id, "kind": fu.kind.value, "outcome": fu.outcome},
        actor=actor,
        at=now,
    )
    return fu


# What closing a follow-up can say, by kind: a call follow-up is closed by the call's outcome (which
# logs the attempt, so the attempt count and the no-answer auto-close see it) or as not needed.
DONE_OUTCOMES = {
    FollowUpKind.CALL: ("reached", "no_answer", "voicemail", "wrong_number", "not_needed"),
    FollowUpKind.EMAIL: ("done", "not_needed"),
    FollowUpKind.SMS: ("done", "not_needed"),
}
DONE_OUTCOME_LABELS = {
    "done": "Sent",
    "not_needed": "Not needed",
    "reached": "Called: reached",
    "no_answer": "Called: no answer",
    "voicemail": "Called: left voicemail",
    "wrong_number": "Called: wrong number",
}


def close(fu: FollowUp, *, actor: User, outcome: str, now: datetime | None = None) -> FollowUp:
    """Close a follow-up from its "Done" button: a call outcome logs the call attempt first."""
    from crm.services import workflow

    now = now or datetime.now(UTC)
    if fu.done_at is not None:
        raise FollowUpError("This follow-up is already done.")
    allowed = DONE_OUTCOMES.get(fu.kind, ("done", "not_needed"))
    if outcome not in allowed:
        labels = ", ".join(DONE_OUTCOME_LABELS[o] for o in allowed)
        raise FollowUpError(f"A {fu.kind.value} follow-up is closed as one of: {labels}.")
    if outcome in workflow.CALL_OUTCOME_LABELS:
        workflow.log_call(fu.lead, outcome, actor=actor, now=now)  # closes the call follow-ups due by now
        if fu.done_at is not None:
            return fu
        outcome = workflow.CALL_OUTCOME_LABELS[outcome]
    elif outcome == "done" and fu.kind in (FollowUpKind.EMAIL, FollowUpKind.SMS):
        workflow.record_message_sent(fu.lead, "text" if fu.kind == FollowUpKind.SMS else "email", actor=actor, now=now)
    return complete(fu, actor=actor, outcome=outcome, now=now)


def complete_due_calls(lead: Lead, *, actor: User, outcome: str, now: datetime, due_by: datetime | None = None) -> int:
    """Logging a call closes the call follow-ups that were due (or due within the hour; booking: due
    before the visit, ``due_by``), and the default next step whenever it is due: the call is the next
    step it stood for."""
    due_by = max(now + timedelta(hours=1), due_by or now)
    done = 0
    for fu in list(lead.follow_ups):
        due = fu.kind == FollowUpKind.CALL and fu.due_at <= due_by
        if fu.done_at is None and (due or fu.automatic):
            complete(fu, actor=actor, outcome=outcome, now=now)
            done += 1
    return done


def put_away_alerts(follow_ups: list[FollowUp], now: datetime) -> None:
    """Mark the "follow-up due" alerts of these follow-ups read: they are done or gone."""
    if follow_ups:
        db.session.execute(
            sa.update(Notification)
            .where(sa.or_(*(_alert_of(fu) for fu in follow_ups)), Notification.read_at.is_(None))
            .values(read_at=now)
            .execution_options(synchronize_session=False)
        )


def _alert_of(fu: FollowUp):
    """Its "follow-up due" alerts: ``follow_up:<id>:<owner>:<when>`` (one per reminder), or
    ``follow_up:<id>`` as written before the key named the owner."""
    key = Notification.dedupe_key
    return sa.or_(key == f"follow_up:{fu.id}", key_prefixed(key, f"follow_up:{fu.id}:"))


def hand_over(lead: Lead, to_user_id: int | None, now: datetime) -> None:
    """The lead changed hands (assigned, reassigned, back to the pool): its open follow-ups go with
    it, whoever planned them (a colleague covering an unassigned lead planned for the lead, not for
    themselves). One already reminded to someone else is reminded again to the new owner, and the
    old owner's alert about it is put away: it is no longer theirs to do."""
    moved = []
    for fu in lead.follow_ups:
        if fu.done_at is not None or fu.owner_id == to_user_id:
            continue
        if fu.reminded_at is not None:
            moved.append(_alert_of(fu))
            if to_user_id is not None:
                fu.reminded_at = None
        fu.owner_id = to_user_id
    if moved:
        db.session.execute(
            sa.update(Notification)
            .where(sa.or_(*moved), Notification.read_at.is_(None))
            .values(read_at=now)
            .execution_options(synchronize_session=False)
        )


def send_reminders(now: datetime, limit: int = 200) -> dict[str, int]:
    """Remind each owner once when a follow-up comes due: a notification and an email."""
    from crm.services.mailer import queue_email

    # Only follow-ups someone can be reminded of: one whose lead has no active owner yet is
    # reminded when someone takes the lead (its follow-ups move to them), not marked done now.
    owner_id = sa.func.coalesce(FollowUp.owner_id, Lead.assignee_id)
    rows = db.session.scalars(
        sa.select(FollowUp.id)
        .join(Lead, Lead.id == FollowUp.lead_id)
        .join(User, User.id == owner_id)
        .where(
            FollowUp.done_at.is_(None),
            FollowUp.reminded_at.is_(None),
            FollowUp.due_at <= now,
            User.active.is_(True),
        )
        .order_by(FollowUp.due_at)
        .limit(limit)
    ).all()
    counts = {"reminded": 0, "emailed": 0}
    for fu_id in rows:
        claimed = db.session.execute(
            sa.update(FollowUp.__table__)
            .where(FollowUp.__table__.c.id == fu_id, FollowUp.__table__.c.reminded_at.is_(None))
            .values(reminded_at=now)
        ).rowcount
        if claimed != 1:
            continue
        fu = db.session.get(FollowUp, fu_id)
        db.session.refresh(fu)
        owner = fu.owner or fu.lead.assignee
        counts["reminded"] += 1
        if owner is None or not owner.active:
            continue  # still listed in the Due view for everyone
        message = f"{fu.kind.value.capitalize()} follow-up due for lead #{fu.lead_id}" + (
            f": {fu.note}" if fu.note else ""
        )
        if notify(
            owner,
            "follow_up_due",
            message,
            lead=fu.lead,
            dedupe_key=f"follow_up:{fu.id}:{owner.id}:{now:%Y%m%d%H%M%S}",
            at=now,
        ):
            link = _lead_url(fu.lead_id)
            queue_email(
                owner.email,
                f"Follow-up due: lead #{fu.lead_id}",
                f"Hello {owner.name},\n\nA {fu.kind.value} follow-up you own is due now "
                f"({fu.due_at.astimezone(zone(owner.timezone)):%a %b %d, %I:%M %p %Z}).\n\n"
                f"Open the lead: {link}\n\n— Appointment Desk",
                kind="follow_up_reminder",
                lead=fu.lead,
                user=owner,
            )
            counts["emailed"] += 1
    db.session.flush()
    return counts


def _lead_url(lead_id: int) -> str:
    base = current_app.config.get("PUBLIC_BASE_URL")
    if base:
        return f"{base.rstrip('/')}/leads/{lead_id}"
    try:
        return url_for("leads.detail", lead_id=lead_id, _external=True)
    except RuntimeError:  # no request and no SERVER_NAME (scheduler)
        return f"/leads/{lead_id}"
