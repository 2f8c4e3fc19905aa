"""Intake end to end: a signed delivery is stored and answered; the enrich_new job then geocodes it
offline, checks it against the state program, matches and auto-assigns it; a failing step never
fails the delivery."""

from __future__ import annotations

import json

import pytest

from crm.models import Lead
from crm.models.enums import GeocodeStatus, LeadStatus
from crm.services.sources import sign_payload
from tests.factories import (
    ConditionFactory,
    PhysicianFactory,
    StateProgramFactory,
    UserFactory,
    WebhookSourceFactory,
)

SECRET = "whsec_" + "cGlwZWxpbmUtdGVzdC1zZWNyZXQta2V5LTMyLWJ5dGVz"
PAYLOAD = {
    "first_name": "Robin",
    "last_name": "Hale",
    "email": "robin.hale@example.com",
    "phone": "(305) 555-0188",
    "zip": "33101",
    "condition": "dystonia",
}


@pytest.fixture
def desk(db):
    dystonia = ConditionFactory(name="Dystonia", slug="dystonia")
    florida = StateProgramFactory(state="FL", name="Florida", telehealth_allowed=True)
    florida.qualifying_conditions = [dystonia]
    near = PhysicianFactory(last_name="Near", latitude=25.78, longitude=-80.20)
    far = PhysicianFactory(last_name="Far", latitude=26.12, longitude=-80.14)  # Fort Lauderdale
    unregistered = PhysicianFactory(last_name="Elsewhere", latitude=25.77, longitude=-80.19, registered_in=["GA"])
    specialist = UserFactory(name="Sam Shift", on_shift=True, capacity=20)
    WebhookSourceFactory(slug="site", name="Clinic site", secret=SECRET)
    db.session.commit()
    return {"near": near, "far": far, "unregistered": unregistered, "specialist": specialist}


def deliver(app, payload=PAYLOAD, msg_id="msg_pipeline"):
    signed = sign_payload(SECRET, json.dumps(payload), msg_id=msg_id)
    headers = dict(signed.headers, **{"content-type": "application/json"})
    return app.test_client().post("/webhooks/intake/site", data=signed.body, headers=headers)


def run_enrich_job(app):
    from crm.jobs import JOBS_BY_ID, run_job

    with app.app_context():
        return run_job(JOBS_BY_ID["enrich_new"])


def test_a_delivery_is_geocoded_matched_and_assigned_by_the_job_after_the_answer(make_app, db, desk):
    app = make_app(AUTO_ASSIGN=True)
    resp = deliver(app)
    assert resp.status_code == 202, resp.get_json()
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert lead.matched_at is None and lead.assignee_id is None  # stored and answered, nothing more

    run = run_enrich_job(app)
    assert run.ok and run.summary.startswith("1 new lead(s) enriched"), run.summary
    db.session.expire_all()
    lead = db.session.get(Lead, lead.id)

    patient = lead.patient
    assert patient.geocode_status == GeocodeStatus.OK
    assert patient.state == "FL" and patient.timezone == "America/New_York"
    assert patient.latitude == pytest.approx(25.77, abs=0.1)

    # No date of birth on a webhook delivery: the age check is left open, nothing fails.
    assert lead.eligibility["state"] == "FL" and lead.eligibility["eligible"] is not False
    in_person = [c["physician_id"] for c in lead.match_result["candidates"] if c["mode"] == "in_person"]
    assert in_person[:2] == [desk["near"].id, desk["far"].id]
    excluded = {x["physician_id"]: x["reason"] for x in lead.match_result["excluded"]}
    assert excluded[desk["unregistered"].id] == "no registration in FL"
    assert lead.matched_at is not None

    assert lead.assignee_id == desk["specialist"].id
    assert lead.status == LeadStatus.NEW


def test_the_patients_language_from_the_delivery_steers_auto_assignment(make_app, db, desk):
    """SPEC 7: round robin prefers a specialist who speaks the patient's language; the language
    comes in with the request ("Español" is mapped to es)."""
    speaker = UserFactory(name="Bea Bilingual", on_shift=True, capacity=20, languages=["en", "es"])
    db.session.commit()
    app = make_app(AUTO_ASSIGN=True)
    resp = deliver(app, dict(PAYLOAD, language="Español"))
    assert resp.status_code == 202, resp.get_json()
    assert run_enrich_job(app).ok
    db.session.expire_all()
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert lead.patient.language == "es" and lead.assignee_id == speaker.id
    # A language we cannot read is a preference lost, not a request refused.
    for n, sent in enumerate(["Klingon", "es-MX", "Spanish (Mexico)", "spa"]):
        resp = deliver(app, dict(PAYLOAD, language=sent, email=f"l{n}@example.com", phone=""), msg_id=f"msg_l{n}")
        assert resp.status_code == 202, (sent, resp.get_json())
        patient = db.session.get(Lead, resp.get_json()["lead_id"]).patient
        assert patient.language == ("en" if sent == "Klingon" else "es"), sent


def test_the_specialist_sees_the_match_on_the_workspace(make_app, db, desk, auth):
    app = make_app(AUTO_ASSIGN=True)
    lead_id = deliver(app).get_json()["lead_id"]
    run_enrich_job(app)
    auth.as_user(desk["specialist"])
    page = auth.client.get(f"/leads/{lead_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Near" in html and "Far" in html
    assert "no registration in FL" in html


def test_a_failing_matcher_never_fails_the_delivery(make_app, db, desk, monkeypatch):
    from crm.services import enrichment

    def broken(*args, **kwargs):
        raise RuntimeError("matcher down")

    monkeypatch.setattr(enrichment, "match_lead", broken)
    app = make_app(AUTO_ASSIGN=True)
    resp = deliver(app)
    assert resp.status_code == 202
    run = run_enrich_job(app)
    assert run.ok and "1 failed" in run.summary
    db.session.expire_all()
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert lead is not None and lead.match_result is None
    assert lead.assignee_id == desk["specialist"].id  # routing still ran
