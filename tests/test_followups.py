"""Follow-ups: scheduling in the patient's window, both time zones shown, reminders once."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from crm.models import AuditLog, FollowUp, Notification, OutboxEmail
from crm.models.enums import ContactMethod, EventKind, LeadStatus
from crm.services import followups
from crm.services.calling_window import make_window
from crm.services.followups import CallingWindowError, FollowUpError, send_reminders
from tests.factories import UserFactory
from tests.test_queue_helpers import WED, form_post, make_lead

S = LeadStatus


def test_schedule_updates_the_lead_and_the_timeline(db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED + timedelta(hours=2), kind="call", actor=specialist, note="x", now=WED)
    db.session.commit()
    assert lead.next_follow_up_at == fu.due_at == WED + timedelta(hours=2) and fu.owner_id == specialist.id
    assert lead.events[-1].kind == EventKind.FOLLOW_UP_SCHEDULED
    followups.complete(fu, actor=specialist, outcome="done", now=WED)
    assert lead.next_follow_up_at is None
    with pytest.raises(FollowUpError, match="already done"):
        followups.complete(fu, actor=specialist)


def test_closing_a_lead_closes_its_open_follow_ups_and_the_timeline_says_how_many(client, auth, db, specialist):
    from crm.services.workflow import change_status

    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    for hours in (2, 26):
        followups.schedule(lead, due_at=WED + timedelta(hours=hours), kind="call", actor=specialist, now=WED)
    change_status(lead, S.LOST, actor=specialist, reason="not_interested", now=WED)
    db.session.commit()
    assert all(fu.done_at == WED and fu.outcome == "lead lost" for fu in lead.follow_ups)
    assert lead.events[-1].data["follow_ups_closed"] == 2
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "· 2 open follow-ups closed" in page


@pytest.mark.parametrize(
    ("tz", "due", "suggested"),
    [
        # 07:00 in Honolulu (17:00 UTC) -> 09:00 HST the same day (19:00 UTC).
        ("Pacific/Honolulu", datetime(2026, 11, 18, 17, 0, tzinfo=UTC), datetime(2026, 11, 18, 19, 0, tzinfo=UTC)),
        # 21:00 in Phoenix on Wednesday -> Thursday 09:00 MST.
        ("America/Phoenix", datetime(2026, 11, 19, 4, 0, tzinfo=UTC), datetime(2026, 11, 19, 16, 0, tzinfo=UTC)),
        # Sunday noon in New York -> Monday 09:00 EST.
        ("America/New_York", datetime(2026, 11, 22, 17, 0, tzinfo=UTC), datetime(2026, 11, 23, 14, 0, tzinfo=UTC)),
    ],
)
def test_a_call_outside_the_window_is_refused_with_the_next_allowed_time(db, specialist, tz, due, suggested):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist, timezone=tz)
    with pytest.raises(CallingWindowError) as err:
        followups.schedule(lead, due_at=due, kind="call", actor=specialist, now=WED)
    assert err.value.suggestion == suggested
    assert "outside the patient's calling window" in str(err.value) and tz in str(err.value)
    # An email follow-up may be planned at any hour.
    assert followups.schedule(lead, due_at=due, kind="email", actor=specialist, now=WED).due_at == due


def test_refusals(db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    with pytest.raises(FollowUpError, match="in the past"):
        followups.schedule(lead, due_at=WED - timedelta(hours=1), kind="call", actor=specialist, now=WED)
    with pytest.raises(FollowUpError, match="within the next year"):
        followups.schedule(lead, due_at=WED + timedelta(days=400), kind="call", actor=specialist, now=WED)
    with pytest.raises(FollowUpError, match="needs a time zone"):
        followups.schedule(lead, due_at=datetime(2026, 11, 19, 15), kind="call", actor=specialist, now=WED)
    lead.status = S.LOST
    with pytest.raises(FollowUpError, match="closed"):
        followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)


def test_patient_timezone_falls_back_to_zip_then_business_zone(app, db):
    lead = make_lead(db, timezone=None, zip="96813")  # Honolulu ZIP
    assert followups.patient_timezone(lead.patient) == ("Pacific/Honolulu", True)
    lead.patient.zip = ""
    assert followups.patient_timezone(lead.patient) == ("America/New_York", False)


@time_machine.travel(WED, tick=False)
def test_schedule_route_shows_both_time_zones(client, auth, db):
    me = UserFactory(email="la@example.com", timezone="America/Los_Angeles")
    db.session.commit()
    auth.as_user(me)
    lead = make_lead(db, status=S.ATTEMPTING, assignee=me, timezone="America/Phoenix")
    resp = form_post(
        client, f"/leads/{lead.id}/follow-ups", lead, due="2026-11-19T10:00", tz_basis="patient", kind="call", note=""
    )
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    # 10:00 MST patient time is 09:00 PST for the specialist.
    assert "Follow-up scheduled: Thu Nov 19, 09:00 AM PST your time, 10:00 AM MST patient time." in page
    assert "10:00 AM MST patient time" in page
    assert db.session.scalar(sa.select(FollowUp.due_at)) == datetime(2026, 11, 19, 17, 0, tzinfo=UTC)
    # A patient whose day is not the specialist's: the patient's date is named too.
    guam = make_lead(db, status=S.ATTEMPTING, assignee=me, timezone="Pacific/Guam")
    resp = form_post(
        client, f"/leads/{guam.id}/follow-ups", guam, due="2026-11-20T10:00", tz_basis="patient", kind="call", note=""
    )
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Follow-up scheduled: Thu Nov 19, 04:00 PM PST your time, Fri Nov 20, 10:00 AM ChST patient time." in page


@time_machine.travel(WED, tick=False)
def test_schedule_route_refuses_outside_the_window_and_prefills_the_suggestion(client, auth, db, specialist):
    auth.as_user(specialist)
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist, timezone="Pacific/Honolulu")
    resp = form_post(
        client, f"/leads/{lead.id}/follow-ups", lead, due="2026-11-19T07:30", tz_basis="patient", kind="call"
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "outside the patient&#39;s calling window" in html and "Thu Nov 19, 09:00 AM HST" in html
    assert 'value="2026-11-19T09:00"' in html  # the suggested time, ready to submit
    # Said once in full (under the form), the top message only points there; the field holding the
    # suggestion is not marked wrong.
    assert html.count("outside the patient&#39;s calling window") == 2
    assert "Not scheduled: that time is outside the patient&#39;s calling window (see below)." in html
    due = re.search(r'<input[^>]*id="due"[^>]*>', html).group(0)
    assert "is-invalid" not in due, due
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FollowUp)) == 0


@time_machine.travel(WED, tick=False)
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"due": "", "kind": "call", "tz_basis": "patient"}, "Pick the date and time."),
        ({"due": "tomorrow", "kind": "call", "tz_basis": "patient"}, "Not a valid datetime value."),
        ({"due": "2026-11-19T10:00", "kind": "fax", "tz_basis": "patient"}, "Not a valid choice."),
        ({"due": "2026-11-19T10:00", "kind": "call", "tz_basis": "mars"}, "Not a valid choice."),
        ({"due": "2026-11-17T10:00", "kind": "call", "tz_basis": "patient"}, "That time is in the past."),
        ({"due": "2027-03-14T02:30", "kind": "email", "tz_basis": "patient"}, "does not exist in America/New_York"),
        ({"due": "2026-11-19T10:00", "kind": "call", "tz_basis": "patient", "note": "n" * 600}, "longer than 500"),
    ],
)
def test_bad_follow_up_input_gives_a_clear_error(client, auth, db, specialist, data, message):
    auth.as_user(specialist)
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    resp = form_post(client, f"/leads/{lead.id}/follow-ups", lead, **data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)


def test_follow_up_done_route(client, auth, db, specialist):
    auth.as_user(specialist)
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind="email", actor=specialist, now=WED)
    db.session.commit()
    resp = form_post(client, f"/leads/{lead.id}/follow-ups/{fu.id}/done", lead, outcome="nonsense")
    assert resp.status_code == 422 and "Not a valid choice." in resp.get_data(as_text=True)
    resp = form_post(client, f"/leads/{lead.id}/follow-ups/99999/done", lead, outcome="done")
    assert resp.status_code == 422 and "does not belong to this lead" in resp.get_data(as_text=True)
    assert form_post(client, f"/leads/{lead.id}/follow-ups/{fu.id}/done", lead, outcome="done").status_code == 302
    db.session.expire_all()
    assert fu.done_at is not None and fu.outcome == "done"
    # The email sent was an attempt; the next one is planned (SPEC 2.7), by the patient's channel.
    (planned,) = [f for f in lead.follow_ups if f.done_at is None]
    assert lead.next_follow_up_at == planned.due_at and planned.note.startswith("Try again: 1 attempt so far")
    # The timeline says it as the Done list does ("Sent"), not the stored value in lower case.
    assert 'Follow-up done</strong> <span class="text-muted">· Sent</span>' in client.get(f"/leads/{lead.id}").get_data(
        as_text=True
    )


@time_machine.travel(WED, tick=False)
def test_closing_a_call_follow_up_as_unanswered_counts_the_call_attempt(client, auth, db, specialist):
    """ "No answer" on a call follow-up used to close it without counting the attempt, so the
    attempts and the no-answer auto-close came out low. Now the outcome is the call's, logged."""
    auth.as_user(specialist)
    lead = make_lead(db, status=S.NEW, assignee=specialist)
    due = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)
    later = followups.schedule(lead, due_at=WED + timedelta(days=1), kind="call", actor=specialist, now=WED)
    db.session.commit()
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert '<option value="no_answer">Called: no answer</option>' in page
    # Nothing is preselected: a habitual click on Done must not log a reached call.
    assert '<option value="" selected>How did it end?</option>' in page
    resp = form_post(client, f"/leads/{lead.id}/follow-ups/{due.id}/done", lead, outcome="")
    assert resp.status_code == 422 and "Choose how the follow-up ended." in resp.get_data(as_text=True)
    db.session.expire_all()
    assert lead.attempts == 0 and due.done_at is None
    resp = form_post(client, f"/leads/{lead.id}/follow-ups/{due.id}/done", lead, outcome="done")
    assert resp.status_code == 422 and "A call follow-up is closed as one of: Called: reached" in resp.get_data(
        as_text=True
    )
    assert form_post(client, f"/leads/{lead.id}/follow-ups/{due.id}/done", lead, outcome="no_answer").status_code == 302
    db.session.expire_all()
    assert lead.attempts == 1 and lead.status == S.ATTEMPTING and lead.first_contact_at is not None
    assert due.done_at is not None and due.outcome == "No answer"
    assert later.done_at is None
    # Calling early for tomorrow's follow-up: the attempt is logged and that follow-up closed too.
    assert (
        form_post(client, f"/leads/{lead.id}/follow-ups/{later.id}/done", lead, outcome="voicemail").status_code == 302
    )
    db.session.expire_all()
    assert lead.attempts == 2 and later.done_at is not None and later.outcome == "Left voicemail"
    kinds = [e.kind for e in sorted(lead.events, key=lambda e: e.id)]
    assert kinds.count(EventKind.CALL_ATTEMPT) == 2 and kinds.count(EventKind.FOLLOW_UP_DONE) == 2
    # Not needed: closed, no call counted.
    skip = followups.schedule(lead, due_at=WED + timedelta(days=2), kind="call", actor=specialist, now=WED)
    db.session.commit()
    assert (
        form_post(client, f"/leads/{lead.id}/follow-ups/{skip.id}/done", lead, outcome="not_needed").status_code == 302
    )
    db.session.expire_all()
    assert lead.attempts == 2 and skip.done_at is not None and skip.outcome == "not_needed"


def test_reminders_notify_and_email_the_owner_once(app, db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    due = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, note="Call back", now=WED)
    later = followups.schedule(lead, due_at=WED + timedelta(hours=3), kind="call", actor=specialist, now=WED)
    db.session.commit()
    assert send_reminders(WED - timedelta(minutes=1)) == {"reminded": 0, "emailed": 0}
    with app.test_request_context():
        assert send_reminders(WED + timedelta(minutes=1)) == {"reminded": 1, "emailed": 1}
        assert send_reminders(WED + timedelta(minutes=2)) == {"reminded": 0, "emailed": 0}  # idempotent
    db.session.commit()
    note = db.session.scalar(sa.select(Notification))
    assert note.user_id == specialist.id and note.kind == "follow_up_due" and "Call back" in note.message
    mail = db.session.scalar(sa.select(OutboxEmail))
    assert (
        mail.to_addr == specialist.email and mail.kind == "follow_up_reminder" and f"/leads/{lead.id}" in mail.body_text
    )
    assert due.reminded_at is not None and later.reminded_at is None


def test_a_follow_up_without_an_owner_is_reminded_once_someone_takes_the_lead(app, db, specialist, admin):
    from crm.services import routing

    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED - timedelta(hours=1))
    routing.unassign(lead, actor=admin)  # back to the pool: the follow-up has no owner now
    db.session.commit()
    with app.test_request_context():
        assert send_reminders(WED + timedelta(minutes=1)) == {"reminded": 0, "emailed": 0}
        assert fu.reminded_at is None
        routing.assign(lead, specialist, actor=specialist)
        db.session.commit()
        assert send_reminders(WED + timedelta(minutes=2)) == {"reminded": 1, "emailed": 1}
    note = db.session.scalar(sa.select(Notification))
    assert note.user_id == specialist.id and note.kind == "follow_up_due"


def test_a_call_that_closes_the_due_follow_up_plans_the_next_attempt_and_clears_its_alert(
    app, client, auth, db, specialist
):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED - timedelta(hours=1))
    db.session.commit()
    with app.test_request_context():
        send_reminders(WED + timedelta(minutes=1))
    db.session.commit()
    with time_machine.travel(WED + timedelta(minutes=5), tick=False):
        auth.as_user(specialist)
        resp = form_post(client, f"/leads/{lead.id}/calls", lead, outcome="no_answer")
        assert resp.headers["Location"].endswith(f"/leads/{lead.id}#follow-ups")
        html = client.get(resp.headers["Location"]).get_data(as_text=True)
    # SPEC 2.7: the lead is not left without a next step: the next attempt, 4 h on (NEXT_ATTEMPT_HOURS).
    assert "Next step planned: a call on Wed Nov 18, 01:05 PM EST patient time" in html
    db.session.expire_all()
    assert db.session.get(FollowUp, fu.id).done_at is not None
    (planned,) = [f for f in db.session.get(type(lead), lead.id).follow_ups if f.done_at is None]
    assert planned.due_at == WED + timedelta(hours=4, minutes=5) and planned.owner_id == specialist.id
    assert planned.note.startswith("Try again: 1 attempt so far") and planned.kind.value == "call"
    followups.complete(planned, actor=specialist, outcome="not_needed", now=WED + timedelta(minutes=6))
    assert db.session.scalar(sa.select(Notification)).read_at is not None  # its alert is dealt with
    # With the next call already planned, the call just lands on the timeline.
    followups.schedule(
        db.session.get(type(lead), lead.id), due_at=WED + timedelta(days=1), kind="call", actor=specialist, now=WED
    )
    db.session.commit()
    with time_machine.travel(WED + timedelta(minutes=10)):
        auth.as_user(specialist)
        again = form_post(client, f"/leads/{lead.id}/calls", db.session.get(type(lead), lead.id), outcome="voicemail")
    assert again.headers["Location"].endswith("#timeline")


def test_reminder_badge_and_notifications_page(client, auth, db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)
    db.session.commit()
    send_reminders(WED + timedelta(minutes=1))
    db.session.commit()
    auth.as_user(specialist)
    html = client.get("/queue?view=due").get_data(as_text=True)
    assert 'Alerts <span class="badge text-bg-danger">1</span>' in html
    assert f'href="/leads/{lead.id}"' in html  # due list
    page = client.get("/notifications").get_data(as_text=True)
    assert f"Call follow-up due for lead #{lead.id}" in page
    # The button names the patient (read at display time), and that view is audited.
    name = f"{lead.patient.first_name} {lead.patient.last_name}"
    assert f'Open {name} <span class="fw-normal">#{lead.id}</span>' in page
    seen = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "view_notifications"))
    assert seen.user_id == specialist.id and seen.detail == {"leads": f",{lead.id},"}
    note = db.session.scalar(sa.select(Notification))
    resp = client.post(f"/notifications/{note.id}/read", data={"open": "1"})
    assert resp.headers["Location"].endswith(f"/leads/{lead.id}")
    assert client.post("/notifications/99999/read").status_code == 404
    past_the_end = client.get("/notifications?show=all&page=9").get_data(as_text=True)
    assert f"lead #{lead.id}" in past_the_end and "No notifications yet" not in past_the_end


def test_a_follow_up_goes_with_the_lead_to_its_new_owner_and_is_reminded_to_them(app, db, specialist, admin):
    """A colleague plans a call on an unassigned lead, which is then assigned: the reminder goes to
    the lead's owner, not to the colleague. A follow-up already reminded to an owner who then loses
    the lead is reminded again to the next owner, and the first owner's alert is put away."""
    from crm.services import routing

    colleague = UserFactory(name="Covering Colleague")
    other = UserFactory(name="Next Owner")
    lead = make_lead(db, status=S.ATTEMPTING)
    fu = followups.schedule(lead, due_at=WED, kind="call", actor=colleague, now=WED - timedelta(hours=1))
    assert fu.owner_id == colleague.id
    routing.assign(lead, specialist, actor=specialist, now=WED - timedelta(minutes=30))
    db.session.commit()
    assert fu.owner_id == specialist.id
    with app.test_request_context():
        assert send_reminders(WED + timedelta(minutes=1)) == {"reminded": 1, "emailed": 1}
    db.session.commit()
    first = db.session.scalar(sa.select(Notification))
    assert first.user_id == specialist.id and first.read_at is None

    # The lead changes hands after the reminder: the next owner is reminded, the first alert put away.
    routing.assign(lead, other, actor=admin, now=WED + timedelta(hours=1))
    db.session.commit()
    assert fu.owner_id == other.id and fu.reminded_at is None
    with app.test_request_context():
        assert send_reminders(WED + timedelta(hours=1, minutes=1)) == {"reminded": 1, "emailed": 1}
    db.session.commit()
    db.session.expire_all()
    notes = db.session.scalars(sa.select(Notification).order_by(Notification.id)).all()
    assert [(n.user_id, n.read_at is None) for n in notes] == [(specialist.id, False), (other.id, True)]
    assert db.session.scalars(sa.select(OutboxEmail.to_addr).order_by(OutboxEmail.id)).all() == [
        specialist.email,
        other.email,
    ]
    # Done: the new owner's alert is dealt with too.
    followups.complete(fu, actor=other, outcome="done", now=WED + timedelta(hours=2))
    db.session.commit()
    db.session.expire_all()
    assert all(n.read_at is not None for n in db.session.scalars(sa.select(Notification)))


def test_an_owner_who_gets_the_lead_back_is_reminded_again(app, db, specialist, admin):
    """A → B → A: A's first alert (its key) must not stop the reminder of A's second turn."""
    from crm.services import routing

    other = UserFactory(name="Next Owner")
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED - timedelta(hours=1))
    db.session.commit()
    with app.test_request_context():
        assert send_reminders(WED + timedelta(minutes=1)) == {"reminded": 1, "emailed": 1}
        routing.assign(lead, other, actor=admin, now=WED + timedelta(hours=1))
        assert send_reminders(WED + timedelta(hours=1, minutes=1)) == {"reminded": 1, "emailed": 1}
        routing.assign(lead, specialist, actor=admin, now=WED + timedelta(hours=2))
        assert send_reminders(WED + timedelta(hours=2, minutes=1)) == {"reminded": 1, "emailed": 1}
    db.session.commit()
    assert fu.owner_id == specialist.id
    unread = db.session.scalars(sa.select(Notification).where(Notification.read_at.is_(None))).all()
    assert [n.user_id for n in unread] == [specialist.id]  # the current turn's alert only


def test_closing_a_lead_puts_away_its_follow_up_alerts(app, db, specialist):
    from crm.services.workflow import change_status

    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED - timedelta(hours=1))
    other = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    kept = followups.schedule(other, due_at=WED, kind="call", actor=specialist, now=WED - timedelta(hours=1))
    db.session.commit()
    with app.test_request_context():
        assert send_reminders(WED + timedelta(minutes=1))["reminded"] == 2
    db.session.commit()
    change_status(lead, S.LOST, actor=specialist, reason="not_interested", now=WED + timedelta(minutes=5))
    db.session.commit()
    unread = db.session.scalars(sa.select(Notification.message).where(Notification.read_at.is_(None))).all()
    assert db.session.get(FollowUp, fu.id).done_at is not None and db.session.get(FollowUp, kept.id).done_at is None
    assert len(unread) == 1  # only the alert of the other lead's follow-up is still waiting


@pytest.mark.parametrize(("kind", "channel"), [("sms", "text"), ("email", "email")])
def test_a_text_or_email_sent_counts_as_a_contact_attempt(db, specialist, kind, channel):
    """A patient who asked to be texted: the text sent left the lead New, with no attempt counted and
    the speed-to-lead clock running towards an escalation."""
    lead = make_lead(db, status=S.NEW, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind=kind, actor=specialist, now=WED - timedelta(minutes=5))
    skipped = followups.schedule(lead, due_at=WED + timedelta(days=1), kind=kind, actor=specialist, now=WED)
    db.session.commit()
    followups.close(skipped, actor=specialist, outcome="not_needed", now=WED)  # nothing sent: no attempt
    assert lead.status == S.NEW and not lead.attempts and lead.first_contact_at is None
    followups.close(fu, actor=specialist, outcome="done", now=WED + timedelta(minutes=1))
    db.session.commit()
    assert lead.status == S.ATTEMPTING and lead.attempts == 1
    assert lead.first_contact_at == WED + timedelta(minutes=1)
    change = [e for e in lead.events if e.kind == EventKind.STATUS_CHANGED][-1]
    assert change.data["reason"] == f"{channel} sent"


# --------------------------------------------------------------------------- the next step (SPEC 2.7)

NEW_YORK = "America/New_York"


@pytest.mark.parametrize(
    ("status", "attempts", "contact", "due", "kind"),
    [
        # Wed 09:00 in New York: 4 h after a first unanswered attempt, a day after the second, then two.
        (S.ATTEMPTING, 1, "phone", WED + timedelta(hours=4), "call"),
        (S.ATTEMPTING, 2, "phone", WED + timedelta(days=1), "call"),
        (S.ATTEMPTING, 5, "phone", WED + timedelta(days=2), "call"),
        (S.CONTACTED, 3, "phone", WED + timedelta(days=1), "call"),  # reached: a check-in a day on
        (S.ATTEMPTING, 1, "text", WED + timedelta(hours=4), "sms"),
        (S.ATTEMPTING, 1, "email", WED + timedelta(hours=4), "email"),
    ],
)
def test_the_default_next_step_follows_the_cadence_and_the_patients_channel(status, attempts, contact, due, kind):
    got = followups.default_next_step(
        status, attempts, ContactMethod(contact), WED, NEW_YORK, make_window(), {"NEXT_ATTEMPT_HOURS": "4,24,48"}
    )
    assert got[0] == due and got[1].value == kind


def test_the_default_next_steps_note_counts_attempts_in_words():
    def note(attempts):
        return followups.default_next_step(S.ATTEMPTING, attempts, None, WED, NEW_YORK, make_window(), {})[2]

    assert note(1).startswith("Try again: 1 attempt so far without reaching the patient")
    assert note(3).startswith("Try again: 3 attempts so far without reaching the patient")


def test_a_call_or_text_planned_by_default_waits_for_the_calling_window_but_an_email_does_not():
    evening = datetime(2026, 11, 18, 23, 0, tzinfo=UTC)  # 18:00 in New York: +4 h is 22:00, after hours
    call = followups.default_next_step(S.ATTEMPTING, 1, ContactMethod.PHONE, evening, NEW_YORK, make_window(), {})
    text = followups.default_next_step(S.ATTEMPTING, 1, ContactMethod.TEXT, evening, NEW_YORK, make_window(), {})
    email = followups.default_next_step(S.ATTEMPTING, 1, ContactMethod.EMAIL, evening, NEW_YORK, make_window(), {})
    assert call[0] == text[0] == datetime(2026, 11, 19, 14, 0, tzinfo=UTC)  # Thursday 09:00 in New York
    assert email[0] == evening + timedelta(hours=4)


def test_parse_attempt_hours_refuses_what_is_not_whole_hours():
    assert followups.parse_attempt_hours("2, 8") == (2, 8) and followups.parse_attempt_hours("") == (4, 24, 48)
    for bad in ("4h", "0", "4,,8", "1000"):
        with pytest.raises(ValueError, match="whole hours"):
            followups.parse_attempt_hours(bad)


def test_closing_the_last_follow_up_as_not_needed_plans_a_check_in(client, auth, db, specialist):
    lead = make_lead(db, status=S.CONTACTED, assignee=specialist)
    fu = followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)
    db.session.commit()
    with time_machine.travel(WED + timedelta(minutes=1), tick=False):
        auth.as_user(specialist)
        resp = form_post(client, f"/leads/{lead.id}/follow-ups/{fu.id}/done", lead, outcome="not_needed")
        assert resp.headers["Location"].endswith("#follow-ups")
        page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Follow-up closed. Next step planned: a call on Thu Nov 19, 09:01 AM EST patient time" in page
    db.session.expire_all()
    (planned,) = [f for f in db.session.get(type(lead), lead.id).follow_ups if f.done_at is None]
    assert planned.owner_id == specialist.id and planned.note.startswith("Check in:")
    assert planned.lead.events[-1].kind == EventKind.FOLLOW_UP_SCHEDULED  # on the timeline, by the specialist
    assert planned.lead.events[-1].actor_id == specialist.id


def test_no_next_step_is_planned_for_a_new_booked_or_pooled_lead_nor_over_a_planned_one(app, db, specialist):
    planned = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    followups.schedule(planned, due_at=WED + timedelta(days=3), kind="call", actor=specialist, now=WED)
    leads = [
        make_lead(db, status=S.NEW, assignee=specialist),  # its first call is due by the SLA clock
        make_lead(db, status=S.BOOKED, assignee=specialist),  # its visit is the next step
        make_lead(db, status=S.ATTEMPTING),  # in the pool: whoever takes it plans
        planned,
    ]
    with app.test_request_context():
        assert [followups.ensure_next_step(lead, actor=specialist, now=WED) for lead in leads] == [None] * 4
    assert len(planned.follow_ups) == 1


def test_a_follow_up_planned_by_hand_or_the_next_call_replaces_the_default_next_step(app, db, specialist):
    from crm.services import workflow

    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    with app.test_request_context():
        auto = followups.ensure_next_step(lead, actor=specialist, now=WED)
        assert auto.automatic and auto.due_at == WED + timedelta(hours=4)
        mine = followups.schedule(lead, due_at=WED + timedelta(days=1), kind="call", actor=specialist, now=WED)
        assert auto.done_at == WED and auto.outcome == "replaced by a follow-up planned by hand"
        assert not mine.automatic and [f for f in lead.follow_ups if f.done_at is None] == [mine]
        # The next call closes a default next step whenever it was due; the call then plans the next one.
        followups.complete(mine, actor=specialist, outcome="not_needed", now=WED)
        auto = followups.ensure_next_step(lead, actor=specialist, now=WED)
        later = WED + timedelta(minutes=30)
        workflow.log_call(lead, "voicemail", actor=specialist, now=later)
        assert auto.done_at == later and auto.outcome == "Left voicemail"
        fresh = followups.ensure_next_step(lead, actor=specialist, now=later)  # as the workspace does after it
        assert fresh.automatic and fresh.due_at == later + timedelta(hours=4)  # one attempt so far: 4 h on
        assert [f for f in lead.follow_ups if f.done_at is None] == [fresh]


def test_closing_the_default_next_step_as_not_needed_does_not_plan_it_again(app, client, auth, db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    with app.test_request_context():
        auto = followups.ensure_next_step(lead, actor=specialist, now=WED)
    db.session.commit()
    with time_machine.travel(WED, tick=False):
        auth.as_user(specialist)
        resp = form_post(client, f"/leads/{lead.id}/follow-ups/{auto.id}/done", lead, outcome="not_needed")
        page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "No next step is planned: the lead waits in Mine among those without one" in page
    db.session.expire_all()
    assert [f for f in db.session.get(type(lead), lead.id).follow_ups if f.done_at is None] == []


def test_after_a_wrong_number_the_default_next_step_is_an_email_or_nothing(app, db, specialist):
    from crm.services import workflow

    with_email = make_lead(db, status=S.ATTEMPTING, assignee=specialist, email="pat@example.com")
    without = make_lead(db, status=S.ATTEMPTING, assignee=specialist, email=None)
    with app.test_request_context():
        for lead in (with_email, without):
            workflow.log_call(lead, "wrong_number", actor=specialist, now=WED)
        step = followups.ensure_next_step(with_email, actor=specialist, now=WED)
        assert step.kind.value == "email" and step.note.startswith("The phone number is wrong: email the patient")
        assert followups.ensure_next_step(without, actor=specialist, now=WED) is None  # no number, no email
