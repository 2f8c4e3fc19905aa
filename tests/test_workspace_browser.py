"""Playwright in Debian's Chromium: a specialist's day in the lead workspace, end to end."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from crm.models import Appointment, Lead, OutboxEmail
from crm.models.enums import LeadStatus
from tests.factories import PASSWORD
from tests.test_queue_helpers import make_lead, matched_lead

pytestmark = pytest.mark.browser

PHOENIX = ZoneInfo("America/Phoenix")


def next_workday_at(hour: int, days_ahead: int) -> datetime:
    """A Phoenix wall time ``days_ahead`` days from now (moved off Sunday), inside the calling window."""
    day = datetime.now(PHOENIX).date() + timedelta(days=days_ahead)
    if day.weekday() == 6:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, 0)


def test_get_next_call_follow_up_and_book(live_server, page, db, specialist, screenshot):
    now = datetime.now(UTC)
    lead, (doc, second) = matched_lead(
        db, status=LeadStatus.NEW, physicians=2, first_name="Rosa", last_name="Alvarez", timezone="America/Phoenix"
    )
    lead.created_at = now - timedelta(minutes=40)
    lead.condition_text = "Dystonia"
    lead.eligibility = {
        "state": "AZ",
        "eligible": None,  # "To confirm": booking needs the override box
        "reasons": ["Age not confirmed: AZ requires 18 or older."],
        "summary": "Not decided yet for Arizona: a fact is missing.",
        "checks": [{"rule": "age", "status": "unknown", "text": "Age not confirmed: AZ requires 18 or older."}],
    }
    telehealth = dict(lead.match_result["candidates"][0], mode="telehealth", distance_miles=None)
    lead.match_result = dict(lead.match_result, candidates=[*lead.match_result["candidates"], telehealth])
    for i in range(4):  # a few more waiting leads so the queue looks like a real morning
        # Same zone as Rosa: Get next prefers patients it may ring now, so at an hour when Phoenix is
        # outside the calling window a New York patient would jump ahead; equal zones leave urgency to decide.
        make_lead(
            db,
            created_at=now - timedelta(minutes=10 + i),
            commit=False,
            last_name=f"Waiting{i}",
            timezone="America/Phoenix",
        )
    db.session.commit()

    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")

    # Get next lead: the oldest waiting lead (Rosa's) is assigned to me and opened.
    page.get_by_role("button", name=re.compile("Get next lead")).click()
    page.wait_for_url(f"{live_server.url}/leads/{lead.id}")
    assert page.get_by_text(f"Lead #{lead.id} is yours now.").is_visible()
    assert page.get_by_role("heading", name="Rosa Alvarez").is_visible()

    # "?" shows the keyboard shortcuts.
    page.keyboard.press("?")
    assert page.locator("#shortcut-help").is_visible()
    page.keyboard.press("?")

    # Log a call.
    page.get_by_label("No answer").check()
    page.locator("#call-note").fill("Rang twice, no voicemail box")
    page.get_by_role("button", name="Log call").click()
    page.wait_for_load_state()
    assert page.get_by_text("Call logged (no answer); the lead is attempting.").is_visible()

    # Schedule a call-back in the patient's time (Phoenix).
    due = next_workday_at(10, 1)
    page.locator("#due").fill(due.strftime("%Y-%m-%dT%H:%M"))
    page.locator("#tz_basis").select_option("patient")
    # Before saving, the typed time is read in both zones (the patient's, then mine in New York).
    mine = due.replace(tzinfo=PHOENIX).astimezone(ZoneInfo("America/New_York"))
    preview = page.locator("#due-preview").inner_text()
    assert f"Patient: {due:%a, %b %d}, 10:00 AM MST" in preview, preview
    assert f"You: {mine:%a, %b %d, %I:%M %p} {mine.tzname()}" in preview, preview
    page.locator("#tz_basis").select_option("mine")  # the same digits read as my time
    assert (
        page.locator("#due-preview")
        .inner_text()
        .startswith(
            f"Patient: {due - (mine.utcoffset() - due.replace(tzinfo=PHOENIX).utcoffset()):%a, %b %d, %I:%M %p} MST"
        )
    )
    page.locator("#tz_basis").select_option("patient")
    page.locator("#kind").select_option("call")
    page.locator("#fu-note").fill("Try after her morning appointment")
    page.get_by_role("button", name="Schedule").click()
    page.wait_for_load_state()
    assert page.get_by_text(re.compile(r"Follow-up scheduled: .* your time, 10:00 AM MST patient time\.")).is_visible()

    # Book with the second physician of the match list.
    starts = next_workday_at(11, 3)
    # The Visit field follows the physician's line: "— telehealth" books telehealth.
    page.locator("#physician_id").select_option(label=f"{doc.full_name} — telehealth")
    assert page.locator("#mode").input_value() == "telehealth"
    page.locator("#physician_id").select_option(str(second.id))
    assert page.locator("#mode").input_value() == "in_person"
    page.locator("#starts").fill(starts.strftime("%Y-%m-%dT%H:%M"))
    page.locator("#booking-tz").select_option("patient")
    # The visit's time read in both zones before booking, as the follow-up's is.
    mine = starts.replace(tzinfo=PHOENIX).astimezone(ZoneInfo("America/New_York"))
    preview = page.locator("#starts-preview").inner_text()
    assert f"Patient: {starts:%a, %b %d}, 11:00 AM MST" in preview, preview
    assert f"You: {mine:%a, %b %d, %I:%M %p} {mine.tzname()}" in preview, preview
    # Eligibility still to confirm: refused until "Book anyway" is ticked, with what was typed kept.
    page.get_by_role("button", name="Book and send confirmation").click()
    page.wait_for_load_state()
    assert page.locator(".booking-override .invalid-feedback").is_visible()
    assert page.locator("#starts").input_value() == starts.strftime("%Y-%m-%dT%H:%M")
    assert page.locator(".booking-override").get_by_text("Age not confirmed: AZ requires 18 or older.").is_visible()
    page.get_by_label(re.compile("Book anyway")).check()
    # A double click books once and says so, not "your change was not saved" (crm/leads/routes.py).
    page.get_by_role("button", name="Book and send confirmation").dblclick()
    page.wait_for_url(re.compile(r"/leads/\d+#appointments$"))
    page.wait_for_load_state()
    assert page.get_by_text("Appointment booked; the confirmation email").is_visible()
    # The visit is days away: only cancelling can be recorded. The call-back planned for tomorrow, before
    # the visit, was to reach a patient who is now booked: closed, so nobody is reminded to chase her.
    appt_select = page.locator("select[id^=appt-outcome-]")
    assert appt_select.locator("option").all_inner_texts() == ["Outcome…", "Cancelled"]
    assert page.locator("#follow-ups .follow-up-list li").count() == 0

    # The lead is booked and the timeline shows every step.
    timeline = page.locator("#timeline")
    for text in [
        "Assigned to Sam Specialist",
        "Call: No answer",
        "Call follow-up planned",
        "New → Attempting",
        "Contacted → Booked",
        "Appointment booked",
        "booked anyway: eligibility to confirm",
        "Email queued",
    ]:
        assert timeline.get_by_text(text).first.is_visible(), text
    assert page.locator(".lead-title .status").inner_text() == "Booked"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky navigation bar at the top of the full-page shot
    screenshot("workspace-booked")

    db.session.expire_all()
    booked = db.session.get(Lead, lead.id)
    assert booked.status == LeadStatus.BOOKED and booked.assignee_id == specialist.id
    appt = db.session.scalar(sa.select(Appointment))
    assert appt.physician_id == second.id
    assert appt.starts_at == starts.replace(tzinfo=PHOENIX).astimezone(UTC)
    assert db.session.scalar(sa.select(OutboxEmail.kind)) == "appointment_confirmation"

    # The patient asks for a day later: moved from the same card, the email and invite follow.
    page.locator("details.reschedule summary").click()
    later = starts + timedelta(days=1)
    page.locator("#reschedule-starts").fill(later.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Move", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_text("Appointment moved; the patient is emailed the new time").is_visible()
    assert page.locator("#timeline").get_by_text("Appointment moved").first.is_visible()
    db.session.expire_all()
    appt = db.session.scalar(sa.select(Appointment))
    assert appt.starts_at == later.replace(tzinfo=PHOENIX).astimezone(UTC) and appt.ics_sequence == 1
    kinds = db.session.scalars(sa.select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["appointment_confirmation", "appointment_rescheduled"]

    # The queue: Mine holds the booked lead; Unassigned shows the others with their SLA clocks.
    page.goto(f"{live_server.url}/queue?view=mine")
    assert page.get_by_role("link", name="Rosa Alvarez").is_visible()
    page.goto(f"{live_server.url}/queue?view=unassigned")
    assert page.locator("table.table-queue tbody tr").count() == 4
    screenshot("queue-unassigned")

    # What cannot be taken back asks first: cancelling the visit (the patient is emailed), then
    # closing the lead as lost (only an admin reopens it). Saying no leaves both as they were.
    page.goto(f"{live_server.url}/leads/{lead.id}")
    asked = []

    def answer(dialog, accept):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.locator("select[id^=appt-outcome-]").select_option("cancelled")
    page.once("dialog", lambda d: answer(d, False))
    page.get_by_role("button", name="Record").click()
    assert asked[-1].startswith(f"Cancel the visit with {second.full_name} on ") and asked[-1].endswith(
        "and email Rosa the cancellation?"
    ), asked
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).status == LeadStatus.BOOKED
    page.once("dialog", lambda d: answer(d, True))
    page.get_by_role("button", name="Record").click()
    page.wait_for_load_state()
    assert page.locator(".lead-title .status").inner_text() == "Contacted"

    page.locator("#to").select_option("lost")
    page.locator("#lost_reason").select_option(index=1)
    page.once("dialog", lambda d: answer(d, False))
    page.get_by_role("button", name="Change status").click()
    assert asked[-1] == "Close Rosa Alvarez's lead as lost? Only an admin can reopen it.", asked
    assert page.locator(".lead-title .status").inner_text() == "Contacted"
    page.once("dialog", lambda d: answer(d, True))
    page.get_by_role("button", name="Change status").click()
    page.wait_for_load_state()
    assert page.locator(".lead-title .status").inner_text() == "Lost"
    assert len(asked) == 4


def test_correct_the_zip_after_a_call_and_see_the_new_match(live_server, page, db, specialist, screenshot):
    from tests.factories import ConditionFactory, LeadFactory, PatientFactory, PhysicianFactory, StateProgramFactory

    dystonia = ConditionFactory(name="Dystonia", slug="dystonia")
    for state, name in (("FL", "Florida"), ("GA", "Georgia")):
        StateProgramFactory(state=state, name=name).qualifying_conditions = [dystonia]
    PhysicianFactory(first_name="Maria", last_name="Miami", latitude=25.78, longitude=-80.20, state="FL")
    PhysicianFactory(first_name="Adam", last_name="Atlanta", latitude=33.75, longitude=-84.39, state="GA")
    lead = LeadFactory(
        condition=dystonia, assignee=specialist, patient=PatientFactory(first_name="Jo", last_name="Rivers")
    )
    db.session.commit()

    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")
    page.goto(f"{live_server.url}/leads/{lead.id}")
    assert page.get_by_text("Not matched yet").is_visible()  # created by a factory, never enriched
    page.keyboard.press("b")  # nobody to book yet: b goes to the card that says why
    assert page.evaluate("document.activeElement.id") == "appointments"
    assert page.locator("#appointments .no-booking").is_visible()

    page.keyboard.press("e")  # the Edit details shortcut
    page.wait_for_url(f"{live_server.url}/leads/{lead.id}/details")
    page.get_by_label("ZIP").fill("3030")  # a typo first: refused, nothing else lost
    page.get_by_label("City").fill("Atlanta")
    page.get_by_role("button", name="Save").click()
    assert page.get_by_text("Enter a 5-digit ZIP code (or ZIP+4).").is_visible()
    assert page.get_by_label("City").input_value() == "Atlanta"
    page.get_by_label("ZIP").fill("30303")
    page.get_by_label("State").select_option("GA")
    screenshot("lead-details-form")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/leads/{lead.id}")
    assert page.get_by_text("The new address is located.").is_visible()
    match = page.locator("#match")
    assert match.get_by_text("Adam Atlanta").is_visible()
    assert page.get_by_text("Details edited").is_visible()
    screenshot("lead-details-saved")


def test_on_a_phone_the_queue_shows_the_search_and_folds_the_other_filters(
    live_server, page, db, specialist, screenshot
):
    make_lead(db, last_name="Okafor")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")
    assert page.locator("#q").is_visible() and not page.locator("#status").is_visible()
    assert page.get_by_text("Okafor").first.is_visible()
    screenshot("queue-phone")
    page.get_by_role("button", name="More filters").click()
    assert page.locator("#status").is_visible() and page.locator("#created_to").is_visible()
    page.locator("#state").select_option("FL")
    page.get_by_role("button", name="Filter", exact=True).click()
    page.wait_for_url("**state=FL**")
    assert page.locator("#status").is_visible()  # a filter in use stays in sight
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}/queue")
    assert page.locator("#status").is_visible() and not page.get_by_role("button", name="More filters").is_visible()
