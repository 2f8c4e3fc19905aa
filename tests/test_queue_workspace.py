"""The lead workspace: audit on view, optimistic-lock conflicts, notes and calls, bad input, shortcuts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from crm.models import AuditLog, Lead, LeadEvent
from crm.models.enums import EventKind, LeadStatus
from tests.factories import UserFactory
from tests.test_queue_helpers import form_post, make_lead, matched_lead

S = LeadStatus


def test_viewing_a_lead_writes_an_audit_row(client, auth, db, specialist):
    lead = make_lead(db)
    auth.as_user(specialist)
    assert client.get(f"/leads/{lead.id}").status_code == 200
    row = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "view_lead"))
    assert row.user_id == specialist.id and row.object_type == "lead" and row.object_id == str(lead.id)
    assert row.detail == {"patient_id": lead.patient_id} and row.ip
    assert client.get("/leads/999999").status_code == 404


def test_workspace_shows_patient_local_time_window_and_shortcuts(client, auth, db, specialist):
    lead = make_lead(db, assignee=specialist, timezone="Pacific/Honolulu")
    auth.as_user(specialist)
    html = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert 'data-local-clock data-tz="Pacific/Honolulu"' in html and "HST" in html
    assert "calling window" in html
    for key in ("c", "t", "f", "s", "q", "n"):
        assert f'data-shortcut="{key}"' in html
    assert "<script>" not in html  # CSP: no inline scripts
    # Not matched yet: nobody to book, and the page says so instead of asking for a physician id.
    assert "Nobody to book yet" in html and 'name="physician_id"' not in html
    matched, _ = matched_lead(db, assignee=specialist)
    booking = client.get(f"/leads/{matched.id}").get_data(as_text=True)
    assert 'data-shortcut="b"' in booking and "Nobody to book" not in booking


def test_the_second_save_gets_a_conflict_message(client, auth, db, specialist):
    colleague = UserFactory(name="Casey Colleague")
    db.session.commit()
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    stale = lead.version
    # Casey saves first (another browser): a call, which changes the lead (a note would not).
    other = client.application.test_client()
    other.post("/login", data={"email": colleague.email, "password": "correct horse battery"})
    assert other.post(f"/leads/{lead.id}/calls", data={"version": stale, "outcome": "voicemail"}).status_code == 302
    # Our form still carries the old version: refused with a clear message, nothing overwritten.
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/status", data={"version": stale, "to": "contacted", "lost_reason": ""})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 409
    assert "This lead was changed by Casey Colleague while you were editing; your change was not saved" in html
    db.session.expire_all()
    assert lead.status == S.ATTEMPTING
    # JSON clients get the same message.
    resp = client.post(
        f"/leads/{lead.id}/calls",
        data={"version": stale, "outcome": "no_answer"},
        headers={"Accept": "application/json"},
    )
    assert resp.status_code == 409 and "changed by" in resp.json["error"]
    # A note only adds to the timeline: nothing that changed meanwhile can make it wrong, so it is
    # saved whatever version the page had (refusing it made the specialist send it again).
    resp = client.post(f"/leads/{lead.id}/notes", data={"version": stale, "text": "Left a message with her son"})
    assert resp.status_code == 302
    db.session.expire_all()
    notes = [e.data["text"] for e in lead.events if e.kind == EventKind.NOTE]
    assert notes == ["Left a message with her son"]


def test_a_form_sent_twice_says_so_instead_of_blaming_another_tab(client, auth, db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    page_version = lead.version
    auth.as_user(specialist)
    assert (
        client.post(f"/leads/{lead.id}/calls", data={"version": page_version, "outcome": "voicemail"}).status_code
        == 302
    )
    again = client.post(f"/leads/{lead.id}/calls", data={"version": page_version, "outcome": "voicemail"})
    html = again.get_data(as_text=True)
    assert again.status_code == 409 and "You changed this lead a moment ago" in html and "another tab" not in html
    db.session.expire_all()
    assert lead.attempts == 1  # logged once
    # Minutes later, the same stale page is another tab's work again.
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5)):
        later = client.post(f"/leads/{lead.id}/calls", data={"version": page_version, "outcome": "no_answer"})
    assert later.status_code == 409 and "changed by you (in another tab)" in later.get_data(as_text=True)


def test_concurrent_flush_of_a_stale_row_is_a_conflict_not_a_500(app, client, auth, db, specialist, monkeypatch):
    """Both requests passed the version check; the second UPDATE matches no row (StaleDataError)."""
    from crm.leads import routes
    from crm.services import workflow

    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    auth.as_user(specialist)
    real = workflow.log_call

    def racing(lead_obj, outcome, *, actor, note="", now=None):
        # Someone else commits between our read and our write.
        with app.app_context():
            from crm.extensions import db as other_db

            other_db.session.execute(
                sa.text("UPDATE leads SET version = version + 1 WHERE id = :i"), {"i": lead_obj.id}
            )
            other_db.session.commit()
        return real(lead_obj, outcome, actor=actor, note=note, now=now)

    monkeypatch.setattr(routes.workflow, "log_call", racing)
    resp = form_post(client, f"/leads/{lead.id}/calls", lead, outcome="no_answer")
    assert resp.status_code == 409 and "your change was not saved" in resp.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).where(LeadEvent.kind == EventKind.CALL_ATTEMPT)) == 0


def test_note_and_call_routes(client, auth, db, specialist):
    lead = make_lead(db, assignee=specialist)
    auth.as_user(specialist)
    assert form_post(client, f"/leads/{lead.id}/notes", lead, text="Prefers evenings").status_code == 302
    db.session.expire_all()
    resp = form_post(client, f"/leads/{lead.id}/calls", lead, outcome="voicemail", note="Left a message")
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Call logged (left voicemail); the lead is attempting." in page
    assert "Prefers evenings" in page and "Call: Left voicemail" in page and "attempt 1" in page


def test_a_colleagues_note_does_not_make_an_open_form_a_conflict(client, auth, db, specialist):
    """A note changes nothing another form on the lead was based on, so it keeps the version: the
    status change opened before it still goes through, and the lead's last activity moves."""
    lead = make_lead(db, assignee=specialist, status="attempting")
    opened_version, before = lead.version, lead.last_activity_at
    auth.as_user(specialist)
    assert form_post(client, f"/leads/{lead.id}/notes", lead, text="Patient's sister called").status_code == 302
    db.session.expire_all()
    lead = db.session.get(Lead, lead.id)
    assert lead.version == opened_version and lead.last_activity_at != before
    resp = client.post(f"/leads/{lead.id}/status", data={"to": "contacted", "version": str(opened_version)})
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).status == "contacted"


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("notes", {"text": ""}, "Write the note first."),
        ("notes", {"text": "   "}, "Write the note first."),
        ("notes", {"text": "x" * 5001}, "Field cannot be longer than 5000 characters."),
        ("calls", {}, "Choose the call&#39;s outcome."),
        ("calls", {"outcome": "hung_up"}, "Not a valid choice."),
        ("calls", {"outcome": "reached", "note": "x" * 2001}, "longer than 2000"),
        ("status", {"to": ""}, "Choose the new status."),
        ("status", {"to": "lost", "lost_reason": ""}, "Choose why the lead is lost."),
        ("status", {"to": "lost", "lost_reason": "bored"}, "Not a valid choice."),
        ("status", {"to": "exploded"}, "Unknown status"),
        ("status", {"to": "booked"}, "A lead that is new cannot move to booked."),
        ("assign", {"user_id": "99999"}, "That user does not exist."),
        # Not an id: it had read as "none chosen" and assigned the lead to whoever sent it.
        ("assign", {"user_id": "abc"}, "Choose who to assign the lead to from the list."),
        ("follow-ups", {"due": "9999-12-31T23:59", "kind": "call"}, "Enter a date between 2000 and 2100."),
        ("appointments", {"starts": "9999-12-31T23:00", "mode": "in_person"}, "Enter a date between 2000 and 2100."),
        ("notes", {"text": "ok", "version": ""}, "The form is missing the lead&#39;s version; reload the page."),
    ],
)
def test_bad_workspace_input_gives_field_errors(client, auth, db, specialist, path, data, message):
    lead = make_lead(db)
    auth.as_user(specialist)
    resp = form_post(client, f"/leads/{lead.id}/{path}", lead, **data)
    assert resp.status_code == 422, resp.status_code
    assert message in resp.get_data(as_text=True)


def test_an_id_too_large_for_the_database_is_a_400_not_a_500(client, auth, db, specialist):
    lead = make_lead(db)
    auth.as_user(specialist)
    resp = form_post(client, f"/leads/{lead.id}/assign", lead, user_id="9" * 25)
    assert resp.status_code in (400, 422)


def test_non_numeric_version_is_a_conflict_not_a_500(client, auth, db, specialist):
    lead = make_lead(db)
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/calls", data={"version": "abc", "outcome": "no_answer"})
    assert resp.status_code == 409


def test_closed_lead_refuses_calls_with_a_message(client, auth, db, specialist):
    lead = make_lead(db, status=S.COMPLETED, assignee=specialist)
    auth.as_user(specialist)
    resp = form_post(client, f"/leads/{lead.id}/calls", lead, outcome="reached")
    assert resp.status_code == 422 and "This lead is closed" in resp.get_data(as_text=True)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Completed: this lead is closed." in page


def test_status_form_preselects_nothing(client, auth, db, specialist):
    lead = make_lead(db, status=S.BOOKED, assignee=specialist)
    auth.as_user(specialist)
    html = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    select = html[html.index('name="to"') :]
    assert select.split("<option", 2)[1].startswith(' value="">Choose…')  # the first option is the placeholder
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="", lost_reason="")
    assert resp.status_code == 422 and "Choose the new status." in resp.get_data(as_text=True)
    db.session.expire_all()
    assert lead.status == S.BOOKED


def test_a_closed_lead_page_shows_no_calling_window(client, auth, db, specialist):
    open_lead = make_lead(db, assignee=specialist)
    lost = make_lead(db, status=LeadStatus.LOST, assignee=specialist)
    lost.lost_reason = "not_interested"
    db.session.commit()
    auth.as_user(specialist)
    assert "the calling window (" in client.get(f"/leads/{open_lead.id}").get_data(as_text=True)
    assert "calling window (" not in client.get(f"/leads/{lost.id}").get_data(as_text=True)


def test_a_lead_page_re_shown_after_a_refused_form_is_audited_too(client, auth, db, specialist):
    """Posting a form that is refused (or conflicts) shows the whole workspace, patient details
    included: without an audit row it would be a way to read any lead unrecorded (SPEC 12)."""
    lead = make_lead(db)
    auth.as_user(specialist)
    refused = client.post(f"/leads/{lead.id}/notes", data={"version": str(lead.version), "text": ""})
    assert refused.status_code == 422 and lead.patient.last_name in refused.get_data(as_text=True)
    stale = client.post(f"/leads/{lead.id}/calls", data={"version": str(lead.version + 5), "outcome": "no_answer"})
    assert stale.status_code == 409
    rows = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "view_lead").order_by(AuditLog.id)).all()
    assert [(r.user_id, r.object_id, r.detail) for r in rows] == [
        (specialist.id, str(lead.id), {"patient_id": lead.patient_id, "page": "re-shown after a form (422)"}),
        (specialist.id, str(lead.id), {"patient_id": lead.patient_id, "page": "re-shown after a form (409)"}),
    ]


def test_the_source_line_and_the_registry_note_read_as_sentences(client, auth, db, specialist):
    """The source line said "Form · google/" when no medium came with it, and the note "Verify against the state's
    registry. — program rules change" when the state is unknown."""
    from crm.services import eligibility

    lead = make_lead(db, assignee=specialist, commit=False)
    lead.utm_source, lead.utm_medium = "google", ""
    lead.eligibility = eligibility.evaluate(state=None, program=None, condition=None, age=None)
    db.session.commit()
    auth.as_user(specialist)
    html = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert " · google</dd>" in html and "google/" not in html
    note = " ".join(html.split("verify-note", 1)[1].split("</div>", 1)[0].split())
    assert "registry.</strong> Program rules change: this is a guide" in note and "—" not in note
    lead.utm_medium = "cpc"
    db.session.commit()
    assert " · google/cpc</dd>" in client.get(f"/leads/{lead.id}").get_data(as_text=True)


def test_a_physician_opened_from_a_match_list_leads_back_to_the_lead(client, auth, db, specialist):
    lead, (doc,) = matched_lead(db, assignee=specialist)
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert f'href="/physicians/{doc.id}?lead={lead.id}"' in page
    html = client.get(f"/physicians/{doc.id}?lead={lead.id}").get_data(as_text=True)
    assert f'href="/leads/{lead.id}#match">Back to lead #{lead.id}</a>' in html
    for odd in ("-5", "abc", "²", "9" * 40, ""):
        resp = client.get(f"/physicians/{doc.id}", query_string={"lead": odd})
        assert resp.status_code == 200 and "Back to lead" not in resp.get_data(as_text=True), odd


def test_a_colleague_covering_a_lead_is_allowed_and_its_specialist_is_told(client, auth, db, specialist):
    """James closed Maria's lead and booked another of hers; she found out only when they left Mine."""
    from crm.models import Notification

    colleague = UserFactory(name="James Park")
    lead = make_lead(db, status=LeadStatus.ATTEMPTING, assignee=specialist)
    own = make_lead(db, status=LeadStatus.ATTEMPTING, assignee=colleague)
    db.session.commit()
    auth.as_user(colleague)
    assert form_post(client, f"/leads/{own.id}/status", own, to="contacted", lost_reason="").status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 0  # their own lead
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="lost", lost_reason="not_interested")
    assert resp.status_code == 302
    note = db.session.scalar(sa.select(Notification))
    assert note.user_id == specialist.id and note.kind == "lead_changed" and note.lead_id == lead.id
    assert note.message == f"James Park on your lead #{lead.id}: Status changed to lost."
    auth.logout()
    auth.as_user(specialist)
    page = client.get("/notifications").get_data(as_text=True)
    assert "Lead changed" in page and f"James Park on your lead #{lead.id}: Status changed to lost." in page


def test_calling_a_lead_from_the_pool_makes_it_yours(client, auth, db, specialist, admin):
    """James reached an unassigned patient and the lead stayed in the pool, for auto-assignment to hand
    to Priya: the patient would have had two callers."""
    lead = make_lead(db, status=LeadStatus.NEW, assignee=None)
    other = make_lead(db, status=LeadStatus.NEW, assignee=None)
    db.session.commit()
    auth.as_user(admin)
    assert form_post(client, f"/leads/{other.id}/calls", other, outcome="no_answer", note="").status_code == 302
    auth.logout()
    auth.as_user(specialist)
    assert form_post(client, f"/leads/{lead.id}/calls", lead, outcome="reached", note="").status_code == 302
    db.session.expire_all()
    assert lead.assignee_id == specialist.id and lead.status == LeadStatus.CONTACTED
    assigned = db.session.scalar(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == EventKind.ASSIGNED)
    )
    assert assigned.data["by"] == "self" and assigned.actor_id == specialist.id
    assert other.assignee_id is None  # an admin's call leaves it in the pool
