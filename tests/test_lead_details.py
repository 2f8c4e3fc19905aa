"""The workspace's Edit details page: corrections are validated, audited, and a changed address or
condition is located and matched again (SPEC 2.3, 2.4, 6)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from crm.models import AuditLog, Lead, LeadEvent, Patient
from crm.models.enums import EventKind, GeocodeStatus
from tests.factories import ConditionFactory, LeadFactory, PatientFactory, PhysicianFactory, StateProgramFactory


@pytest.fixture
def desk(db, specialist):
    dystonia = ConditionFactory(name="Dystonia", slug="dystonia")
    insomnia = ConditionFactory(name="Insomnia", slug="insomnia")
    florida = StateProgramFactory(state="FL", name="Florida", physician_discretion=False)
    florida.qualifying_conditions = [dystonia]
    georgia = StateProgramFactory(state="GA", name="Georgia", telehealth_allowed=True)
    georgia.qualifying_conditions = [dystonia, insomnia]
    miami = PhysicianFactory(last_name="Miami", latitude=25.78, longitude=-80.20, state="FL")
    atlanta = PhysicianFactory(last_name="Atlanta", latitude=33.75, longitude=-84.39, state="GA")
    lead = LeadFactory(condition=dystonia, condition_text="dystonia")
    db.session.commit()
    from crm.services.enrichment import match_and_store

    match_and_store(lead, lead.created_at)
    db.session.commit()
    return {"lead": lead, "dystonia": dystonia, "insomnia": insomnia, "miami": miami, "atlanta": atlanta}


def form_for(lead: Lead, **changes) -> dict:
    p = lead.patient
    data = {
        "version": str(lead.version),
        "patient_stamp": p.updated_at.isoformat(),
        "first_name": p.first_name,
        "last_name": p.last_name,
        "phone": p.phone or "",
        "email": p.email or "",
        "date_of_birth": "",
        "street": p.street,
        "city": p.city,
        "state": p.state or "",
        "zip": p.zip,
        "preferred_contact_method": p.preferred_contact_method.value,
        "preferred_contact_time": p.preferred_contact_time.value,
        "language": p.language,
        "condition_id": str(lead.condition_id or ""),
        "preferred_mode": lead.preferred_mode.value,
    }
    data.update(changes)
    return data


def in_person(lead: Lead) -> list[int]:
    return [c["physician_id"] for c in lead.match_result["candidates"] if c["mode"] == "in_person"]


def test_the_page_is_prefilled_and_needs_a_sign_in(client, db, desk, auth, specialist):
    lead = desk["lead"]
    assert client.get(f"/leads/{lead.id}/details").status_code == 302  # to the sign-in page
    auth.as_user(specialist)
    html = client.get(f"/leads/{lead.id}/details").get_data(as_text=True)
    assert lead.patient.last_name in html and 'value="33101"' in html
    viewed = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "view_lead")).all()
    assert [v.detail.get("page") for v in viewed] == ["edit details"] and viewed[0].user_id == specialist.id
    assert f'action="/leads/{lead.id}/details"' in html or 'method="post"' in html
    assert f'href="/leads/{lead.id}/details"' in client.get(f"/leads/{lead.id}").get_data(as_text=True)


def test_a_new_zip_is_located_offline_and_the_patient_is_matched_again(client, db, desk, auth, specialist):
    lead = desk["lead"]
    assert in_person(lead)[0] == desk["miami"].id
    auth.as_user(specialist)
    resp = client.post(
        f"/leads/{lead.id}/details", data=form_for(lead, zip="30303", city="Atlanta", state="GA", street="")
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    db.session.expire_all()
    lead = db.session.get(Lead, lead.id)
    patient = lead.patient
    assert patient.geocode_status == GeocodeStatus.OK and patient.state == "GA"
    assert patient.latitude == pytest.approx(33.75, abs=0.1)
    assert lead.eligibility["state"] == "GA"
    assert in_person(lead)[0] == desk["atlanta"].id
    assert lead.match_result["origin"]["latitude"] == pytest.approx(33.75, abs=0.1)

    event = db.session.scalars(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == EventKind.UPDATED)
    ).one()
    assert sorted(event.data["fields"]) == ["city", "state", "zip"] and event.actor_id == specialist.id
    assert "30303" not in str(event.data)  # the timeline names fields, never values
    audit = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "edit_details")).one()
    assert audit.user_id == specialist.id and str(audit.object_id) == str(lead.id)

    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "The new address is located." in page and "Re-matched 1 open lead." in page
    assert "Details edited" in page


def test_words_the_patient_typed_about_the_old_condition_are_kept_in_the_edit(client, db, desk, auth, specialist):
    lead = desk["lead"]
    lead.condition_text = "neck spasms since 2019"
    db.session.commit()
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, condition_id=str(desk["insomnia"].id)))
    assert resp.status_code == 302
    edited = db.session.scalars(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == EventKind.UPDATED)
    ).one()
    assert edited.data["condition_text_was"] == "neck spasms since 2019"
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "The patient had written: “neck spasms since 2019”" in page


def test_a_new_condition_is_checked_and_matched_again(client, db, desk, auth, specialist):
    lead = desk["lead"]
    assert lead.eligibility["eligible"] is not False
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, condition_id=str(desk["insomnia"].id)))
    assert resp.status_code == 302
    db.session.expire_all()
    lead = db.session.get(Lead, lead.id)
    assert lead.condition_id == desk["insomnia"].id and lead.condition_text == ""
    edited = db.session.scalars(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == EventKind.UPDATED)
    ).one()
    assert "condition_text_was" not in edited.data  # it only named the old condition
    assert lead.eligibility["eligible"] is False  # insomnia does not qualify in Florida
    matched = db.session.scalars(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == EventKind.MATCHED)
    ).all()
    assert matched[-1].actor_id == specialist.id and matched[-1].data["trigger"] == "details edited"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"phone": "555"}, "phone", "valid phone number"),
        ({"email": "not-an-email"}, "email", "@"),
        ({"zip": "3310"}, "zip", "5-digit ZIP"),
        ({"first_name": ""}, "first_name", "Enter the first name."),
        ({"last_name": "x" * 101}, "last_name", "100"),
        ({"language": "en1"}, "language", "language code"),
        ({"date_of_birth": "2999-01-01"}, "date_of_birth", "in the future"),
        ({"date_of_birth": "31/02/1980"}, "date_of_birth", "date"),
        ({"phone": "", "email": ""}, "phone", "Keep a phone number or an email address"),
        ({"preferred_mode": "teleport"}, "preferred_mode", "Not a valid choice"),
        # Geocoding goes by the ZIP: a Miami ZIP with New York would have moved the patient to Florida.
        ({"state": "NY", "zip": "33101"}, "zip", "ZIP 33101 is in FL, not NY"),
        ({"state": "GA"}, "zip", "ZIP 33101 is in FL, not GA"),
        ({"first_name": "Ro\tsa"}, "first_name", "control character"),
        ({"last_name": "\u202e\u200b"}, "last_name", "Enter the last name."),  # nothing but invisible characters
        # Not an id: it had read as "Not specified" and wiped the lead's condition and the patient's words.
        ({"condition_id": "abc"}, "condition_id", "Choose a condition from the list, or Not specified."),
        ({"condition_id": "1.0"}, "condition_id", "Choose a condition from the list, or Not specified."),
    ],
)
def test_bad_input_is_refused_with_the_typed_values_kept(client, db, desk, auth, specialist, changes, field, message):
    lead = desk["lead"]
    before = (lead.patient.phone, lead.patient.email, lead.patient.zip, lead.patient.first_name, lead.version)
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, city="Typed City", **changes))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert message in html and f'id="{field}-err"' in html
    assert 'value="Typed City"' in html  # nothing the user typed is lost
    db.session.expire_all()
    p = db.session.get(Patient, lead.patient_id)
    assert (p.phone, p.email, p.zip, p.first_name, db.session.get(Lead, lead.id).version) == before
    audits = sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == "edit_details")
    assert db.session.scalar(audits) == 0


def test_a_form_without_the_condition_field_keeps_the_condition(client, db, desk, auth, specialist):
    lead = desk["lead"]
    condition = (lead.condition_id, lead.condition_text)
    assert condition[0] is not None
    data = form_for(lead)
    del data["condition_id"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=data)
    assert resp.status_code == 422 and "Choose a condition from the list" in resp.get_data(as_text=True)
    db.session.expire_all()
    kept = db.session.get(Lead, lead.id)
    assert (kept.condition_id, kept.condition_text) == condition


def test_a_contact_that_belongs_to_another_patient_is_refused(client, db, desk, auth, specialist):
    other = LeadFactory(patient=PatientFactory(email="taken@example.com"))
    db.session.commit()
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, email="Taken@Example.com"))
    assert resp.status_code == 422
    assert f"already belongs to another patient (lead #{other.id})" in resp.get_data(as_text=True)


def test_a_stale_version_is_a_conflict_and_saves_nothing(client, db, desk, auth, specialist):
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, version=str(lead.version - 1), zip="30303"))
    assert resp.status_code == 409 and "changed by" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).zip == "33101"


def test_after_a_conflict_the_reviewed_form_saves(client, db, desk, auth, specialist):
    """The conflict page carries the current version: Save again, after a review, goes through
    (it used to carry the stale one back, so every later Save was refused too)."""
    import re

    lead = desk["lead"]
    auth.as_user(specialist)
    opened = form_for(lead, city="Coral Gables")
    # Meanwhile a call is logged (a note no longer changes the lead's version).
    client.post(f"/leads/{lead.id}/calls", data={"outcome": "no_answer", "version": str(lead.version)})
    first = client.post(f"/leads/{lead.id}/details", data=opened)
    html = first.get_data(as_text=True)
    assert first.status_code == 409
    version = re.search(r'name="version" type="hidden" value="(\d+)"|type="hidden" name="version" value="(\d+)"', html)
    current = next(v for v in version.groups() if v)
    db.session.expire_all()
    assert current == str(db.session.get(type(lead), lead.id).version)
    again = client.post(f"/leads/{lead.id}/details", data=dict(opened, version=current))
    assert again.status_code == 302
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).city == "Coral Gables"


def test_nothing_changed_says_so(client, db, desk, auth, specialist):
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead), follow_redirects=True)
    assert "Nothing changed." in resp.get_data(as_text=True)
    assert not db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.UPDATED)).all()


def test_with_an_online_geocoder_the_request_never_waits_and_the_job_locates(make_app, db, desk, specialist):
    """No network call inside the request: the stale match is cleared and enrich_new does the rest."""
    from geopy.geocoders.base import Geocoder
    from geopy.location import Location

    from crm.jobs import JOBS_BY_ID, run_job
    from crm.services import geocoding
    from tests.conftest import AuthActions

    queries = []

    class FakeOnline(Geocoder):
        def geocode(self, query, *, exactly_one=True, **kwargs):
            queries.append(query)
            return Location(str(query), (33.75, -84.39), {"address": {"state": "Georgia"}})

        def reverse(self, query, *, exactly_one=True, **kwargs):
            raise NotImplementedError

    geocoding.register_geocoder("fakeonline", lambda config: FakeOnline())
    try:
        app = make_app(GEOCODER="fakeonline")
        client = app.test_client()
        AuthActions(client).as_user(specialist)
        lead = desk["lead"]
        resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, zip="30303", city="Atlanta", state="GA"))
        assert resp.status_code == 302
        assert queries == []  # the request did not call the service
        db.session.expire_all()
        lead = db.session.get(Lead, lead.id)
        assert lead.matched_at is None and lead.match_result is None
        assert lead.patient.geocode_status == GeocodeStatus.PENDING
        page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
        assert "The new address is being located" in page and "Not matched yet" in page

        with app.app_context():
            run = run_job(JOBS_BY_ID["enrich_new"])
        assert run.ok and run.summary.startswith("1 new lead(s) enriched"), run.summary
        db.session.expire_all()
        lead = db.session.get(Lead, lead.id)
        assert queries and lead.patient.geocode_status == GeocodeStatus.OK
        assert in_person(lead)[0] == desk["atlanta"].id
    finally:
        geocoding.GEOCODERS.pop("fakeonline", None)
        geocoding._cached_geocoder.cache_clear()


def test_the_condition_can_be_cleared_to_not_specified(client, db, desk, auth, specialist):
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, condition_id=""))
    assert resp.status_code == 302, resp.get_data(as_text=True)[:1000]
    db.session.expire_all()
    lead = db.session.get(Lead, lead.id)
    assert lead.condition_id is None and lead.eligibility is not None


def test_a_nul_character_is_refused_not_a_500(client, db, desk, auth, specialist):
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, city="Mia\x00mi"))
    assert resp.status_code == 400
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).city == "Miami"


def test_a_patient_changed_from_another_lead_meanwhile_is_a_conflict_then_saves(client, db, desk, auth, specialist):
    from datetime import timedelta

    lead = desk["lead"]
    other = LeadFactory(patient=lead.patient, condition=desk["dystonia"])
    db.session.commit()
    auth.as_user(specialist)
    opened = form_for(lead, phone="(305) 555-0111")
    # Meanwhile someone saves the patient from the other lead.
    lead.patient.city = "Miami Beach"
    lead.patient.updated_at = lead.patient.updated_at + timedelta(seconds=5)
    db.session.commit()
    resp = client.post(f"/leads/{lead.id}/details", data=opened)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 409 and "changed while you were editing" in html
    assert 'value="+13055550111"' in html  # what was typed is still there (normalised)
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).phone != "+13055550111"
    stamp = db.session.get(Patient, lead.patient_id).updated_at.isoformat()
    again = client.post(f"/leads/{lead.id}/details", data=dict(opened, patient_stamp=stamp, city="Miami Beach"))
    assert again.status_code == 302
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).phone == "+13055550111"
    assert other.id != lead.id


def test_the_page_re_shown_after_a_refused_save_is_audited_too(client, db, desk, auth, specialist):
    """The refused page still shows the patient's details: who saw them is recorded (SPEC 12)."""
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, zip="nope"))
    assert resp.status_code == 422 and lead.patient.last_name in resp.get_data(as_text=True)
    viewed = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "view_lead")).all()
    assert [(v.user_id, v.detail) for v in viewed] == [
        (specialist.id, {"patient_id": lead.patient_id, "page": "edit details, re-shown after a form (422)"})
    ]


def test_a_phone_typed_with_an_extension_keeps_the_number_and_notes_the_extension(client, db, desk, auth, specialist):
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(
        # 212: never a factory patient's number (they are +1305555NNNN), which would make it "no change"
        f"/leads/{lead.id}/details",
        data=form_for(lead, phone="(212) 555-0177 ext. 42"),
        follow_redirects=True,
    )
    html = resp.get_data(as_text=True)
    assert "Saved (phone). Phone extension 42 noted on the timeline." in html
    assert "Phone extension: <strong>42</strong>" in html  # on the edit's timeline entry
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).phone == "+12125550177"
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.UPDATED)).one()
    assert event.data == {"fields": ["phone"], "phone_extension": "42"}

    # The same number again with only the extension: nothing else changes, the extension is still noted.
    lead = db.session.get(Lead, lead.id)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, phone="212-555-0177 x7"), follow_redirects=True)
    assert "Phone extension 7 noted on the timeline." in resp.get_data(as_text=True)
    events = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.UPDATED)).all()
    assert [e.data for e in events][-1] == {"fields": [], "phone_extension": "7"}


def test_the_patient_confirming_they_are_an_adult_is_one_click_and_settles_the_age_check(
    client, db, desk, auth, specialist
):
    """Every request from the form arrived "Age: Unknown" / "To confirm", and only a full date of
    birth in Edit details could settle it; the patient saying "I'm over 18" on the phone now does."""
    lead = desk["lead"]
    lead.patient.age_confirmed = False
    lead.patient.date_of_birth = None
    db.session.commit()
    from crm.services.enrichment import match_and_store

    match_and_store(lead, lead.created_at)
    db.session.commit()
    assert lead.eligibility["eligible"] is None
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Patient confirmed 18 or older</button>" in page
    resp = client.post(f"/leads/{lead.id}/age-confirmed", data={"version": str(lead.version)})
    assert resp.status_code == 302
    db.session.expire_all()
    lead = db.session.get(Lead, lead.id)
    assert lead.patient.age_confirmed is True and lead.eligibility["eligible"] is True
    age = next(c for c in lead.eligibility["checks"] if c["rule"] == "age")
    assert age["status"] == "pass" and "Confirmed adult" in age["text"]
    event = db.session.scalars(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id, LeadEvent.kind == EventKind.UPDATED)
    ).one()
    assert event.data == {"fields": ["age_confirmed"]} and event.actor_id == specialist.id
    assert db.session.scalar(sa.select(sa.func.count()).where(AuditLog.action == "edit_details")) == 1
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "the patient confirmed they are 18 or older" in page and "Confirmed adult" in page
    assert "Patient confirmed 18 or older</button>" not in page
    # A stale page is a conflict, as for every workspace form.
    stale = client.post(f"/leads/{lead.id}/age-confirmed", data={"version": "1"})
    assert stale.status_code == 409
    # A closed lead records nothing more (the link is not shown; a hand-made post is refused).
    closed = LeadFactory(status="lost")
    closed.patient.age_confirmed = False
    db.session.commit()
    resp = client.post(f"/leads/{closed.id}/age-confirmed", data={"version": str(closed.version)})
    assert resp.status_code == 422 and "This lead is closed" in resp.get_data(as_text=True)


def test_invisible_characters_typed_into_a_patients_name_are_dropped(client, db, desk, auth, specialist):
    lead = desk["lead"]
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/details", data=form_for(lead, first_name="\u202eAna\u200b"))
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(Patient, lead.patient_id).first_name == "Ana"


# ----------------------------------------------------------------- the workspace's Patient and Request cards


def test_sent_as_shows_the_other_details_sent_with_the_other_name(client, db, desk, auth, specialist):
    from crm.services.timeline import add_event

    lead = desk["lead"]
    sent = {"first_name": "Rob", "last_name": "Wu", "email": "rob.w@example.org", "zip": "33133"}
    add_event(lead, EventKind.CREATED, {"channel": "webhook", "returning_patient": True, "details_sent": sent})
    db.session.commit()
    auth.as_user(specialist)
    html = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    row = html.split("Sent as</dt>", 1)[1].split("</dd>", 1)[0]
    assert "<strong>Rob Wu</strong> · with email <strong>rob.w@example.org</strong>, ZIP <strong>33133</strong>" in row
    assert "ask who the appointment is for" in row


def test_other_leads_show_their_condition_and_a_readable_status(client, db, desk, auth, specialist):
    from crm.models.enums import LeadStatus

    lead = desk["lead"]
    pain = ConditionFactory(name="Chronic pain", slug="chronic-pain")
    typed = LeadFactory(patient=lead.patient, condition_text="back spasms", status=LeadStatus.ATTEMPTING)
    known = LeadFactory(patient=lead.patient, condition=pain, condition_text="chronic pain")
    db.session.commit()
    auth.as_user(specialist)
    html = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    row = " ".join(html.split("Other leads</dt>", 1)[1].split("</dd>", 1)[0].split())
    assert f'<a href="/leads/{typed.id}">#{typed.id}</a> back spasms · Attempting' in row
    assert f'<a href="/leads/{known.id}">#{known.id}</a> Chronic pain · New' in row


def test_the_age_shown_is_the_one_eligibility_counts_on_the_patients_birthday(client, db, desk, auth, specialist):
    """Born 2008-12-03: on 2026-12-03 the page said 17 (days / 365.25) while eligibility said 18."""
    from datetime import date

    import time_machine

    lead = desk["lead"]
    lead.patient.date_of_birth = date(2008, 12, 3)
    lead.patient.timezone = "America/New_York"
    db.session.commit()
    with time_machine.travel("2026-12-03 15:00Z", tick=False):
        auth.as_user(specialist)
        page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert '<dt class="col-4">Age</dt><dd class="col-8">18 (born Dec 03, 2008)' in page
    with time_machine.travel("2026-12-03 03:00Z", tick=False):  # still Dec 2 in New York
        auth.as_user(specialist)
        page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert '<dt class="col-4">Age</dt><dd class="col-8">17 (born Dec 03, 2008)' in page
