"""Booking from the match list: appointment, confirmation email with an .ics invite, outcome."""

from __future__ import annotations

import functools
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import sqlalchemy as sa
import time_machine
from icalendar import Calendar

from crm.extensions import db as _db
from crm.models import Appointment, Lead, LeadEvent, OutboxEmail, Registration, User
from crm.models.enums import AppointmentStatus, EventKind, LeadStatus, OutboxStatus
from crm.services import booking, followups, mailer, matching
from crm.services.booking import BookingError
from crm.services.eligibility import ConditionFacts, ProgramFacts, evaluate
from tests.factories import ConditionFactory, PhysicianFactory
from tests.test_queue_helpers import WED, form_post, matched_lead

S = LeadStatus
LATER = WED + timedelta(days=2)  # Friday 14:00 UTC


def test_book_moves_the_lead_to_booked_and_queues_the_invite(db, specialist):
    lead, (doc,) = matched_lead(db, status=S.NEW, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    assert lead.status == S.BOOKED and appt.status == AppointmentStatus.BOOKED
    assert lead.first_contact_at == WED and appt.confirmation_sent_at == WED
    kinds = db.session.scalars(sa.select(LeadEvent.kind).order_by(LeadEvent.id)).all()
    assert kinds.count(EventKind.STATUS_CHANGED) == 3  # new -> attempting -> contacted -> booked
    assert EventKind.APPOINTMENT_BOOKED in kinds and EventKind.EMAIL_SENT in kinds
    email = db.session.scalar(sa.select(OutboxEmail))
    assert email.to_addr == lead.patient.email and email.kind == "appointment_confirmation"
    assert doc.full_name in email.body_text and "Friday, November 20, 2026 at 09:00 AM EST" in email.body_text
    cal = Calendar.from_ical(email.ics)
    (event,) = cal.walk("VEVENT")
    assert event.decoded("dtstart") == LATER and event.decoded("dtend") == LATER + timedelta(minutes=30)
    assert str(event["uid"]) == f"appointment-{appt.id}@appointment-desk"
    assert "Miami" in str(event["location"])


def test_the_invite_gives_the_practice_phone_as_people_write_it(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    doc.phone = "+19545551387"
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    (event,) = Calendar.from_ical(db.session.scalar(sa.select(OutboxEmail.ics))).walk("VEVENT")
    assert "Practice phone: (954) 555-1387" in str(event["description"])


def test_emails_give_the_time_in_the_zone_the_lead_page_uses(db, specialist):
    """A Honolulu patient not geocoded yet (no stored zone): the page reads and shows times in the
    ZIP's zone, so the confirmation and the reminder must say 10:00 AM HST, not 03:00 PM EST."""
    hawaii = {"zip": "96813", "city": "Honolulu", "state": "HI", "timezone": None, "latitude": None, "longitude": None}
    lead, (doc,) = matched_lead(db, assignee=specialist, **hawaii)
    doc.registrations.append(Registration(state="HI", number="HI-1", expires_on=WED.date() + timedelta(days=365)))
    starts = datetime(2026, 11, 20, 20, 0, tzinfo=UTC)  # 10:00 in Honolulu
    booking.book(lead, physician_id=doc.id, starts_at=starts, mode="in_person", actor=specialist, now=WED)
    assert booking.send_appointment_reminders(starts - timedelta(hours=20)) == 1
    confirmation, reminder = db.session.scalars(sa.select(OutboxEmail).order_by(OutboxEmail.id)).all()
    assert "Friday, November 20, 2026 at 10:00 AM HST" in confirmation.body_text
    assert reminder.subject == "Reminder: your appointment Fri Nov 20 at 10:00 AM"
    assert "on Friday, November 20 at 10:00 AM HST" in reminder.body_text
    for email in (confirmation, reminder):
        (event,) = Calendar.from_ical(email.ics).walk("VEVENT")
        assert event.decoded("dtstart") == starts  # an absolute (UTC) time: every calendar shows it right


def test_outbox_stores_without_smtp_and_attaches_the_invite_with_smtp(app, db, specialist, monkeypatch):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    assert mailer.send_pending(WED) == {"sent": 0, "stored": 1, "retry": 0, "failed": 0, "withdrawn": 0}
    row = db.session.scalar(sa.select(OutboxEmail))
    assert row.status == OutboxStatus.STORED and row.attempts == 1
    # With SMTP configured the message goes through Flask-Mail with the .ics attached.
    sent = []
    monkeypatch.setattr(mailer.mail, "send", lambda msg: sent.append(msg))
    monkeypatch.setitem(app.config, "MAIL_SERVER", "smtp.example.com")
    monkeypatch.setitem(app.config, "MAIL_SUPPRESS_SEND", False)
    mailer.queue_email("p@example.com", "Hi", "Body", kind="test", ics=row.ics)
    db.session.commit()
    assert mailer.send_pending(WED)["sent"] == 1
    (msg,) = sent
    assert msg.attachments[0].filename == "invite.ics" and msg.attachments[0].content_type.startswith("text/calendar")


def test_cancelling_a_coming_visit_emails_a_calendar_cancel_of_the_same_event(app, db, specialist, monkeypatch):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    booking.set_outcome(appt, "cancelled", actor=specialist, note="Patient asked", now=WED + timedelta(hours=1))
    db.session.commit()
    confirmation, cancellation = db.session.scalars(sa.select(OutboxEmail).order_by(OutboxEmail.id)).all()
    assert cancellation.kind == "appointment_cancellation" and cancellation.to_addr == lead.patient.email
    assert cancellation.subject == f"Cancelled: your appointment with {doc.full_name} on Nov 20"
    assert "Friday, November 20, 2026 at 09:00 AM EST" in cancellation.body_text
    assert "is cancelled" in cancellation.body_text
    invite, cancel = Calendar.from_ical(confirmation.ics), Calendar.from_ical(cancellation.ics)
    (published,) = invite.walk("VEVENT")
    assert str(published["organizer"]) == "mailto:desk@example.com"  # the same organizer the CANCEL names
    assert "ATTENDEE" not in published  # PUBLISH names no attendee (RFC 5546 3.2.1)
    assert str(invite["method"]) == "PUBLISH" and str(cancel["method"]) == "CANCEL"
    (first,), (second,) = invite.walk("VEVENT"), cancel.walk("VEVENT")
    assert str(second["uid"]) == str(first["uid"])  # the same event, so calendars remove it
    assert second.decoded("sequence") > first.decoded("sequence") and str(second["status"]) == "CANCELLED"
    assert str(second["organizer"]) == "mailto:desk@example.com"
    assert str(second["attendee"]) == f"mailto:{lead.patient.email}"
    assert second.decoded("dtstart") == LATER
    events = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.EMAIL_SENT)).all()
    assert [e.data["kind"] for e in events] == ["appointment_confirmation", "appointment_cancellation"]
    # Sent, the calendar part says CANCEL in its Content-Type too, as iTIP asks.
    sent = []
    monkeypatch.setattr(mailer.mail, "send", lambda msg: sent.append(msg))
    monkeypatch.setitem(app.config, "MAIL_SERVER", "smtp.example.com")
    monkeypatch.setitem(app.config, "MAIL_SUPPRESS_SEND", False)
    # Both still waiting: the invite of a visit cancelled meanwhile is withdrawn, not sent late.
    assert mailer.send_pending(WED + timedelta(hours=1)) == {
        "sent": 1,
        "stored": 0,
        "retry": 0,
        "failed": 0,
        "withdrawn": 1,
    }
    methods = [msg.attachments[0].content_type for msg in sent]
    assert methods == ["text/calendar; method=CANCEL; charset=UTF-8"]
    db.session.expire_all()
    assert confirmation.status == OutboxStatus.WITHDRAWN and "cancelled meanwhile" in confirmation.error


def test_closing_a_booked_lead_as_lost_emails_the_cancellation(db, specialist):
    from crm.services.workflow import change_status

    lead, (doc,) = matched_lead(db, assignee=specialist)
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    change_status(lead, S.LOST, actor=specialist, reason="not_interested", now=WED)
    db.session.commit()
    kinds = db.session.scalars(sa.select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["appointment_confirmation", "appointment_cancellation"]


def test_no_cancellation_email_for_a_past_visit_or_a_patient_without_email(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    # Recorded after the hour it was set for: there is nothing left on the calendar to take off.
    booking.set_outcome(appt, "cancelled", actor=specialist, now=LATER + timedelta(hours=2))
    other, (doc2,) = matched_lead(db, assignee=specialist, email=None)
    appt2 = booking.book(other, physician_id=doc2.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    assert booking.send_cancellation(appt2, actor=specialist, now=WED) is False
    booking.set_outcome(appt2, "cancelled", actor=specialist, now=WED)
    db.session.commit()
    kinds = db.session.scalars(sa.select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["appointment_confirmation"]  # the first patient's; the second has no address


def test_booking_refusals(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    outsider = PhysicianFactory(offers_telehealth=False)
    db.session.commit()

    def book(**kw):
        args = {"physician_id": doc.id, "starts_at": LATER, "mode": "in_person", "actor": specialist, "now": WED}
        return booking.book(lead, **{**args, **kw})

    cases = [
        ({"starts_at": WED - timedelta(hours=1)}, "must be in the future"),
        ({"starts_at": WED + timedelta(days=400)}, "within the next year"),
        ({"starts_at": datetime(2026, 11, 20, 14)}, "needs a time zone"),
        ({"mode": "carrier pigeon"}, "in person or telehealth"),
        ({"physician_id": 999999}, "no physician #999999"),
        ({"physician_id": outsider.id}, "not on this lead's match list"),
        ({"mode": "telehealth"}, "does not offer telehealth"),
        ({"duration_minutes": 1}, "between 5 and 240"),
    ]
    for kw, message in cases:
        with pytest.raises(BookingError, match=message):
            book(**kw)
    book()
    with pytest.raises(BookingError, match="already has a booked appointment"):
        book()


def test_double_booking_a_physician_is_refused(db, specialist):
    lead_a, (doc,) = matched_lead(db, assignee=specialist)
    lead_b, _ = matched_lead(db, assignee=specialist)
    lead_b.match_result = lead_a.match_result
    booking.book(lead_a, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    with pytest.raises(BookingError, match="already has an appointment at that time"):
        booking.book(
            lead_b,
            physician_id=doc.id,
            starts_at=LATER + timedelta(minutes=15),
            mode="in_person",
            actor=specialist,
            now=WED,
        )


def test_booking_keeps_to_the_mode_the_match_list_gives(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)  # listed for in person only (e.g. no telehealth in FL)
    doc.offers_telehealth = True
    with pytest.raises(BookingError, match="on this lead's match list for in person only"):
        booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="telehealth", actor=specialist, now=WED)
    lead.match_result = None  # never matched: nothing to book from
    with pytest.raises(BookingError, match="not been matched yet"):
        booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    assert lead.status == S.CONTACTED and lead.appointments == []


def test_a_match_list_gone_stale_is_checked_again_at_booking(db, specialist):
    """Since the match, the physician's registration expired, or their week filled up, or they
    stopped treating the condition: the stored list still offers them, booking refuses."""
    lead, (doc,) = matched_lead(db, assignee=specialist)
    other, _ = matched_lead(db, assignee=specialist)
    other.match_result = lead.match_result

    def refused(message):
        db.session.flush()  # the change is saved, as an admin's edit would be
        with pytest.raises(BookingError, match=message) as err:
            booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
        assert "press Re-match" in str(err.value)
        assert lead.appointments == []

    (registration,) = doc.registrations
    registration.expires_on = WED.date() - timedelta(days=1)
    refused("registration expired 2026-11-17")
    registration.state = "GA"
    refused("no registration in FL")
    registration.state, registration.expires_on = "FL", LATER.date()  # valid through the visit's day
    lead.condition = ConditionFactory(name="Dystonia", slug="dystonia")
    doc.conditions = [ConditionFactory(name="Glaucoma", slug="glaucoma")]
    refused("does not treat dystonia")
    doc.conditions = []
    doc.weekly_capacity = 1
    booking.book(
        other, physician_id=doc.id, starts_at=LATER + timedelta(hours=2), mode="in_person", actor=specialist, now=WED
    )
    refused("at weekly capacity")
    doc.weekly_capacity = 2
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)


def test_a_registration_is_valid_through_its_expiry_day_in_the_patients_time(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    doc.registrations[0].expires_on = WED.date()
    db.session.flush()
    evening = WED + timedelta(hours=11)  # 20:00 in Miami, already Thursday in UTC
    late_visit = evening + timedelta(hours=1, minutes=30)  # 21:30 in Miami, still Wednesday there
    booking.book(lead, physician_id=doc.id, starts_at=late_visit, mode="in_person", actor=specialist, now=evening)


def test_a_visit_after_the_registration_expires_is_refused(db, specialist):
    """The match is made today, but the physician certifies on the visit's day: a registration
    that has lapsed by then makes the visit useless to the patient."""
    lead, (doc,) = matched_lead(db, assignee=specialist)
    doc.registrations[0].expires_on = LATER.date() - timedelta(days=1)
    db.session.flush()
    with pytest.raises(BookingError, match="FL registration expires on 2026-11-19, before this visit"):
        booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    assert lead.appointments == [] and lead.status != LeadStatus.BOOKED
    # On the expiry day itself, in the patient's time, the registration still holds.
    last_day = LATER - timedelta(days=1)
    booking.book(lead, physician_id=doc.id, starts_at=last_day, mode="in_person", actor=specialist, now=WED)
    assert lead.status == LeadStatus.BOOKED


def test_two_bookings_of_the_last_free_slot_do_not_both_succeed(app, db, specialist):
    """Specialist A has booked the physician's last slot of the week and not committed yet when
    specialist B books the same physician for another lead: B waits for A's lock, then counts A's
    booking and is refused."""
    lead_a, (doc,) = matched_lead(db, assignee=specialist)
    doc.weekly_capacity = 1
    lead_b, _ = matched_lead(db, assignee=specialist)
    lead_b.match_result = lead_a.match_result
    db.session.commit()
    ids = {"lead": lead_b.id, "user": specialist.id, "doc": doc.id}
    outcome: list = []

    def specialist_b():
        with app.app_context():
            try:
                lead = _db.session.get(Lead, ids["lead"])
                actor = _db.session.get(User, ids["user"])
                starts = LATER + timedelta(days=1)
                booking.book(lead, physician_id=ids["doc"], starts_at=starts, mode="in_person", actor=actor, now=WED)
                _db.session.commit()
                outcome.append("booked")
            except BookingError as exc:
                _db.session.rollback()
                outcome.append(str(exc))
            finally:
                _db.session.remove()

    booking.book(lead_a, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.flush()
    other = threading.Thread(target=specialist_b)
    other.start()
    time.sleep(0.5)  # B gets as far as it can while A still holds its transaction open
    db.session.commit()
    other.join(timeout=30)
    assert len(outcome) == 1 and "at weekly capacity" in outcome[0]
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 1


def test_closing_a_booked_lead_cancels_its_appointment_and_its_reminder(db, specialist):
    from crm.services.workflow import change_status

    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    change_status(lead, S.LOST, actor=specialist, reason="not_interested", now=WED)
    db.session.commit()
    assert appt.status == AppointmentStatus.CANCELLED and appt.outcome_at == WED
    assert booking.send_appointment_reminders(LATER - timedelta(hours=20)) == 0  # no reminder to a patient who said no
    updates = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.APPOINTMENT_UPDATED))
    assert {"appointment_id": appt.id, "from": "booked", "to": "cancelled", "note": "lead closed as lost"} in [
        event.data for event in updates
    ]


def test_outcomes(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    with pytest.raises(BookingError, match="has not happened yet"):
        booking.set_outcome(appt, "completed", actor=specialist, now=WED)
    with pytest.raises(BookingError, match="Choose completed, no-show or cancelled"):
        booking.set_outcome(appt, "rescheduled", actor=specialist, now=WED)
    booking.set_outcome(appt, "cancelled", actor=specialist, note="Patient asked", now=WED)
    assert lead.status == S.CONTACTED  # back to contacted, ready to rebook
    with pytest.raises(BookingError, match="already cancelled"):
        booking.set_outcome(appt, "cancelled", actor=specialist, now=WED)
    appt2 = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    booking.set_outcome(appt2, "completed", actor=specialist, now=LATER + timedelta(hours=1))
    assert lead.status == S.COMPLETED and lead.closed_at is not None


def test_appointment_reminders_once(app, db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    assert booking.send_appointment_reminders(WED) == 0  # 48 h ahead: not yet
    assert booking.send_appointment_reminders(LATER - timedelta(hours=20)) == 1
    assert booking.send_appointment_reminders(LATER - timedelta(hours=19)) == 0
    kinds = db.session.scalars(sa.select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["appointment_confirmation", "appointment_reminder"]


def test_a_visit_booked_at_short_notice_gets_no_reminder_right_after_its_confirmation(app, db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    soon = LATER - timedelta(hours=24)  # Thursday 09:00 in Miami, booked 18 h ahead: inside the 24 h reminder window
    booking.book(
        lead, physician_id=doc.id, starts_at=soon, mode="in_person", actor=specialist, now=soon - timedelta(hours=18)
    )
    db.session.commit()
    assert booking.send_appointment_reminders(soon - timedelta(hours=17, minutes=55)) == 0
    assert booking.send_appointment_reminders(soon - timedelta(hours=2)) == 0  # and not later either
    kinds = db.session.scalars(sa.select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["appointment_confirmation"]


@time_machine.travel(WED, tick=False)
def test_booking_route_and_outcome_route(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc, second) = matched_lead(db, assignee=specialist, physicians=2)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert doc.full_name in page and "3.2 mi" in page
    # A four-digit year: typing on past it would run into a six-digit year the browser allows.
    for field in ("due", "starts"):
        assert re.search(rf'<input[^>]*id="{field}"[^>]*max="2099-12-31T23:59"', page), field
    resp = form_post(
        client,
        f"/leads/{lead.id}/appointments",
        lead,
        physician_id=str(second.id),
        starts="2026-11-20T09:00",
        tz_basis="patient",
        mode="in_person",
        duration="45",
        notes="Bring records",
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    appt = db.session.scalar(sa.select(Appointment))
    assert appt.physician_id == second.id and appt.starts_at == LATER and appt.duration_minutes == 45
    db.session.expire_all()
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Appointment booked; the confirmation email with the calendar invite is in the outbox." in page
    # The visit is in the lead's header, by the status: when, with whom, how.
    head = page.split('<div class="lead-head">', 1)[1].split('<div class="lead-owner">', 1)[0]
    visit = rf'class="[^"]*lead-visit"[^>]*>Fri Nov 20, 09:00 AM \w+ · {second.full_name} · In person<'
    assert re.search(visit, head), head
    assert "No follow-up planned: the next step is the visit." in page  # not "should have a next step"
    assert f'name="note" id="appt-note-{appt.id}"' in page  # the reason can be given with the outcome
    resp = form_post(
        client, f"/leads/{lead.id}/appointments/{appt.id}/outcome", lead, outcome="cancelled", note="Patient is ill"
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#follow-ups")
    db.session.expire_all()
    assert lead.status == S.CONTACTED and appt.status == AppointmentStatus.CANCELLED
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Appointment cancelled; the patient is emailed a cancellation that takes it off their calendar." in page
    assert "lead-visit" not in page  # no visit in the header once it is cancelled
    # Back to contacted: a check-in is planned, so the lead is not left without a next step (SPEC 2.7).
    assert "Next step planned: a call on" in page
    assert [f.note for f in lead.follow_ups if f.done_at is None] == [
        "Check in: the patient was reached but nothing is booked yet (planned automatically)."
    ]
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id)).all()
    assert any((e.data or {}).get("note") == "Patient is ill" for e in event)
    assert "Patient is ill" in page  # on the timeline
    assert "Cancellation emailed Nov 18, 2026" in page and "Confirmation with calendar invite queued" not in page


@time_machine.travel(WED, tick=False)
def test_the_match_list_shows_each_physicians_load_now_not_when_it_was_matched(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    capacity = lead.match_result["candidates"][0].get("weekly_capacity", "?")
    assert f"0/{capacity} booked this week" in client.get(f"/leads/{lead.id}").get_data(as_text=True)
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert f"1/{capacity} booked this week" in page  # the stored list still says 0
    assert matching.recent_bookings([doc.id], WED + timedelta(days=8)) == {doc.id: 0}  # out of the window


@time_machine.travel(WED, tick=False)
def test_the_workspace_says_why_a_stale_list_cannot_be_booked(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    doc.registrations[0].expires_on = WED.date() - timedelta(days=30)
    db.session.commit()
    data = {"physician_id": str(doc.id), "starts": "2026-11-20T09:00", "tz_basis": "patient", "mode": "in_person"}
    resp = form_post(client, f"/leads/{lead.id}/appointments", lead, duration="30", **data)
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "can no longer be booked for this lead: registration expired 2026-10-19." in page
    assert "press Re-match for a current one" in page and ">Re-match</button>" in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 0


@time_machine.travel(WED, tick=False)
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"physician_id": "", "starts": "2026-11-20T09:00"}, "Choose the physician."),
        ({"physician_id": "abc", "starts": "2026-11-20T09:00"}, "Choose the physician."),
        ({"physician_id": "OTHER", "starts": "2026-11-20T09:00"}, "Pick a physician from the match list."),
        ({"physician_id": "DOC", "starts": ""}, "Pick the appointment time."),
        ({"physician_id": "DOC", "starts": "friday 9am"}, "Not a valid datetime value."),
        ({"physician_id": "DOC", "starts": "2026-11-17T09:00"}, "The appointment must be in the future."),
        ({"physician_id": "DOC", "starts": "2026-11-20T09:00", "duration": "0"}, "between 5 and 240"),
        ({"physician_id": "DOC", "starts": "2026-11-20T09:00", "duration": "x"}, "Not a valid integer value."),
        ({"physician_id": "DOC", "starts": "2026-11-20T09:00", "mode": "drone"}, "Not a valid choice."),
    ],
)
def test_bad_booking_input_gives_a_clear_error(client, auth, db, specialist, data, message):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    other = PhysicianFactory()
    db.session.commit()
    data = {"tz_basis": "patient", "mode": "in_person", "duration": "30", **data}
    data["physician_id"] = {"DOC": str(doc.id), "OTHER": str(other.id)}.get(data["physician_id"], data["physician_id"])
    resp = form_post(client, f"/leads/{lead.id}/appointments", lead, **data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 0


@time_machine.travel(WED, tick=False)
def test_bad_outcome_input(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist)
    db.session.commit()
    for data, message in [
        ({"outcome": "maybe"}, "Not a valid choice."),
        ({"outcome": "completed"}, "has not happened yet"),
        ({"outcome": "cancelled", "note": "n" * 501}, "longer than 500"),
    ]:
        resp = form_post(client, f"/leads/{lead.id}/appointments/{appt.id}/outcome", lead, **data)
        assert resp.status_code == 422 and message in resp.get_data(as_text=True), data
    resp = form_post(client, f"/leads/{lead.id}/appointments/99999/outcome", lead, outcome="cancelled")
    assert resp.status_code == 422 and "does not belong to this lead" in resp.get_data(as_text=True)


# ----------------------------------------------------------------- eligibility override (not / not yet eligible)

NOT_ELIGIBLE = evaluate(state="TX", program=None, condition=None, age=None)  # "No medical cannabis program in TX."
TO_CONFIRM = evaluate(
    state="AZ",
    program=ProgramFacts(state="AZ", name="Arizona", program_type="medical", qualifying=frozenset({"pain"})),
    condition=ConditionFacts("pain", "Chronic pain"),
    age=None,
)  # "Age not confirmed: AZ requires 18 or older."


@pytest.mark.parametrize(
    ("eligibility", "status", "reason"),
    [
        (NOT_ELIGIBLE, "not_eligible", "No medical cannabis program in TX."),
        (TO_CONFIRM, "to_confirm", "Age not confirmed: AZ requires 18 or older."),
    ],
)
def test_a_lead_not_eligible_or_to_confirm_is_booked_only_with_the_override(
    db, specialist, eligibility, status, reason
):
    assert eligibility["eligible"] is (False if status == "not_eligible" else None)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    lead.eligibility = eligibility
    db.session.commit()
    args = {"physician_id": doc.id, "starts_at": LATER, "mode": "in_person", "actor": specialist, "now": WED}
    with pytest.raises(booking.EligibilityOverrideNeeded, match=reason.replace(".", r"\.")):
        booking.book(lead, **args)
    assert lead.status == S.CONTACTED and not lead.appointments
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEmail)) == 0  # nobody emailed

    booking.book(lead, **args, override=True)
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.APPOINTMENT_BOOKED)).one()
    assert event.data["override"] is True and event.data["eligibility"] == status
    assert event.data["eligibility_reason"] == reason


def test_an_eligible_lead_books_without_the_override_and_records_none(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    lead.eligibility = dict(TO_CONFIRM, eligible=True, reasons=[])
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.APPOINTMENT_BOOKED)).one()
    assert "override" not in event.data and "eligibility" not in event.data


@time_machine.travel(WED, tick=False)
def test_the_booking_form_asks_for_the_override_keeps_what_was_typed_and_shows_it_on_the_timeline(
    client, auth, db, specialist
):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    lead.eligibility = NOT_ELIGIBLE
    db.session.commit()
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert 'name="override"' in page and "Book anyway: I checked this with the patient / the physician decides" in page
    assert "<strong>Not eligible:</strong> No medical cannabis program in TX." in page

    data = {"physician_id": str(doc.id), "starts": "2026-11-20T09:00", "tz_basis": "patient", "mode": "in_person"}
    resp = form_post(client, f"/leads/{lead.id}/appointments", lead, duration="45", notes="Bring records", **data)
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "Tick this to book a lead that is not (or not yet) eligible." in page  # the field's own error
    assert "This lead is not eligible: No medical cannabis program in TX." in page
    assert 'value="2026-11-20T09:00"' in page and "Bring records" in page and 'value="45"' in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 0
    assert client.post(
        f"/leads/{lead.id}/appointments",
        data={**data, "version": str(lead.version), "duration": "45"},
        headers={"Accept": "application/json"},
    ).get_json()["fields"]["override"] == ["Tick this to book a lead that is not (or not yet) eligible."]

    resp = form_post(client, f"/leads/{lead.id}/appointments", lead, duration="45", override="y", **data)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    db.session.expire_all()
    assert lead.status == S.BOOKED
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "booked anyway: not eligible" in page and "(No medical cannabis program in TX.)" in page


# ----------------------------------------------------------------- outcomes offered, follow-ups closed by booking


def outcome_options(page: str, appt_id: int) -> list[str]:
    select = page.split(f'id="appt-outcome-{appt_id}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="(\w+)"', select)


def test_the_outcome_list_offers_only_what_is_possible_now(client, auth, db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    with time_machine.travel(WED, tick=False):
        auth.as_user(specialist)
        page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert outcome_options(page, appt.id) == ["cancelled"]
    assert "Completed or no-show can be recorded once the visit has started." in page
    assert "Cancelling emails the patient an update that takes the invite off their calendar." in page
    assert "Closing as lost cancels the booked appointment and emails the patient" in page
    # Both ask before they run (static/app.js): the patient is emailed, and only an admin reopens a lost lead.
    assert f'data-confirm="Cancel the visit with {doc.full_name} on ' in page
    assert "lead as lost? Only an admin can reopen it. Its booked appointment is cancelled too" in page
    with time_machine.travel(LATER + timedelta(minutes=5), tick=False):
        auth.as_user(specialist)
        page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert outcome_options(page, appt.id) == ["completed", "no_show", "cancelled"]
    assert "once the visit has started" not in page
    assert booking.possible_outcomes(appt, LATER) == ["completed", "no_show", "cancelled"]  # from its start


def test_booking_closes_the_calls_planned_before_the_visit_and_leaves_later_ones(db, specialist):
    from crm.services import followups
    from crm.services.queue_counts import nav_counts

    lead, (doc,) = matched_lead(db, assignee=specialist)
    overdue = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)
    email = followups.schedule(lead, due_at=WED + timedelta(minutes=30), kind="email", actor=specialist, now=WED)
    chase = followups.schedule(lead, due_at=LATER - timedelta(hours=20), kind="call", actor=specialist, now=WED)
    after = followups.schedule(lead, due_at=LATER + timedelta(days=1), kind="call", actor=specialist, now=WED)
    db.session.commit()
    now = WED + timedelta(minutes=6)
    assert nav_counts(specialist, now)["due_n"] == 1  # "due 6m ago"
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=now)
    db.session.commit()
    # Calls planned to reach the patient are moot once they are booked: no reminder to chase them.
    for fu in (overdue, chase):
        assert fu.done_at == now and fu.outcome == "Reached the patient: appointment booked"
    assert after.done_at is None  # a call after the visit (how did it go?) is still wanted
    assert email.done_at is None  # only calls: an email still owed is still owed
    assert lead.next_follow_up_at == email.due_at and nav_counts(specialist, now)["due_n"] == 0
    done = db.session.scalars(
        sa.select(LeadEvent).where(LeadEvent.kind == EventKind.FOLLOW_UP_DONE).order_by(LeadEvent.id)
    ).all()
    assert [e.data for e in done] == [
        {"follow_up_id": fu.id, "kind": "call", "outcome": fu.outcome} for fu in (overdue, chase)
    ]


# ---------------------------------------------------------------- rescheduling


def test_moving_a_visit_resends_the_same_event_with_a_higher_sequence(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    assert booking.send_appointment_reminders(LATER - timedelta(hours=20)) == 1
    moved_to = LATER + timedelta(days=4)  # Tuesday 09:00 in Miami
    booking.reschedule(appt, starts_at=moved_to, actor=specialist, now=LATER - timedelta(hours=19))
    db.session.commit()
    assert appt.starts_at == moved_to and appt.ics_sequence == 1 and appt.reminder_sent_at is None
    assert lead.status == S.BOOKED and appt.status == AppointmentStatus.BOOKED
    confirmation, _reminder, moved = db.session.scalars(sa.select(OutboxEmail).order_by(OutboxEmail.id)).all()
    assert moved.kind == "appointment_rescheduled"
    assert moved.subject == f"New time: your appointment with {doc.full_name} on Nov 24"
    assert "has moved to a new time (it was Friday, November 20 at 09:00 AM)" in moved.body_text
    assert "Tuesday, November 24, 2026 at 09:00 AM EST" in moved.body_text
    (first,) = Calendar.from_ical(confirmation.ics).walk("VEVENT")
    (again,) = Calendar.from_ical(moved.ics).walk("VEVENT")
    assert str(again["uid"]) == str(first["uid"]) and again.decoded("sequence") == 1 > first.decoded("sequence")
    assert again.decoded("dtstart") == moved_to and str(again["status"]) == "CONFIRMED"
    (event,) = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.APPOINTMENT_RESCHEDULED))
    assert event.data["from_starts_at"] == LATER.isoformat() and event.data["starts_at"] == moved_to.isoformat()
    # The reminder belongs to the new time; a cancellation then goes above the move's sequence.
    assert booking.send_appointment_reminders(moved_to - timedelta(hours=20)) == 1
    booking.set_outcome(appt, "cancelled", actor=specialist, now=moved_to - timedelta(hours=2))
    cancellation = db.session.scalars(sa.select(OutboxEmail).order_by(OutboxEmail.id.desc())).first()
    (gone,) = Calendar.from_ical(cancellation.ics).walk("VEVENT")
    assert cancellation.kind == "appointment_cancellation" and gone.decoded("sequence") == 2


def test_moving_a_visit_within_its_own_slot_is_no_clash_but_onto_another_is(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    booking.reschedule(appt, starts_at=LATER + timedelta(minutes=15), actor=specialist, now=WED)
    other, _ = matched_lead(db, assignee=specialist)
    other.match_result = lead.match_result
    booking.book(
        other, physician_id=doc.id, starts_at=LATER + timedelta(hours=2), mode="in_person", actor=specialist, now=WED
    )
    with pytest.raises(BookingError, match="already has an appointment at that time"):
        booking.reschedule(appt, starts_at=LATER + timedelta(hours=2, minutes=10), actor=specialist, now=WED)
    assert appt.starts_at == LATER + timedelta(minutes=15) and appt.ics_sequence == 1


def test_moves_that_are_refused(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    cases = [
        (LATER, WED, "the time it is booked for already"),
        (WED - timedelta(hours=1), WED, "must be in the future"),
        (WED + timedelta(days=400), WED, "within the next year"),
        (LATER + timedelta(days=1), LATER + timedelta(minutes=5), "time has passed: record its outcome"),
        (datetime(2026, 11, 25, 9, 0), WED, "needs a time zone"),
    ]
    for starts, now, message in cases:
        with pytest.raises(BookingError, match=message):
            booking.reschedule(appt, starts_at=starts, actor=specialist, now=now)
    doc.registrations[0].expires_on = LATER.date() + timedelta(days=2)
    with pytest.raises(BookingError, match="registration expires on 2026-11-22, before this visit"):
        booking.reschedule(appt, starts_at=LATER + timedelta(days=4), actor=specialist, now=WED)
    doc.active = False
    with pytest.raises(BookingError, match="no longer active: cancel the appointment and book another"):
        booking.reschedule(appt, starts_at=LATER + timedelta(days=1), actor=specialist, now=WED)
    doc.active = True
    booking.set_outcome(appt, "cancelled", actor=specialist, now=WED)
    with pytest.raises(BookingError, match="This appointment is cancelled: book a new one instead"):
        booking.reschedule(appt, starts_at=LATER + timedelta(days=1), actor=specialist, now=WED)
    assert appt.starts_at == LATER and appt.ics_sequence == 1  # only the cancellation raised it


def test_moving_a_visit_of_a_patient_without_email_notes_that_nobody_was_emailed(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist, email=None)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    booking.reschedule(appt, starts_at=LATER + timedelta(days=1), actor=specialist, now=WED)
    notes = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.NOTE)).all()
    assert [n.data["text"] for n in notes][-1] == "No email about the new time: the patient has no email address."
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEmail)) == 0


@time_machine.travel(WED, tick=False)
def test_reschedule_route_from_the_lead_page(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Move to another time" in page and f"/appointments/{appt.id}/reschedule" in page
    url = f"/leads/{lead.id}/appointments/{appt.id}/reschedule"
    resp = form_post(client, url, lead, starts="", tz_basis="patient")
    assert resp.status_code == 422 and "Pick the new time." in resp.get_data(as_text=True)
    resp = form_post(client, url, lead, starts="2026-11-17T09:00", tz_basis="patient")
    assert resp.status_code == 422 and "The appointment must be in the future." in resp.get_data(as_text=True)
    assert '<details class="reschedule mt-1" open>' in resp.get_data(as_text=True)  # the error is in view
    resp = form_post(client, url, lead, starts="2026-11-24T10:30", tz_basis="patient")
    assert resp.status_code == 302
    db.session.expire_all()
    assert appt.starts_at == datetime(2026, 11, 24, 15, 30, tzinfo=UTC)  # 10:30 in Miami
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Appointment moved; the patient is emailed the new time with a calendar update." in page
    assert "Appointment moved</strong> to Tue Nov 24" in page
    assert "Moved: the new time with a calendar update queued" in page
    # Another lead's appointment cannot be moved through this lead's address.
    other, _ = matched_lead(db, assignee=specialist)
    resp = form_post(client, f"/leads/{other.id}/appointments/{appt.id}/reschedule", other, starts="2026-11-25T10:30")
    assert resp.status_code == 422 and "does not belong to this lead" in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    ("local", "minutes", "refused"),
    [("21:30", 240, True), ("20:30", 240, True), ("20:00", 240, False), ("21:59", 30, False)],
)
def test_a_long_visit_must_end_by_midnight_for_the_patient(db, specialist, local, minutes, refused):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    hour, minute = map(int, local.split(":"))
    starts = datetime(2026, 11, 20, hour, minute, tzinfo=booking.patient_zone(lead.patient))  # Miami
    book = functools.partial(booking.book, lead, physician_id=doc.id, mode="in_person", actor=specialist, now=WED)
    if not refused:
        assert book(starts_at=starts, duration_minutes=minutes).starts_at == starts
        return
    with pytest.raises(BookingError, match=r"would end at \d\d:\d\d AM for the patient, past midnight their time"):
        book(starts_at=starts, duration_minutes=minutes)
    appt = book(starts_at=starts - timedelta(hours=3), duration_minutes=minutes)  # earlier: fine
    with pytest.raises(BookingError, match="Start it earlier or make it shorter"):
        booking.reschedule(appt, starts_at=starts + timedelta(days=1), actor=specialist, now=WED)


@pytest.mark.parametrize(
    ("local", "suggested"),
    [("02:00", "02:00 PM"), ("05:59", "05:59 PM"), ("22:00", "10:00 AM"), ("23:30", "11:30 AM"), ("00:15", "12:15 PM")],
)
def test_a_visit_in_the_middle_of_the_night_is_taken_for_an_am_pm_slip(db, specialist, local, suggested):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    hour, minute = map(int, local.split(":"))
    starts = datetime(2026, 11, 20, hour, minute, tzinfo=booking.patient_zone(lead.patient))  # Miami
    with pytest.raises(BookingError, match=f"visits start between 6 AM and 10 PM their time. Did you mean {suggested}"):
        booking.book(lead, physician_id=doc.id, starts_at=starts, mode="in_person", actor=specialist, now=WED)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    with pytest.raises(BookingError, match=f"Did you mean {suggested}"):
        booking.reschedule(appt, starts_at=starts + timedelta(days=1), actor=specialist, now=WED)
    assert appt.starts_at == LATER


def test_the_first_and_last_bookable_minutes(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    miami = booking.patient_zone(lead.patient)
    appt = booking.book(
        lead, physician_id=doc.id, starts_at=datetime(2026, 11, 20, 6, 0, tzinfo=miami), mode="in_person",
        actor=specialist, now=WED,
    )  # fmt: skip
    booking.reschedule(appt, starts_at=datetime(2026, 11, 20, 21, 59, tzinfo=miami), actor=specialist, now=WED)
    assert appt.starts_at.astimezone(miami).hour == 21


@time_machine.travel(WED, tick=False)
def test_the_booking_form_names_the_slip_and_keeps_what_was_typed(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    data = {"physician_id": str(doc.id), "starts": "2026-11-20T03:00", "tz_basis": "patient", "mode": "in_person"}
    resp = form_post(client, f"/leads/{lead.id}/appointments", lead, duration="30", **data)
    page = resp.get_data(as_text=True)
    assert (
        resp.status_code == 422
        and "That is 03:00 AM for the patient" in page
        and "Did you mean 03:00 PM their time?" in page
    )
    assert 'value="2026-11-20T03:00"' in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 0


@time_machine.travel(WED, tick=False)
def test_a_double_click_on_book_says_booked_not_that_nothing_was_saved(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    data = {"physician_id": str(doc.id), "starts": "2026-11-20T15:00", "tz_basis": "patient", "mode": "in_person"}
    version = str(lead.version)  # both posts come from the same page
    first = client.post(f"/leads/{lead.id}/appointments", data=dict(data, duration="30", version=version))
    assert first.status_code == 302
    second = client.post(f"/leads/{lead.id}/appointments", data=dict(data, duration="30", version=version))
    assert second.status_code == 302
    page = client.get(second.headers["Location"]).get_data(as_text=True)
    assert "the form was sent twice: it is booked once" in page and "was not saved" not in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 1
    # Another time from the same stale page is not booked: refused as a second send (crm/leads/routes.py).
    other = client.post(
        f"/leads/{lead.id}/appointments", data=dict(data, starts="2026-11-20T16:00", duration="30", version=version)
    )
    assert other.status_code == 409 and "This second send was not applied" in other.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 1


def test_a_long_visit_clashes_with_a_shorter_one_starting_inside_it(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    booking.book(
        lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, duration_minutes=60, now=WED
    )
    other, _ = matched_lead(db, assignee=specialist)
    other.match_result = lead.match_result
    with pytest.raises(BookingError, match="already has an appointment at that time"):
        booking.book(other, physician_id=doc.id, starts_at=LATER + timedelta(minutes=40), mode="in_person",
                     actor=specialist, now=WED)  # fmt: skip
    booking.book(other, physician_id=doc.id, starts_at=LATER + timedelta(minutes=60), mode="in_person",
                 actor=specialist, now=WED)  # fmt: skip


def test_a_visit_cannot_be_moved_once_the_physician_has_no_registration_in_the_state(db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.delete(doc.registrations[0])
    db.session.flush()
    with pytest.raises(BookingError, match="has no registration in FL now: cancel the appointment and book another"):
        booking.reschedule(appt, starts_at=LATER + timedelta(days=1), actor=specialist, now=WED)


@time_machine.travel(WED, tick=False)
def test_a_page_loaded_before_a_move_is_stale_for_a_second_move_or_a_cancel(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    seen = str(lead.version)  # two tabs opened on the booked lead
    move = f"/leads/{lead.id}/appointments/{appt.id}/reschedule"
    first = client.post(move, data={"version": seen, "starts": "2026-11-24T10:30", "tz_basis": "patient"})
    assert first.status_code == 302
    second = client.post(move, data={"version": seen, "starts": "2026-11-25T10:30", "tz_basis": "patient"})
    assert second.status_code == 409
    cancel = client.post(
        f"/leads/{lead.id}/appointments/{appt.id}/outcome", data={"version": seen, "outcome": "cancelled"}
    )
    assert cancel.status_code == 409
    db.session.expire_all()
    assert appt.starts_at == datetime(2026, 11, 24, 15, 30, tzinfo=UTC) and appt.status == AppointmentStatus.BOOKED
    kinds = db.session.scalars(sa.select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["appointment_confirmation", "appointment_rescheduled"]


def test_a_reminder_is_not_claimed_for_a_visit_cancelled_after_it_was_listed(db, specialist, monkeypatch):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    listed = db.session.scalars

    def list_then_cancel_elsewhere(statement, *args, **kwargs):
        result = listed(statement, *args, **kwargs)
        ids = result.all()  # the job's list, then a specialist's cancellation commits before the claim
        db.session.execute(sa.update(Appointment.__table__).where(Appointment.__table__.c.id == appt.id)
                           .values(status=AppointmentStatus.CANCELLED.value))  # fmt: skip
        return type("Listed", (), {"all": lambda self: ids})()

    monkeypatch.setattr(db.session, "scalars", list_then_cancel_elsewhere)
    assert booking.send_appointment_reminders(LATER - timedelta(hours=20)) == 0
    monkeypatch.undo()
    assert db.session.scalar(sa.select(Appointment.reminder_sent_at)) is None
    assert db.session.scalars(sa.select(OutboxEmail.kind)).all() == ["appointment_confirmation"]


@time_machine.travel(WED, tick=False)
def test_a_physician_deactivated_since_the_match_is_marked_and_not_offered(client, auth, db, specialist):
    auth.as_user(specialist)
    lead, (gone, other) = matched_lead(db, assignee=specialist, physicians=2)
    gone.active = False
    db.session.commit()
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "no longer active since this match: Re-match" in page
    select = page.split('id="physician_id"', 1)[1].split("</select>", 1)[0]
    assert f'value="{other.id}"' in select and f'value="{gone.id}"' not in select
    data = {"physician_id": str(gone.id), "starts": "2026-11-20T09:00", "tz_basis": "patient", "mode": "in_person"}
    resp = form_post(client, f"/leads/{lead.id}/appointments", lead, duration="30", **data)
    assert resp.status_code == 422 and db.session.scalar(sa.select(sa.func.count()).select_from(Appointment)) == 0
    with pytest.raises(BookingError, match="is no longer active in the directory: book another physician"):
        booking.book(lead, physician_id=gone.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)


def test_a_booked_visit_whose_registration_lapses_is_flagged_on_the_lead_and_for_admins(
    client, auth, db, specialist, admin
):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    assert booking.registration_problem(appt) is None and booking.visits_at_risk(WED) == []
    doc.registrations[0].expires_on = LATER.date() - timedelta(days=1)  # renewed too late, or a typo fixed
    db.session.commit()
    problem = f"{doc.full_name}'s FL registration expires on 2026-11-19, before this visit"
    assert booking.registration_problem(appt, WED) == problem
    # Once the day has passed, no earlier visit day can help: the message says it expired.
    expired = f"{doc.full_name}'s FL registration expired on 2026-11-19"
    assert booking.registration_problem(appt, LATER - timedelta(hours=2)) == expired
    assert [(a.id, p) for a, p in booking.visits_at_risk(WED)] == [(appt.id, problem)]
    assert booking.visits_at_risk(LATER + timedelta(hours=1)) == []  # a visit past is no longer at risk
    with time_machine.travel(WED, tick=False):
        auth.as_user(specialist)
        page = unescape(client.get(f"/leads/{lead.id}").get_data(as_text=True))
        assert f"{problem}: they cannot certify the patient at it." in page
        auth.logout()
        auth.as_user(admin)
        overview = unescape(client.get("/admin/").get_data(as_text=True))
    assert "Booked visits the physician cannot certify at (1)" in overview and problem in overview
    db.session.delete(doc.registrations[0])
    db.session.commit()
    assert booking.registration_problem(appt) == f"{doc.full_name} has no registration in FL"


@pytest.mark.parametrize("mode", ["in_person", "telehealth"])
def test_a_physician_listed_for_both_modes_keeps_the_line_of_the_chosen_mode(app, mode):
    """Sent back with an error, the drop-down showed the telehealth line (both were 'selected' and the
    browser shows the last) while Visit said In person: Book again booked what the screen did not say."""
    from werkzeug.datastructures import MultiDict

    from crm.leads.forms import BookingForm

    with app.test_request_context(method="POST"):
        form = BookingForm(formdata=MultiDict({"physician_id": "7", "mode": mode}), meta={"csrf": False})
        form.physician_id.choices = [
            (3, "Ann Lee, MD — 2.0 mi", {"data-mode": "in_person"}),
            (7, "Luca White, MD — 67.2 mi", {"data-mode": "in_person"}),
            (7, "Luca White, MD — telehealth", {"data-mode": "telehealth"}),
        ]
        html = str(form.physician_id())
    selected = re.findall(r"<option[^>]*selected[^>]*>([^<]*)</option>", html)
    assert selected == ["Luca White, MD — " + ("67.2 mi" if mode == "in_person" else "telehealth")]


def test_a_visit_past_without_an_outcome_asks_for_it_once_through_a_follow_up(app, client, auth, db, specialist):
    """A booked lead whose visit had passed sat at the bottom of Mine with no next step, for good."""
    from crm.jobs import JOBS_BY_ID, run_job
    from crm.models import FollowUp

    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    recorded, (doc2,) = matched_lead(db, assignee=specialist)
    done = booking.book(recorded, physician_id=doc2.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    assert booking.plan_outcome_follow_ups(LATER + timedelta(minutes=89)) == 0  # 30 min visit + 1 h grace
    booking.set_outcome(done, "completed", actor=specialist, now=LATER + timedelta(minutes=40))
    db.session.commit()

    later = LATER + timedelta(minutes=91)
    assert booking.plan_outcome_follow_ups(later) == 1
    db.session.commit()
    fu = db.session.scalar(sa.select(FollowUp).where(FollowUp.lead_id == lead.id))
    assert fu.owner_id == specialist.id and fu.kind.value == "call" and fu.due_at == later
    assert f"The visit with {doc.full_name}" in fu.note and "record its outcome" in fu.note
    assert lead.next_follow_up_at == later and appt.status == AppointmentStatus.BOOKED
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FollowUp)) == 1  # not for the recorded one
    assert appt.outcome_asked_at == later and appt.outcome_follow_up_id == fu.id
    assert "EST has passed" in fu.note  # the visit's time with its zone, for a specialist elsewhere
    with time_machine.travel(later + timedelta(minutes=1), tick=False):
        run = run_job(JOBS_BY_ID["visit_outcomes"])  # again: this visit was asked about
        assert run.summary.startswith("0 past visit(s)")
        auth.as_user(specialist)
        due = client.get("/queue?view=due").get_data(as_text=True)
    assert f'href="/leads/{lead.id}"' in due and f'href="/leads/{recorded.id}"' not in due

    # The call went unanswered and the follow-up was closed: asked once, it is not planned again.
    followups.close(fu, actor=specialist, outcome="no_answer", now=later + timedelta(minutes=5))
    db.session.commit()
    assert booking.plan_outcome_follow_ups(later + timedelta(minutes=20)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FollowUp)) == 1


def test_recording_the_outcome_closes_the_follow_up_that_asked_for_it(client, auth, db, specialist):
    from crm.models import FollowUp

    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    asked = LATER + timedelta(hours=2)
    assert booking.plan_outcome_follow_ups(asked) == 1
    db.session.commit()
    with time_machine.travel(asked + timedelta(minutes=10), tick=False):
        auth.as_user(specialist)
        resp = form_post(client, f"/leads/{lead.id}/appointments/{appt.id}/outcome", lead, outcome="no_show", note="")
        assert resp.status_code == 302 and resp.headers["Location"].endswith("#follow-ups")
        page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Next step planned: a call on" in page  # back to contacted: a check-in, to rebook
    fu = db.session.scalar(sa.select(FollowUp).order_by(FollowUp.id))
    assert fu.done_at is not None and fu.outcome == "visit outcome recorded: no show"


def test_an_outcome_recorded_before_the_job_claims_the_visit_is_not_asked_about(db, specialist, monkeypatch):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    # Listed by the job's look-up, then recorded by the specialist before its claim: the claim's own
    # conditions see the visit is no longer live.
    original = db.session.execute

    def record_after_the_look_up(statement, *args, **kwargs):
        result = original(statement, *args, **kwargs)
        if getattr(statement, "is_select", False) and "outcome_asked_at" in str(statement):
            monkeypatch.setattr(db.session, "execute", original)
            booking.set_outcome(appt, "completed", actor=specialist, now=LATER + timedelta(hours=1))
        return result

    monkeypatch.setattr(db.session, "execute", record_after_the_look_up)
    assert booking.plan_outcome_follow_ups(LATER + timedelta(hours=2)) == 0
    assert appt.outcome_asked_at is None and not lead.follow_ups


def test_a_visit_that_ended_at_night_asks_for_its_outcome_when_the_patient_may_be_called(db, specialist):
    from crm.models import FollowUp

    lead, (doc,) = matched_lead(db, assignee=None)
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    night = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)  # Fri 23:00 in Miami: outside the calling window
    assert booking.plan_outcome_follow_ups(night) == 1
    fu = db.session.scalar(sa.select(FollowUp))
    assert fu.owner_id is None  # nobody holds the lead: its owner will be whoever takes it
    assert fu.due_at == datetime(2026, 11, 21, 14, 0, tzinfo=UTC)  # Saturday 09:00 patient time


def test_the_outcome_look_up_reads_only_the_visits_not_asked_about(db, specialist):
    """Every booked visit ever made would otherwise be read every ten minutes: the job's own look-up,
    as it reaches the database, is explained on each database."""
    lead, (doc,) = matched_lead(db, assignee=specialist)
    booking.book(lead, physician_id=doc.id, starts_at=LATER, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "outcome_asked_at IS NULL" in statement:
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        booking.plan_outcome_follow_ups(LATER + timedelta(hours=2))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    db.session.rollback()
    statement, parameters = seen[0]
    connection = db.session.connection().connection.driver_connection
    cursor = connection.cursor()
    if db.engine.dialect.name == "postgresql":
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    else:
        cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
    db.session.rollback()
    assert "ix_appointments_outcome_due" in plan, plan
