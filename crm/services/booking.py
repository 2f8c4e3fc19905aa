"""Booking: the appointment, its confirmation (email + iCalendar invite), its outcome.

The physician comes from the lead's match list, and is checked again against the matching
rules when booked (the list may be out of date), under a lock on the physician. Booking moves
the lead to ``booked`` through the transition table (a lead not yet marked
contacted is moved through ``attempting``/``contacted`` first, each step an
event). A lead whose stored eligibility is "not eligible" or "to confirm" is booked only with an
explicit override, recorded on the booking's event. Booking means the patient was reached: the
call follow-ups due by then are closed as a reached call closes them. An outcome of ``completed``
completes the lead; ``cancelled`` and ``no_show`` move a booked lead back to ``contacted`` so it
can be rebooked. Cancelling an appointment that is still ahead (by its outcome, or by closing
the lead as lost) emails the patient a cancellation whose calendar part removes the invite;
moving it to another time with the same physician (``reschedule``) emails the invite again, which
moves the event in the patient's calendar (same UID, higher SEQUENCE).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from icalendar import Calendar, Event, vText
from sqlalchemy.orm import aliased, selectinload
from sqlalchemy.orm.attributes import flag_modified

from crm.extensions import db
from crm.models import Appointment, Lead, Physician, User
from crm.models.enums import LIVE_APPOINTMENT, AppointmentStatus, EventKind, LeadStatus, VisitMode
from crm.services.calling_window import zone
from crm.services.contact import format_phone
from crm.services.followups import complete_due_calls, patient_timezone
from crm.services.mailer import queue_email
from crm.services.matching import booking_refusal
from crm.services.timeline import add_event
from crm.services.workflow import CALL_OUTCOME_LABELS, change_status
from crm.sqlite_lock import hold_write_lock

PRODID = "-//Appointment Desk//Booking//EN"


class BookingError(ValueError):
    """A refused booking or outcome; ``str(err)`` is the message to show."""


class EligibilityOverrideNeeded(BookingError):
    """Booking a lead that is not (or not yet) eligible without the override ticked."""


def eligibility_doubt(lead: Lead) -> dict | None:
    """Why the lead's stored eligibility (the one the page shows) stands against booking:
    {"status": "not_eligible" | "to_confirm", "reason": ...}; None when eligible. None too when it
    was never checked: booking needs the match, which stores the eligibility with it."""
    el = lead.eligibility
    if not isinstance(el, dict) or el.get("eligible") is True:
        return None
    reasons = [str(r) for r in el.get("reasons") or [] if r]
    return {
        "status": "not_eligible" if el.get("eligible") is False else "to_confirm",
        "reason": " ".join(reasons) or str(el.get("summary") or "The eligibility check did not pass."),
    }


def match_candidates(lead: Lead) -> list[dict]:
    """The ranked candidates stored on the lead by matching (SPEC 6 shape), or []."""
    result = lead.match_result or {}
    return [c for c in (result.get("candidates") or []) if isinstance(c, dict) and c.get("physician_id")]


def unavailable_reason(physician: Physician | None) -> str | None:
    """Why a listed physician cannot be booked now (None: they can): a stored match list is a
    snapshot, and since it was made a physician may have been deactivated or closed to new patients."""
    if physician is None:
        return "no longer in the directory"
    if not physician.active:
        return "no longer active"
    if not physician.accepting_new:
        return "not accepting new patients"
    return None


def bookable(candidates: list[dict], physicians: dict[int, Physician]) -> list[dict]:
    """The candidates whose physician (from ``physicians``, by id) can be booked now."""
    return [c for c in candidates if unavailable_reason(physicians.get(int(c["physician_id"]))) is None]


def listed_physicians(candidates: list[dict]) -> dict[int, Physician]:
    ids = [int(c["physician_id"]) for c in candidates]
    if not ids:
        return {}
    return {p.id: p for p in db.session.scalars(sa.select(Physician).where(Physician.id.in_(ids)))}


def book(
    lead: Lead,
    *,
    physician_id: int,
    starts_at: datetime,
    mode: VisitMode | str,
    actor: User,
    duration_minutes: int = 30,
    notes: str = "",
    override: bool = False,
    now: datetime | None = None,
) -> Appointment:
    """``override``: the specialist ticked "Book anyway" for a lead not (yet) eligible."""
    now = now or datetime.now(UTC)
    if starts_at.tzinfo is None:
        raise BookingError("The appointment time needs a time zone.")
    try:
        mode = VisitMode(mode)
    except ValueError as exc:
        raise BookingError("Choose in person or telehealth.") from exc
    if not lead.is_open or lead.status == LeadStatus.BOOKED:
        raise BookingError(
            "This lead already has a booked appointment: record its outcome (or cancel it) first."
            if lead.status == LeadStatus.BOOKED
            else "This lead is closed; an admin can reopen it."
        )
    if starts_at <= now:
        raise BookingError("The appointment must be in the future.")
    if starts_at > now + timedelta(days=365):
        raise BookingError("Book within the next year.")
    if not 5 <= duration_minutes <= MAX_VISIT_MINUTES:
        raise BookingError("The visit length must be between 5 and 240 minutes.")
    _check_visiting_hours(lead, starts_at, duration_minutes)
    # A certification the state will not accept wastes the patient's fee and the physician's time:
    # such a booking must be a decision, not a slip (the page shows the reason next to the box).
    doubt = eligibility_doubt(lead)
    if doubt is not None and not override:
        verdict = "is not eligible" if doubt["status"] == "not_eligible" else "is not confirmed as eligible yet"
        raise EligibilityOverrideNeeded(
            f"This lead {verdict}: {doubt['reason']} Check it with the patient (or leave it to the "
            'physician\'s judgement) and tick "Book anyway" to book all the same.'
        )
    physician = _lock_physician(physician_id)
    if physician is None:
        raise BookingError(f"There is no physician #{physician_id}.")
    if not physician.active:
        raise BookingError(f"{physician.full_name} is no longer active in the directory: book another physician.")
    if not physician.accepting_new:
        raise BookingError(f"{physician.full_name} is not accepting new patients.")
    if lead.match_result is None:
        raise BookingError("This lead has not been matched yet: run the match, then book from its list.")
    candidates = match_candidates(lead)
    listed = {(int(c["physician_id"]), c.get("mode")) for c in candidates}
    if physician_id not in {pid for pid, _ in listed}:
        raise BookingError(f"{physician.full_name} is not on this lead's match list; re-run the match or pick from it.")
    if mode == VisitMode.IN_PERSON and not physician.offers_in_person:
        raise BookingError(f"{physician.full_name} does not see patients in person.")
    if mode == VisitMode.TELEHEALTH and not physician.offers_telehealth:
        raise BookingError(f"{physician.full_name} does not offer telehealth.")
    if (physician_id, mode.value) not in listed and (physician_id, None) not in listed:  # None: stored before modes
        # SPEC 6: telehealth only where the patient's state allows it; in person only within reach.
        fits = " and ".join(sorted(m.replace("_", " ") for pid, m in listed if pid == physician_id))
        raise BookingError(f"{physician.full_name} is on this lead's match list for {fits} only; book that instead.")
    # The list is a snapshot: since the match a registration may have expired or the week filled up.
    refusal = booking_refusal(lead, physician, mode.value, now)
    if refusal is not None:
        raise BookingError(
            f"{physician.full_name} can no longer be booked for this lead: {refusal}. "
            "The match list is out of date: press Re-match for a current one."
        )
    _check_registration_on_visit_day(physician, lead, starts_at)
    _check_no_clash(physician, starts_at, duration_minutes)

    if lead.status == LeadStatus.NEW:
        change_status(lead, LeadStatus.ATTEMPTING, actor=actor, reason="booking", now=now)
    if lead.status == LeadStatus.ATTEMPTING:
        change_status(lead, LeadStatus.CONTACTED, actor=actor, reason="reached to book", now=now)
        if lead.first_contact_at is None:
            lead.first_contact_at = now
    appt = Appointment(
        physician_id=physician.id,
        starts_at=starts_at.astimezone(UTC),
        duration_minutes=duration_minutes,
        mode=mode,
        status=AppointmentStatus.BOOKED,
        notes=(notes or "").strip()[:500],
        created_by_id=actor.id,
        created_at=now,
    )
    # Appended before it is in the session: loading the collection autoflushes, and an
    # appointment already added there would be loaded and then appended a second time.
    lead.appointments.append(appt)
    db.session.flush()
    change_status(lead, LeadStatus.BOOKED, actor=actor, reason=f"appointment #{appt.id}", now=now, by_appointment=True)
    data = {
        "appointment_id": appt.id,
        "physician_id": physician.id,
        "physician": physician.full_name,
        "starts_at": appt.starts_at.isoformat(),
        "mode": mode.value,
    }
    if doubt is not None:  # for a lead or an audit: who booked past which verdict
        data.update(override=True, eligibility=doubt["status"], eligibility_reason=doubt["reason"])
    add_event(lead, EventKind.APPOINTMENT_BOOKED, data, actor=actor, at=now)
    # The patient was reached and booked: every call planned before the visit was to reach them (a
    # call to remind them of the visit is planned once there is a visit), and left open it would keep
    # a booked lead in Due and remind its owner to chase a booked patient. Calls after the visit stay.
    complete_due_calls(
        lead,
        actor=actor,
        outcome=f"{CALL_OUTCOME_LABELS['reached']}: appointment booked",
        now=now,
        due_by=appt.starts_at,
    )
    send_confirmation(appt, actor=actor, now=now)
    return appt


# No practice sees patients at 2 AM: a visit outside these hours (patient time) is an AM/PM slip.
VISITING_HOURS = (6, 22)
MAX_VISIT_MINUTES = 240


def _check_visiting_hours(lead: Lead, starts_at: datetime, duration_minutes: int) -> None:
    local = starts_at.astimezone(patient_zone(lead.patient))
    first, last = VISITING_HOURS
    if not first <= local.hour < last:
        other = local + timedelta(hours=12 if local.hour < 12 else -12)  # always inside the hours
        raise BookingError(
            f"That is {local:%I:%M %p} for the patient: visits start between 6 AM and 10 PM their time. "
            f"Did you mean {other:%I:%M %p} their time?"
        )
    # A long visit started late must not run past midnight, into the patient's night (wall-clock time,
    # as they live it). The start rule above is for AM/PM slips; this one for the visit's length.
    ends = local.replace(tzinfo=None) + timedelta(minutes=duration_minutes)
    if ends > datetime.combine(local.date() + timedelta(days=1), datetime.min.time()):
        raise BookingError(
            f"A {duration_minutes}-minute visit at {local:%I:%M %p} would end at {ends:%I:%M %p} for the patient, "
            "past midnight their time. Start it earlier or make it shorter."
        )


def _registration_gap(physician: Physician, patient, starts_at: datetime) -> tuple[str, date | None] | None:
    """(state, expiry) when ``physician`` cannot certify ``patient`` at a visit starting
    ``starts_at``: no registration in the patient's state (expiry None), or one that lapses before
    the visit's day in the patient's time (certifying is legal only under a current registration,
    on the visit's day, not just today). None when they can."""
    state = (patient.state or "").upper()
    expires_on = registration_expiry(physician, state)
    if expires_on is None:
        return state, None
    if starts_at.astimezone(patient_zone(patient)).date() > expires_on:
        return state, expires_on
    return None


def _state_words(state: str) -> str:
    return state or "the patient's state"


def _check_registration_on_visit_day(physician: Physician, lead: Lead, starts_at: datetime) -> None:
    """Booking: a registration lapsing before the visit is refused here (a missing one, by the
    matching rules of ``booking_refusal``)."""
    gap = _registration_gap(physician, lead.patient, starts_at)
    if gap is not None and gap[1] is not None:
        state, expires_on = gap
        raise BookingError(
            f"{physician.full_name}'s {state} registration expires on "
            f"{expires_on.isoformat()}, before this visit: book on or before that day, or another physician."
        )


def _check_no_clash(physician: Physician, starts_at: datetime, duration_minutes: int, moving: int | None = None):
    """No other live appointment of the physician (not ``moving``, the one being rescheduled)
    overlaps [starts_at, starts_at + duration): each with its own length, so a 60-minute visit at
    09:00 clashes with one at 09:40."""
    ends_at = starts_at + timedelta(minutes=duration_minutes)
    nearby = [
        Appointment.physician_id == physician.id,
        Appointment.status.in_([s.value for s in LIVE_APPOINTMENT]),
        Appointment.starts_at > starts_at - timedelta(minutes=MAX_VISIT_MINUTES),
        Appointment.starts_at < ends_at,
    ]
    if moving is not None:
        nearby.append(Appointment.id != moving)
    rows = db.session.execute(sa.select(Appointment.starts_at, Appointment.duration_minutes).where(*nearby)).all()
    if any(other + timedelta(minutes=minutes) > starts_at for other, minutes in rows):
        raise BookingError(f"{physician.full_name} already has an appointment at that time. Pick another time.")


def reschedule(appt: Appointment, *, starts_at: datetime, actor: User, now: datetime | None = None) -> Appointment:
    """Move a coming appointment to another time with the same physician, and send the patient
    the invite again under the same UID with a higher SEQUENCE, so their calendar moves the event.
    Another physician is a new booking: cancel this one, then book from the match list.

    Checked under the physician's lock with the appointment read afresh, so a cancellation or
    another move committed meanwhile is seen; the lead's version goes up, so a page loaded before
    the move gets the conflict message instead of acting on the old time."""
    now = now or datetime.now(UTC)
    if starts_at.tzinfo is None:
        raise BookingError("The appointment time needs a time zone.")
    starts_at = starts_at.astimezone(UTC)
    if starts_at <= now:
        raise BookingError("The appointment must be in the future.")
    if starts_at > now + timedelta(days=365):
        raise BookingError("Book within the next year.")
    _check_visiting_hours(appt.lead, starts_at, appt.duration_minutes)
    physician = _lock_physician(appt.physician_id)
    db.session.refresh(appt, with_for_update=db.session.get_bind().dialect.name != "sqlite")
    if appt.status not in LIVE_APPOINTMENT:
        raise BookingError(f"This appointment is {appt.status.value.replace('_', ' ')}: book a new one instead.")
    if appt.starts_at <= now:
        raise BookingError("This visit's time has passed: record its outcome, then book again if needed.")
    if starts_at == appt.starts_at:
        raise BookingError("That is the time it is booked for already. Pick the new time.")
    if physician is None or not physician.active:
        raise BookingError("This physician is no longer active: cancel the appointment and book another physician.")
    lead = appt.lead
    gap = _registration_gap(physician, lead.patient, starts_at)
    if gap is not None and gap[1] is None:
        raise BookingError(
            f"{physician.full_name} has no registration in {_state_words(gap[0])} now: "
            "cancel the appointment and book another physician."
        )
    _check_registration_on_visit_day(physician, lead, starts_at)
    _check_no_clash(physician, starts_at, appt.duration_minutes, moving=appt.id)
    previous = appt.starts_at
    appt.starts_at = starts_at
    appt.ics_sequence += 1
    appt.reminder_sent_at = None  # the reminder belongs to the new time
    _new_lead_version(lead, now)  # pages showing the old time are stale
    data = {"appointment_id": appt.id, "from_starts_at": previous.isoformat(), "starts_at": starts_at.isoformat()}
    data["physician"] = physician.full_name
    add_event(lead, EventKind.APPOINTMENT_RESCHEDULED, data, actor=actor, at=now)
    send_confirmation(appt, actor=actor, now=now, moved_from=previous)
    return appt


def _new_lead_version(lead: Lead, now: datetime) -> None:
    """Write the lead row (its optimistic-lock version goes up) even when ``updated_at`` already
    holds ``now``: an appointment's change is the lead's, for the conflict check of open pages."""
    lead.updated_at = now
    flag_modified(lead, "updated_at")


def registration_problem(appt: Appointment, now: datetime | None = None) -> str | None:
    """Why the physician could not certify the patient at this booked visit, if so (a
    registration may lapse, or be removed, after booking); None when the visit is sound."""
    gap = _registration_gap(appt.physician, appt.lead.patient, appt.starts_at)
    if gap is None:
        return None
    state, expires_on = gap
    name = appt.physician.full_name
    if expires_on is None:
        return f"{name} has no registration in {_state_words(state)}"
    if expires_on < (now or datetime.now(UTC)).astimezone(patient_zone(appt.lead.patient)).date():
        return f"{name}'s {state} registration expired on {expires_on.isoformat()}"  # no earlier day helps
    return f"{name}'s {state} registration expires on {expires_on.isoformat()}, before this visit"


def visits_at_risk(now: datetime, limit: int = 50) -> list[tuple[Appointment, str]]:
    """Booked visits still ahead whose physician cannot certify the patient on the day (see
    ``registration_problem``), soonest first. A registration may lapse, or be removed, after booking."""
    from crm.models import Patient, Registration

    reg = aliased(Registration)
    # A superset in SQL (no registration in the state, or one expiring before the visit's UTC
    # date), settled in the patient's own time zone below.
    candidates = db.session.scalars(
        sa.select(Appointment)
        .join(Lead, Lead.id == Appointment.lead_id)
        .join(Patient, Patient.id == Lead.patient_id)
        .outerjoin(reg, sa.and_(reg.physician_id == Appointment.physician_id, reg.state == Patient.state))
        .where(
            Appointment.status.in_([s.value for s in LIVE_APPOINTMENT]),
            Appointment.starts_at > now,
            # expiring before the visit's UTC date: the patient's own date is that one or the day
            # before (US zones), so this holds for every visit at risk. (A date against a timestamp:
            # midnight on PostgreSQL, text order on SQLite; both right here.)
            sa.or_(reg.id.is_(None), reg.expires_on < Appointment.starts_at),
        )
        .order_by(Appointment.starts_at)
        .limit(limit * 2)
        .options(  # registration_problem reads these for each: loaded together, not one by one
            selectinload(Appointment.physician).selectinload(Physician.registrations),
            selectinload(Appointment.lead).selectinload(Lead.patient),
        )
    ).all()
    found = []
    for appt in candidates:
        problem = registration_problem(appt, now)
        if problem:
            found.append((appt, problem))
    return found[:limit]


def _lock_physician(physician_id: int) -> Physician | None:
    """The physician, read afresh under a lock held until the commit, so that two bookings of
    their last free slot of the week (or of one time) cannot both find it free: SELECT ... FOR
    UPDATE on PostgreSQL. On SQLite a SELECT before the transaction's first write runs outside
    any transaction and would not see a booking being written: take the database's write lock
    first (BEGIN IMMEDIATE, as intake does), which serialises bookings."""
    connection = db.session.connection()
    if connection.dialect.name != "sqlite":
        return db.session.get(Physician, physician_id, with_for_update=True, populate_existing=True)
    hold_write_lock(connection)
    return db.session.get(Physician, physician_id, populate_existing=True)


def _location(physician: Physician, mode: VisitMode) -> str:
    if mode == VisitMode.TELEHEALTH:
        return "Telehealth (video link from the practice)"
    parts = [physician.practice_name, physician.street, physician.city, f"{physician.state} {physician.zip}".strip()]
    return ", ".join(p for p in parts if p)


def build_ics(appt: Appointment, *, now: datetime | None = None, cancel: bool = False) -> str:
    """A one-event iCalendar (RFC 5545) invite for the appointment, at its current SEQUENCE; with
    ``cancel``, the iTIP CANCEL (RFC 5546) of that same event (same UID; the caller raises the
    SEQUENCE), which calendar programs take as "remove the event this UID added" rather than as a
    second appointment."""
    now = now or datetime.now(UTC)
    physician = appt.physician
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", "CANCEL" if cancel else "PUBLISH")
    ev = Event()
    ev.add("uid", f"appointment-{appt.id}@appointment-desk")
    ev.add("dtstamp", now)
    ev.add("dtstart", appt.starts_at)
    ev.add("dtend", appt.starts_at + timedelta(minutes=appt.duration_minutes))
    ev.add("summary", f"{'Cancelled: a' if cancel else 'A'}ppointment with {physician.full_name}")
    ev.add("location", vText(_location(physician, appt.mode)))
    # Every iTIP message names its organizer (RFC 5546 3.2): the desk, the same on the invite, its
    # moves and its cancellation, so a calendar matches the CANCEL to the event it added.
    ev.add("organizer", f"mailto:{parseaddr(current_app.config.get('MAIL_DEFAULT_SENDER') or '')[1]}")
    if cancel:
        ev.add("attendee", f"mailto:{appt.lead.patient.email}")  # a CANCEL names whom it cancels for
        ev.add("description", "This appointment was cancelled. To book another time, reply to this email or call us.")
    else:
        kind = "Telehealth" if appt.mode == VisitMode.TELEHEALTH else "In-person"
        desc = [f"{kind} visit with {physician.full_name}."]
        if physician.phone:
            desc.append(f"Practice phone: {format_phone(physician.phone)}")
        desc.append("To change or cancel, reply to this email or call us.")
        ev.add("description", "\n".join(desc))
    cancelled = cancel or appt.status == AppointmentStatus.CANCELLED
    ev.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    ev.add("sequence", appt.ics_sequence or 0)
    cal.add_component(ev)
    return cal.to_ical().decode("utf-8")


def registration_expiry(physician: Physician, state: str | None) -> date | None:
    """When ``physician``'s registration in ``state`` expires (None: no such registration)."""
    state = (state or "").upper()
    return next((r.expires_on for r in physician.registrations if r.state == state), None)


def patient_zone(patient) -> ZoneInfo:
    """The zone the lead page shows the patient's times in (and reads a typed time in): an email
    must name the hour the specialist booked, also before the patient is geocoded."""
    return zone(patient_timezone(patient)[0])


def send_confirmation(
    appt: Appointment, *, actor: User | None, now: datetime, moved_from: datetime | None = None
) -> bool:
    """Queue the confirmation email with the .ics (``moved_from``: the time it was booked for
    before a reschedule, which the email names); False when the patient has no email."""
    lead, patient, physician = appt.lead, appt.lead.patient, appt.physician
    moved = moved_from is not None
    if not patient.email:
        text = f"No {'email about the new time' if moved else 'confirmation email'}: the patient has no email address."
        add_event(lead, EventKind.NOTE, {"text": text}, at=now)
        return False
    tz = patient_zone(patient)
    when = appt.starts_at.astimezone(tz)
    if moved:
        before = moved_from.astimezone(tz)
        opening = f"Your appointment has moved to a new time (it was {before:%A, %B %d at %I:%M %p}):"
        calendar = "The attached update moves it in your calendar."
    else:
        opening, calendar = "Your appointment is booked:", "The attached invite adds it to your calendar."
    body = (
        f"Hello {patient.first_name},\n\n"
        f"{opening}\n\n"
        f"  With:  {physician.full_name}\n"
        f"  When:  {when:%A, %B %d, %Y at %I:%M %p %Z}\n"
        f"  Where: {_location(physician, appt.mode)}\n\n"
        f"{calendar} If you need to change or cancel it,\n"
        "reply to this email and your patient support specialist will help.\n\n"
        "— Appointment Desk"
    )
    kind = "appointment_rescheduled" if moved else "appointment_confirmation"
    subject = f"Your appointment with {physician.full_name} on {when:%b %d}"
    if moved:
        subject = f"New time: your appointment with {physician.full_name} on {when:%b %d}"
    email = queue_email(
        patient.email, subject, body, kind=kind, lead=lead, ics=build_ics(appt, now=now), appointment=appt
    )
    appt.confirmation_sent_at = now
    data = {"kind": kind, "outbox_id": email.id, "appointment_id": appt.id}
    add_event(lead, EventKind.EMAIL_SENT, data, actor=actor, at=now)
    return True


OUTCOMES = {
    "completed": AppointmentStatus.COMPLETED,
    "no_show": AppointmentStatus.NO_SHOW,
    "cancelled": AppointmentStatus.CANCELLED,
}
OUTCOME_LABELS = {"completed": "Completed", "no_show": "No-show", "cancelled": "Cancelled"}


def possible_outcomes(appt: Appointment, now: datetime) -> list[str]:
    """The outcomes ``set_outcome`` accepts now: before the start only cancelling."""
    if appt.status not in LIVE_APPOINTMENT:
        return []
    return ["cancelled"] if appt.starts_at > now else list(OUTCOMES)


def record_outcome(
    appt: Appointment, status: AppointmentStatus, *, actor: User | None, note: str, now: datetime
) -> None:
    """The appointment's outcome and its timeline entry; the lead's status is the caller's."""
    data = {"appointment_id": appt.id, "from": appt.status.value, "to": status.value}
    if note.strip():
        data["note"] = note.strip()[:500]
    appt.status = status
    appt.outcome_at = now
    _close_outcome_follow_up(appt, status, actor, now)
    _new_lead_version(appt.lead, now)  # a page showing it as still booked is stale
    add_event(appt.lead, EventKind.APPOINTMENT_UPDATED, data, actor=actor, at=now)
    if status == AppointmentStatus.CANCELLED and appt.starts_at > now:
        send_cancellation(appt, actor=actor, now=now)


def _close_outcome_follow_up(appt: Appointment, status: AppointmentStatus, actor: User | None, now) -> None:
    """The visit_outcomes job's "record its outcome" follow-up is done once the outcome is recorded."""
    from crm.services.followups import complete

    if appt.outcome_follow_up_id is None:
        return
    fu = next((f for f in appt.lead.follow_ups if f.id == appt.outcome_follow_up_id), None)
    if fu is not None and fu.done_at is None:
        complete(fu, actor=actor, outcome=f"visit outcome recorded: {status.value.replace('_', ' ')}", now=now)


def send_cancellation(appt: Appointment, *, actor: User | None, now: datetime) -> bool:
    """Queue the cancellation email, whose .ics takes the invite off the patient's calendar;
    False when the patient has no email (the specialist tells them by phone)."""
    lead, patient, physician = appt.lead, appt.lead.patient, appt.physician
    if not patient.email:
        return False
    appt.ics_sequence += 1  # above every invite sent for it, or calendars ignore the cancellation
    when = appt.starts_at.astimezone(patient_zone(patient))
    body = (
        f"Hello {patient.first_name},\n\n"
        f"Your appointment with {physician.full_name} on {when:%A, %B %d, %Y at %I:%M %p %Z}\n"
        "is cancelled. The attached calendar update removes it from your calendar.\n\n"
        "If you would like another time, reply to this email and your patient support\n"
        "specialist will help.\n\n"
        "— Appointment Desk"
    )
    email = queue_email(
        patient.email,
        f"Cancelled: your appointment with {physician.full_name} on {when:%b %d}",
        body,
        kind="appointment_cancellation",
        lead=lead,
        ics=build_ics(appt, now=now, cancel=True),
        appointment=appt,
    )
    data = {"kind": "appointment_cancellation", "outbox_id": email.id, "appointment_id": appt.id}
    add_event(lead, EventKind.EMAIL_SENT, data, actor=actor, at=now)
    return True


def set_outcome(
    appt: Appointment, outcome: str, *, actor: User, note: str = "", now: datetime | None = None
) -> Appointment:
    now = now or datetime.now(UTC)
    if outcome not in OUTCOMES:
        raise BookingError("Choose completed, no-show or cancelled.")
    if appt.status not in LIVE_APPOINTMENT:
        raise BookingError(f"This appointment is already {appt.status.value.replace('_', ' ')}.")
    status = OUTCOMES[outcome]
    if status in (AppointmentStatus.COMPLETED, AppointmentStatus.NO_SHOW) and appt.starts_at > now:
        raise BookingError("The appointment has not happened yet; only cancelling is possible now.")
    lead = appt.lead
    record_outcome(appt, status, actor=actor, note=note, now=now)
    if lead.status == LeadStatus.BOOKED and lead.booked_appointment is None:
        if status == AppointmentStatus.COMPLETED:
            change_status(
                lead, LeadStatus.COMPLETED, actor=actor, reason="appointment completed", now=now, by_appointment=True
            )
        else:
            label = "appointment cancelled" if status == AppointmentStatus.CANCELLED else "patient did not show"
            change_status(lead, LeadStatus.CONTACTED, actor=actor, reason=label, now=now, by_appointment=True)
    return appt


# How long after a visit's end its outcome may still be on its way (the physician's office, the
# specialist's day) before the lead asks for it; and how far back the job looks.
OUTCOME_GRACE = timedelta(hours=1)
OUTCOME_LOOKBACK = timedelta(days=30)
# The predicate of ix_appointments_outcome_due, as written there (migration 0020), so both databases
# read that index: live visits not asked about yet.
OUTCOME_DUE_SQL = "appointments.status IN ('booked', 'confirmed') AND appointments.outcome_asked_at IS NULL"


def plan_outcome_follow_ups(now: datetime, limit: int = 200) -> int:
    """A visit that passed over an hour ago with no outcome recorded, on a lead still booked, gets a
    call follow-up "record the visit's outcome" for the lead's specialist: it comes up in Due and
    reminds them, where the lead would otherwise sit booked at the bottom of Mine for good. Each visit
    is asked about once (``outcome_asked_at``, claimed before acting), whatever becomes of the
    follow-up; recording the outcome closes it (``record_outcome``)."""
    from crm.services.calling_window import is_allowed, next_allowed, window_from_config
    from crm.services.followups import schedule

    t = Appointment.__table__.c
    due = sa.and_(sa.text(OUTCOME_DUE_SQL), t.starts_at <= now - OUTCOME_GRACE, t.starts_at >= now - OUTCOME_LOOKBACK)
    rows = db.session.execute(
        sa.select(t.id, t.lead_id, t.starts_at, t.duration_minutes).where(due).order_by(t.starts_at).limit(limit)
    ).all()
    window = window_from_config(current_app.config)
    planned = 0
    for appt_id, lead_id, starts_at, minutes in rows:
        if starts_at + timedelta(minutes=minutes) + OUTCOME_GRACE > now:
            continue  # a long visit still within its grace
        # The lead's row first, in the order a request recording an outcome takes them (lead, then
        # appointment): the other order could deadlock with it on PostgreSQL.
        db.session.execute(sa.select(Lead.id).where(Lead.id == lead_id).with_for_update())
        # Claimed with the look-up's conditions: an outcome recorded since (or a second runner) wins.
        claimed = db.session.execute(
            sa.update(Appointment.__table__)
            .where(t.id == appt_id, sa.text(OUTCOME_DUE_SQL))
            .values(outcome_asked_at=now)
        ).rowcount
        if claimed != 1:
            continue
        appt = db.session.get(Appointment, appt_id, populate_existing=True)
        lead = db.session.get(Lead, appt.lead_id, populate_existing=True)
        if lead.status != LeadStatus.BOOKED:
            continue  # moved on by hand (closed, or back to contacted): nothing to ask
        tz, _known = patient_timezone(lead.patient)
        when = appt.starts_at.astimezone(zone(tz))
        fu = schedule(
            lead,
            due_at=now if is_allowed(now, tz, window) else next_allowed(now, tz, window),
            kind="call",
            actor=None,
            note=(
                f"The visit with {appt.physician.full_name} on {when:%a %b %d, %I:%M %p %Z} has passed: record "
                "its outcome (completed or no-show) under Appointment. Call the patient if you do not know."
            ),
            now=now,
            window=window,
        )
        db.session.flush()
        appt.outcome_follow_up_id = fu.id
        planned += 1
    db.session.flush()
    return planned


def send_appointment_reminders(now: datetime, hours: int = 24, limit: int = 200) -> int:
    """Email each patient once, about ``hours`` before the visit."""
    t = Appointment.__table__.c
    ids = db.session.scalars(
        sa.select(Appointment.id)
        .where(
            Appointment.status.in_([s.value for s in LIVE_APPOINTMENT]),
            Appointment.reminder_sent_at.is_(None),
            Appointment.starts_at > now,
            Appointment.starts_at <= now + timedelta(hours=hours),
        )
        .order_by(Appointment.starts_at)
        .limit(limit)
    ).all()
    sent = 0
    for appt_id in ids:
        # The same conditions as the list: a visit cancelled or moved since it was listed is not claimed.
        claimed = db.session.execute(
            sa.update(Appointment.__table__)
            .where(
                t.id == appt_id,
                t.reminder_sent_at.is_(None),
                t.status.in_([s.value for s in LIVE_APPOINTMENT]),
                t.starts_at > now,
                t.starts_at <= now + timedelta(hours=hours),
            )
            .values(reminder_sent_at=now)
        ).rowcount
        if claimed != 1:
            continue
        appt = db.session.get(Appointment, appt_id)
        patient = appt.lead.patient
        if not patient.email:
            continue
        confirmed = appt.confirmation_sent_at
        if confirmed is not None and confirmed >= appt.starts_at - timedelta(hours=hours):
            # Booked at short notice: the confirmation went out inside the reminder's window,
            # so a "reminder" minutes later would only repeat it (the claim above marks it done).
            continue
        when = appt.starts_at.astimezone(patient_zone(patient))
        email = queue_email(
            patient.email,
            f"Reminder: your appointment {when:%a %b %d at %I:%M %p}",
            f"Hello {patient.first_name},\n\nA reminder of your appointment with {appt.physician.full_name}\n"
            f"on {when:%A, %B %d at %I:%M %p %Z} ({_location(appt.physician, appt.mode)}).\n\n"
            "If you cannot make it, reply to this email.\n\n— Appointment Desk",
            kind="appointment_reminder",
            lead=appt.lead,
            ics=build_ics(appt, now=now),
            appointment=appt,
        )
        data = {"kind": "appointment_reminder", "outbox_id": email.id, "appointment_id": appt.id}
        add_event(appt.lead, EventKind.EMAIL_SENT, data, at=now)
        sent += 1
    db.session.flush()
    return sent
