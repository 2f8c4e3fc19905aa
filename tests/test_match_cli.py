"""Matching as people and scripts see it: `flask crm match`, `flask crm geocode`, the lead
workspace's eligibility and match panels, and the Re-match button."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from crm.models import AuditLog, LeadEvent
from crm.models.enums import GeocodeStatus
from crm.services import geocoding
from tests.factories import (
    PASSWORD,
    ConditionFactory,
    LeadFactory,
    PatientFactory,
    PhysicianFactory,
    StateProgramFactory,
)
from tests.test_geocoding import FakeOnline


def setup_lead(db, **patient):
    condition = ConditionFactory(name="Dystonia", slug="dystonia")
    fl = StateProgramFactory(
        state="FL", name="Florida", telehealth_allowed=True, registry_url="https://example.org/fl-registry"
    )
    fl.qualifying_conditions = [condition]
    near = PhysicianFactory(last_name="Near", offers_telehealth=True)
    closed = PhysicianFactory(last_name="Closed", latitude=25.77, accepting_new=False)
    lead = LeadFactory(patient=PatientFactory(**patient), condition=condition)
    db.session.commit()
    return lead, near, closed


def test_match_command_prints_spec_json_and_stores_it(app, db):
    lead, near, closed = setup_lead(db)
    result = app.test_cli_runner().invoke(args=["crm", "match", str(lead.id), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["lead_id"] == lead.id
    assert set(data["origin"]) == {"latitude", "longitude", "precision"}
    assert data["eligibility"]["eligible"] is True
    modes = [(c["physician_id"], c["mode"]) for c in data["candidates"]]
    assert modes == [(near.id, "in_person"), (near.id, "telehealth")]
    assert data["candidates"][0]["npi"] == near.npi and data["candidates"][0]["priority"] == 2
    assert data["excluded"] == [
        {
            "physician_id": closed.id,
            "npi": closed.npi,
            "name": closed.full_name,
            "distance_miles": data["excluded"][0]["distance_miles"],
            "reason": "not accepting new patients",
        }
    ]
    db.session.expire_all()
    assert db.session.get(type(lead), lead.id).match_result["candidates"] == data["candidates"]
    assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "view_lead")) is not None


def test_match_command_readable_and_errors(app, db):
    lead, near, _ = setup_lead(db)
    runner = app.test_cli_runner()
    text = runner.invoke(args=["crm", "match", str(lead.id), "--no-store"])
    assert text.exit_code == 0
    assert "Eligible in Florida." in text.output and "not accepting new patients" in text.output
    assert "1 in person, 1 telehealth, 1 excluded nearby." in text.output
    missing = runner.invoke(args=["crm", "match", "999999"])
    assert missing.exit_code == 1 and "no lead #999999" in missing.output


def test_geocode_pending_command(app, db):
    lead, _, _ = setup_lead(
        db, latitude=None, longitude=None, geocode_precision=None, geocode_status=GeocodeStatus.PENDING, zip="32801"
    )
    runner = app.test_cli_runner()
    status = runner.invoke(args=["crm", "geocode"])
    assert status.exit_code == 0 and "1 pending" in status.output
    alone = runner.invoke(args=["crm", "geocode", "--due-only"])  # was silently the status summary
    assert alone.exit_code == 2 and "--due-only goes with --pending" in alone.output
    result = runner.invoke(args=["crm", "geocode", "--pending"])
    assert result.exit_code == 0, result.output
    assert "1 patient(s) tried: 1 located" in result.output
    db.session.expire_all()
    patient = db.session.get(type(lead), lead.id).patient
    assert patient.geocode_status == GeocodeStatus.OK and patient.timezone == "America/New_York"
    docs = runner.invoke(args=["crm", "geocode", "--physicians"])
    assert docs.exit_code == 0 and "Physicians: 0 tried" in docs.output


def test_workspace_shows_eligibility_in_words_and_registry_note(client, auth, specialist, db):
    lead, near, _ = setup_lead(db)
    auth.as_user(specialist)
    assert client.post(f"/leads/{lead.id}/rematch").status_code == 302
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Eligible in Florida." in page
    assert "Dystonia is a qualifying condition in FL." in page
    assert "Verify against the state&#39;s registry." in page or "Verify against the state's registry." in page
    assert 'href="https://example.org/fl-registry"' in page and "reviewed 2026-11-01" in page
    assert near.full_name in page and "not accepting new patients" in page
    assert "search radius 250 mi" in page


def test_rematch_button_posts_with_csrf_and_records_who(make_app, db, specialist):
    lead, near, _ = setup_lead(db)
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login_page).group(1)
    assert (
        client.post("/login", data={"email": specialist.email, "password": PASSWORD, "csrf_token": token}).status_code
        == 302
    )

    assert client.post(f"/leads/{lead.id}/rematch").status_code == 400  # no token: refused
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Not matched yet: new requests are located, checked and matched within a few seconds" in page
    form = re.search(rf'action="/leads/{lead.id}/rematch".*?value="([^"]+)"', page, re.S)
    resp = client.post(f"/leads/{lead.id}/rematch", data={"csrf_token": form.group(1)})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/leads/{lead.id}#match")
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Re-matched: 1 in person within 250 miles, 1 by telehealth, 1 excluded nearby." in page
    with app.app_context():
        from crm.extensions import db as app_db

        event = app_db.session.scalar(
            sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == "matched")
        )
        assert event.actor_id == specialist.id and event.data["trigger"] == "manual"


def test_rematch_unknown_lead_and_anonymous(client, auth, specialist):
    assert client.post("/leads/1/rematch").status_code == 302  # to the login page
    auth.as_user(specialist)
    assert client.post("/leads/424242/rematch").status_code == 404


@pytest.fixture
def fakemaps(app, monkeypatch):
    """The app's geocoder is tests.test_geocoding's stand-in for an online service."""
    FakeOnline.queries, FakeOnline.fail, FakeOnline.answers = [], False, {}
    geocoding.register_geocoder("fakemaps", lambda config: FakeOnline(user_agent="test-agent"))
    monkeypatch.setitem(app.config, "GEOCODER", "fakemaps")
    yield
    geocoding.GEOCODERS.pop("fakemaps", None)
    geocoding._cached_geocoder.cache_clear()


def test_geocode_pending_fails_when_the_geocoder_answered_for_nobody(app, db, fakemaps):
    """An outage or a bad API key: every patient stays pending. That is not a backlog worked
    through, and a script running the command must see it failed."""
    lead, _, _ = setup_lead(
        db, latitude=None, longitude=None, geocode_precision=None, geocode_status=GeocodeStatus.PENDING, zip="32801"
    )
    PhysicianFactory(last_name="Unplaced", latitude=None, longitude=None, geocode_status=GeocodeStatus.PENDING)
    db.session.commit()
    FakeOnline.fail = True
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crm", "geocode", "--pending"])
    assert result.exit_code == 1, result.output
    assert "Patients: 1 patient(s) tried: 0 located, 1 still pending" in result.stdout
    assert "the geocoder (fakemaps) did not answer for any of the 1 patient(s) tried" in result.stderr
    docs = runner.invoke(args=["crm", "geocode", "--physicians"])
    assert docs.exit_code == 1 and "did not answer for any of the 1 physician(s) tried" in docs.stderr
    FakeOnline.fail = False  # the service answers, even if it finds nothing: the command worked
    result = runner.invoke(args=["crm", "geocode", "--pending"])
    assert result.exit_code == 0, result.output
