"""Geocoding: the offline ZIP geocoder, a faked online service (never the network), the cache,
what is sent, and failure -> pending -> retried with backoff -> failed after the last attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from geopy.exc import GeocoderUnavailable
from geopy.geocoders.base import Geocoder
from geopy.location import Location

from crm.models import GeocodeCache, LeadEvent, Notification
from crm.models.enums import GeocodePrecision, GeocodeStatus
from crm.services import geocoding
from crm.services.enrichment import enrich_lead, match_and_store, retry_pending_geocodes
from crm.services.geocoding import Address, GeocodeError, geocode_address, geocode_patient, geocode_physician
from tests.factories import (
    ConditionFactory,
    LeadFactory,
    PatientFactory,
    PhysicianFactory,
    StateProgramFactory,
    UserFactory,
)

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
OFFLINE = {"GEOCODER": "offline"}


class FakeOnline(Geocoder):
    """Stands in for an online service: records every query, answers from a table or fails."""

    queries: list = []
    fail = False
    answers: dict = {}

    def geocode(self, query, *, exactly_one=True, **kwargs):
        FakeOnline.queries.append(query)
        if FakeOnline.fail:
            raise GeocoderUnavailable("service down")
        found = FakeOnline.answers.get(query)
        if found is None:
            return None
        lat, lon, raw = found
        return Location(query, (lat, lon), raw)

    def reverse(self, query, *, exactly_one=True, **kwargs):
        raise NotImplementedError


@pytest.fixture
def fake_online():
    FakeOnline.queries, FakeOnline.fail, FakeOnline.answers = [], False, {}
    geocoding.register_geocoder("fakemaps", lambda config: FakeOnline(user_agent=config.get("GEOCODER_USER_AGENT")))
    yield {
        "GEOCODER": "fakemaps",
        "GEOCODER_USER_AGENT": "test-agent",
        "GEOCODE_MAX_ATTEMPTS": 3,
        "GEOCODE_RETRY_BASE_SECONDS": 60,
    }
    geocoding.GEOCODERS.pop("fakemaps", None)
    geocoding._cached_geocoder.cache_clear()


def pending_patient(**kw):
    fields = {
        "latitude": None,
        "longitude": None,
        "geocode_precision": None,
        "geocode_status": GeocodeStatus.PENDING,
        "geocode_next_at": NOW,
        "timezone": None,
        "state": None,
        **kw,
    }
    return PatientFactory(**fields)


# --------------------------------------------------------------------------- offline


def test_offline_zip_lookup(app):
    with app.app_context():
        r = geocode_address(Address(zip="33101"), OFFLINE)
    assert r.precision == GeocodePrecision.ZIP and r.state == "FL" and r.timezone == "America/New_York"
    assert r.latitude == pytest.approx(25.78, abs=0.05) and r.longitude == pytest.approx(-80.2, abs=0.05)


def test_offline_city_state_and_state_fallbacks(app):
    with app.app_context():
        city = geocode_address(Address(city="boise", state="ID"), OFFLINE)
        state = geocode_address(Address(city="Nowhere Town", state="MT"), OFFLINE)
        apo = geocode_address(Address(zip="09001"), OFFLINE)  # coordinates "0","0": unknown
        unknown = geocode_address(Address(zip="00000"), OFFLINE)
    assert city.precision == GeocodePrecision.CITY and city.state == "ID" and city.timezone == "America/Boise"
    assert city.latitude == pytest.approx(43.6, abs=0.2)
    assert state.precision == GeocodePrecision.STATE and state.state == "MT"
    assert apo is None and unknown is None


def test_offline_geocoder_speaks_geopy(app):
    geo = geocoding.OfflineGeocoder()
    loc = geo.geocode("1 Main St, Miami, FL 33101, USA")
    assert isinstance(loc, Location) and loc.raw["precision"] == "zip" and loc.raw["state"] == "FL"
    assert geo.geocode({"city": "Boise", "state": "ID"}).raw["precision"] == "city"
    back = geo.reverse((25.78, -80.2))
    assert back.raw["state"] == "FL"


def test_address_key_is_normalised():
    a = Address(street="12  Main St.", city="Miami", state="fl", zip="33101")
    b = Address.of(type("P", (), {"street": "12 main st", "city": "MIAMI ", "state": "FL", "zip": "33101"})())
    assert a.key() == b.key() == "12 main st miami fl 33101 usa"
    assert a.query() == "12  Main St., Miami, fl 33101, USA"


def test_patient_located_offline_gets_state_and_timezone(db):
    patient = pending_patient(zip="30301", city="Atlanta", state="FL")  # the ZIP decides the state
    outcome = geocode_patient(patient, NOW, OFFLINE)
    assert outcome.ok and bool(outcome)
    assert patient.geocode_status == GeocodeStatus.OK and patient.geocode_precision == GeocodePrecision.ZIP
    assert patient.state == "GA" and patient.timezone == "America/New_York"
    assert patient.geocode_next_at is None and patient.geocode_error is None


def test_offline_not_found_or_no_address_fails_at_once(db):
    unknown = pending_patient(zip="00000")
    nothing = pending_patient(zip="", city="", state=None)
    assert not geocode_patient(unknown, NOW, OFFLINE).ok
    assert unknown.geocode_status == GeocodeStatus.FAILED and unknown.geocode_error == "address not found"
    assert geocode_patient(nothing, NOW, OFFLINE).final
    assert nothing.geocode_status == GeocodeStatus.FAILED and "no address" in nothing.geocode_error


def test_geocode_physician(db):
    doc = PhysicianFactory(latitude=None, longitude=None, geocode_status=GeocodeStatus.PENDING, zip="85001", state="AZ")
    assert geocode_physician(doc, OFFLINE) is True
    assert doc.geocode_status == GeocodeStatus.OK and doc.timezone == "America/Phoenix"


def test_a_physician_located_only_to_the_state_gets_no_made_up_distance(db):
    """A state's centre is no practice location: the physician keeps no coordinates (so no in-person
    distance, telehealth only) and the directory lists them as not located, saying what to check."""
    lost = PhysicianFactory(latitude=None, longitude=None, zip="00000", city="", state="AZ")
    assert geocode_physician(lost, {"GEOCODER": "offline"}, NOW) is False
    assert lost.latitude is None and lost.longitude is None and lost.geocode_precision is None
    assert lost.geocode_status == GeocodeStatus.FAILED and lost.geocode_error == geocoding.STATE_ONLY
    # One located before whose address now resolves only to the state loses the old point too.
    moved = PhysicianFactory(latitude=33.45, longitude=-112.07, zip="00000", city="Nowhere", state="AZ")
    assert geocode_physician(moved, OFFLINE, NOW, fresh=True) is False and moved.latitude is None


def test_a_five_digit_house_number_is_not_taken_for_the_zip(db):
    """The ZIP field decides where an address is: "10001 NW 7th Ave" in Miami is not at New York's 10001."""
    patient = pending_patient(street="10001 NW 7th Ave", city="Miami", state="FL", zip="33150")
    assert geocode_patient(patient, NOW, OFFLINE).ok
    assert patient.state == "FL" and patient.timezone == "America/New_York"
    assert patient.geocode_precision == GeocodePrecision.ZIP and patient.latitude == pytest.approx(25.85, abs=0.1)
    doc = PhysicianFactory(latitude=None, longitude=None, street="35201 Pacific Coast Hwy", zip="92624", state="CA")
    assert geocode_physician(doc, OFFLINE, NOW) and doc.timezone == "America/Los_Angeles"
    assert doc.latitude == pytest.approx(33.46, abs=0.1)
    # A one-line query (what an online service is sent) is read the same way.
    geo = geocoding.OfflineGeocoder()
    assert geo.geocode("14000 Main St, Houston, TX 77002, USA").raw["state"] == "TX"
    no_zip = geo.geocode("10001 NW 7th Ave, Miami, FL, USA")
    assert no_zip.raw["precision"] == "city" and no_zip.raw["state"] == "FL"


def test_a_zip_the_data_has_without_coordinates_is_placed_at_its_city(db):
    """PO-box and single-firm ZIPs have "0","0" coordinates in the data but name their city and state:
    the patient gets their state program, zone and a city-precision location. Military ZIPs name no state."""
    po_box = pending_patient(zip="11805", city="", state=None)
    assert geocode_patient(po_box, NOW, OFFLINE).ok
    assert po_box.state == "NY" and po_box.timezone == "America/New_York"
    assert po_box.geocode_precision == GeocodePrecision.CITY and po_box.latitude == pytest.approx(40.76, abs=0.1)
    firm = geocoding.zip_location("35270")
    assert firm.state == "AL" and firm.timezone == "America/Chicago" and firm.precision == GeocodePrecision.CITY
    typed = PatientFactory(zip="35270", state=None, timezone=None)
    assert geocoding.state_from_zip(typed) and typed.state == "AL"
    assert geocoding.zip_location("09001") is None  # APO, AE


def test_a_move_drops_the_old_addresss_time_zone(db):
    """Until the new address is located, the calling window follows the new ZIP, not the old zone."""
    from crm.services.followups import patient_timezone

    patient = PatientFactory(zip="90001", state="CA", timezone="America/Los_Angeles")
    patient.zip, patient.state = "33101", "FL"
    geocoding.reset_patient_location(patient, NOW)
    assert patient.timezone is None
    assert patient_timezone(patient) == ("America/New_York", True)


def test_a_physician_not_found_offline_fails_at_once(db):
    lost = PhysicianFactory(latitude=None, longitude=None, zip="00000", city="", state="")
    assert geocode_physician(lost, OFFLINE, NOW) is False
    assert lost.geocode_status == GeocodeStatus.FAILED and lost.geocode_next_at is None
    assert lost.geocode_error and lost.geocode_attempts == 1


# --------------------------------------------------------------------------- online (faked)


def test_online_only_the_address_is_sent_and_cached(db, fake_online):
    FakeOnline.answers["12 Main St, Miami, FL 33101, USA"] = (25.7743, -80.1937, {"addresstype": "house"})
    patient = pending_patient(street="12 Main St", city="Miami", state="FL", zip="33101", first_name="Secret")
    assert geocode_patient(patient, NOW, fake_online).ok
    assert FakeOnline.queries == ["12 Main St, Miami, FL 33101, USA"]
    sent = " ".join(map(str, FakeOnline.queries))
    for private in (patient.first_name, patient.last_name, patient.email, patient.phone):
        assert private not in sent
    assert patient.geocode_precision == GeocodePrecision.ROOFTOP
    assert patient.timezone == "America/New_York"  # from tzfpy
    assert patient.state == "FL"

    # Same address, other spelling: answered from the cache, the service is not asked again.
    again = pending_patient(street="12 MAIN ST.", city="miami", state="FL", zip="33101")
    assert geocode_patient(again, NOW, fake_online).ok
    assert len(FakeOnline.queries) == 1
    assert (again.latitude, again.longitude) == (patient.latitude, patient.longitude)
    row = db.session.scalar(sa.select(GeocodeCache))
    assert row.provider == "fakemaps" and row.query_key == "12 main st miami fl 33101 usa"


def test_online_outage_raises_geocode_error(db, fake_online):
    FakeOnline.fail = True
    with pytest.raises(GeocodeError):
        geocode_address(Address(zip="33101"), fake_online)


def test_geopy_services_are_built_from_configuration(app):
    with app.app_context():
        geo = geocoding.get_geocoder(
            {"GEOCODER": "nominatim", "GEOCODER_USER_AGENT": "desk-test", "GEOCODER_TIMEOUT": "3"}
        )
        assert geo.online and geo.name == "nominatim"
        assert geo.geocoder.headers["User-Agent"] == "desk-test" and geo.geocoder.timeout == 3
        with pytest.raises(ValueError):
            geocoding.get_geocoder({"GEOCODER": "no-such-service"})
        with pytest.raises(ValueError):
            geocoding.get_geocoder({"GEOCODER": "nominatim", "GEOCODER_OPTIONS": "[1, 2]"})


def test_failure_pending_backoff_then_failed_after_last_attempt(db, fake_online):
    admin = UserFactory(role="admin")
    fl = StateProgramFactory(state="FL", telehealth_allowed=True)
    condition = ConditionFactory(name="Dystonia", slug="dystonia")
    fl.qualifying_conditions = [condition]
    tele = PhysicianFactory(offers_telehealth=True)
    patient = pending_patient(zip="33101", city="Miami", state="FL")
    lead = LeadFactory(patient=patient, condition=condition)
    db.session.commit()
    FakeOnline.fail = True

    first = retry_pending_geocodes(NOW, config=fake_online)
    assert (first.claimed, first.pending) == (1, 1)
    db.session.refresh(patient)
    assert patient.geocode_status == GeocodeStatus.PENDING and patient.geocode_attempts == 1
    assert patient.geocode_next_at == NOW + timedelta(seconds=60)
    assert "geocoder unavailable" in patient.geocode_error
    # While it waits, the lead already has its telehealth list.
    db.session.refresh(lead)
    assert [c["physician_id"] for c in lead.match_result["candidates"]] == [tele.id]

    assert retry_pending_geocodes(NOW + timedelta(seconds=30), config=fake_online).claimed == 0  # not due yet
    second = retry_pending_geocodes(NOW + timedelta(seconds=61), config=fake_online)
    assert second.pending == 1
    db.session.refresh(patient)
    assert patient.geocode_attempts == 2
    assert patient.geocode_next_at == NOW + timedelta(seconds=61 + 120)  # doubled

    last = retry_pending_geocodes(NOW + timedelta(hours=1), config=fake_online)
    assert last.failed == 1
    db.session.refresh(patient)
    assert patient.geocode_status == GeocodeStatus.FAILED and patient.geocode_next_at is None
    note = db.session.scalar(sa.select(Notification).where(Notification.user_id == admin.id))
    assert note.kind == "geocode_failed" and f"Lead #{lead.id}" in note.message
    kinds = [e.kind for e in db.session.scalars(sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id))]
    assert "geocode_failed" in kinds and kinds.count("matched") == 2
    assert retry_pending_geocodes(NOW + timedelta(days=1), config=fake_online).claimed == 0


def test_a_zip_only_lead_gets_its_state_and_telehealth_list_while_the_geocoder_is_down(db, fake_online):
    """A form lead has a ZIP and no state. The online geocoder is down at intake, on every retry
    and when it gives up: the ZIP table still gives the state (and time zone), so eligibility is
    checked and the telehealth list is there all along, without pretending to have coordinates."""
    fl = StateProgramFactory(state="FL", telehealth_allowed=True)
    condition = ConditionFactory(name="Dystonia", slug="dystonia")
    fl.qualifying_conditions = [condition]
    tele = PhysicianFactory(offers_telehealth=True)
    lead = LeadFactory(patient=pending_patient(zip="33101", city=""), condition=condition)
    patient = lead.patient
    db.session.commit()
    FakeOnline.fail = True

    def telehealth_list():
        db.session.refresh(lead)
        assert lead.eligibility["state"] == "FL" and lead.eligibility["eligible"] is True
        return [c["physician_id"] for c in lead.match_result["candidates"] if c["mode"] == "telehealth"]

    enrich_lead(lead, NOW, fake_online)  # intake's enrichment
    db.session.commit()
    assert (patient.state, patient.timezone) == ("FL", "America/New_York")
    assert patient.geocode_status == GeocodeStatus.PENDING
    assert (patient.latitude, patient.longitude, patient.geocode_precision) == (None, None, None)
    assert telehealth_list() == [tele.id]
    assert lead.match_result["origin"]["latitude"] is None

    for minutes in (2, 60):  # every retry fails too; the last one gives up
        retry_pending_geocodes(NOW + timedelta(minutes=minutes), config=fake_online)
    db.session.refresh(patient)
    assert patient.geocode_status == GeocodeStatus.FAILED and patient.geocode_attempts == 3
    assert patient.state == "FL" and patient.latitude is None
    assert telehealth_list() == [tele.id]


def test_a_lead_matched_before_its_state_was_known_is_matched_again_once_it_is(db, fake_online):
    StateProgramFactory(state="FL", telehealth_allowed=True)
    tele = PhysicianFactory(offers_telehealth=True)
    lead = LeadFactory(patient=pending_patient(zip="33101"))
    db.session.flush()
    match_and_store(lead, NOW - timedelta(minutes=1))  # matched while nothing was known
    assert lead.match_result["candidates"] == []
    db.session.commit()
    FakeOnline.fail = True
    summary = retry_pending_geocodes(NOW, config=fake_online)
    assert (summary.pending, summary.rematched) == (1, 1)
    db.session.refresh(lead)
    assert [c["physician_id"] for c in lead.match_result["candidates"]] == [tele.id]
    assert retry_pending_geocodes(NOW + timedelta(minutes=2), config=fake_online).rematched == 0  # nothing new


def test_a_typed_state_is_kept_and_an_unknown_zip_gives_none(db):
    typed = PatientFactory(zip="33101", state="GA", timezone=None)
    unknown = PatientFactory(zip="00000", state=None, timezone=None)
    assert not geocoding.state_from_zip(typed) and typed.state == "GA"
    assert not geocoding.state_from_zip(unknown) and unknown.state is None


def test_retry_locates_and_rematches(db, fake_online):
    StateProgramFactory(state="FL", telehealth_allowed=False)
    near = PhysicianFactory()
    patient = pending_patient(zip="33101", city="Miami", state="FL")
    lead = LeadFactory(patient=patient)
    db.session.commit()
    FakeOnline.answers["Miami, FL 33101, USA"] = (25.7617, -80.1918, {"addresstype": "postcode"})
    summary = retry_pending_geocodes(NOW, config=fake_online)
    assert (summary.located, summary.rematched) == (1, 1)
    db.session.refresh(lead)
    assert lead.patient.geocode_precision == GeocodePrecision.ZIP
    assert [c["physician_id"] for c in lead.match_result["candidates"]] == [near.id]
    assert lead.matched_at is not None
    assert "1 located" in str(summary)


def test_enrich_lead_offline_inline(db):
    condition = ConditionFactory(name="Dystonia", slug="dystonia")
    program = StateProgramFactory(state="FL", telehealth_allowed=True, registry_url="https://example.org/fl")
    program.qualifying_conditions = [condition]
    doc = PhysicianFactory()
    lead = LeadFactory(patient=pending_patient(zip="33101"), condition=condition)
    version = lead.version
    db.session.flush()
    result = enrich_lead(lead, NOW, OFFLINE)
    assert lead.patient.geocode_status == GeocodeStatus.OK and lead.patient.state == "FL"
    assert lead.eligibility["eligible"] is True
    assert lead.match_result == result and result["candidates"][0]["physician_id"] == doc.id
    assert lead.version == version  # a system re-match never bumps the optimistic-locking version
    # Part of intake: the result is on the lead, the timeline is left to later changes.
    assert db.session.scalar(sa.select(LeadEvent).where(LeadEvent.lead_id == lead.id)) is None
    assert lead.matched_at == NOW


# --------------------------------------------------------------------------- physicians: retry with backoff


def test_physician_outage_is_pending_then_retried_by_the_job_until_located(db, fake_online):
    from crm.services.enrichment import retry_pending_physicians

    doc = PhysicianFactory(latitude=None, longitude=None, street="", city="Miami", state="FL", zip="33101")
    db.session.flush()
    FakeOnline.fail = True
    assert geocode_physician(doc, fake_online, NOW, fresh=True) is False
    assert doc.geocode_status == GeocodeStatus.PENDING  # an outage is not "not found"
    assert (doc.geocode_attempts, doc.geocode_next_at) == (1, NOW + timedelta(seconds=60))
    assert "unavailable" in doc.geocode_error
    db.session.commit()

    assert retry_pending_physicians(NOW + timedelta(seconds=30), 10, fake_online).claimed == 0  # backing off
    FakeOnline.fail = False
    FakeOnline.answers["Miami, FL 33101, USA"] = (25.7617, -80.1918, {"addresstype": "postcode"})
    summary = retry_pending_physicians(NOW + timedelta(seconds=61), 10, fake_online)
    assert (summary.claimed, summary.located) == (1, 1), str(summary)
    db.session.expire_all()
    doc = db.session.get(type(doc), doc.id)
    assert doc.geocode_status == GeocodeStatus.OK and doc.latitude == pytest.approx(25.7617)
    assert doc.geocode_next_at is None and doc.geocode_error is None


def test_physician_fails_after_the_last_attempt_and_admins_hear_once(db, fake_online):
    from crm.services.enrichment import retry_pending_physicians

    admin = UserFactory(role="admin")
    idle = PhysicianFactory(latitude=None, longitude=None, geocode_status=GeocodeStatus.PENDING, active=False)
    doc = PhysicianFactory(latitude=None, longitude=None, geocode_status=GeocodeStatus.PENDING, zip="33101")
    db.session.commit()
    FakeOnline.fail = True
    at = NOW
    for _ in range(3):  # GEOCODE_MAX_ATTEMPTS is 3 in fake_online
        at += timedelta(hours=1)
        retry_pending_physicians(at, 10, fake_online)
    db.session.expire_all()
    doc = db.session.get(type(doc), doc.id)
    assert doc.geocode_status == GeocodeStatus.FAILED and doc.geocode_attempts == 3
    assert db.session.get(type(idle), idle.id).geocode_attempts == 0  # inactive physicians are left alone
    notes = db.session.scalars(sa.select(Notification).where(Notification.user_id == admin.id)).all()
    assert len(notes) == 1 and doc.npi in notes[0].message and "not matched by distance" in notes[0].message
    assert retry_pending_physicians(at + timedelta(days=1), 10, fake_online).claimed == 0  # given up


def test_the_geocode_retry_job_covers_physicians(app, db):
    from crm.jobs import JOBS_BY_ID, run_job

    doc = PhysicianFactory(latitude=None, longitude=None, geocode_status=GeocodeStatus.PENDING, zip="85001", state="AZ")
    db.session.commit()
    run = run_job(JOBS_BY_ID["geocode_retry"])
    assert run.ok and "1 physician(s) tried: 1 located" in run.summary, run.summary
    db.session.expire_all()
    assert db.session.get(type(doc), doc.id).timezone == "America/Phoenix"


def test_enrichment_leaves_a_backing_off_or_leased_patient_to_the_retry_job(db):
    """enrich_new and geocode_retry both locate pending patients: the lease on geocode_next_at
    keeps them from sending one patient to the geocoder twice."""
    waiting = LeadFactory(patient=pending_patient(zip="33101", geocode_next_at=NOW + timedelta(minutes=5)))
    db.session.flush()
    enrich_lead(waiting, NOW, OFFLINE)
    assert waiting.patient.geocode_status == GeocodeStatus.PENDING  # not its turn yet
    assert waiting.matched_at is not None  # matched anyway (telehealth list while it waits)

    due = LeadFactory(patient=pending_patient(zip="33101"))
    db.session.commit()
    enrich_lead(due, NOW, OFFLINE)  # leases, then locates
    assert due.patient.geocode_status == GeocodeStatus.OK
    db.session.commit()


def test_a_geocoder_answer_for_an_address_changed_meanwhile_is_thrown_away(db, fake_online):
    """The retry job calls the service outside any lock; a specialist saves a new ZIP during that
    call. The answer for the old ZIP must not land on the new address."""
    patient = pending_patient(zip="33101", city="Miami", state="FL")
    lead = LeadFactory(patient=patient)
    db.session.commit()

    def saved_meanwhile(query):
        with db.engine.begin() as conn:  # another request, committed while the job waits
            conn.execute(
                sa.update(type(patient).__table__)
                .where(type(patient).__table__.c.id == patient.id)
                .values(zip="30303", city="Atlanta", state="GA", geocode_next_at=None)
            )
        return (25.7617, -80.1918, {"addresstype": "postcode"})

    class Racing(Geocoder):
        def geocode(self, query, *, exactly_one=True, **kwargs):
            lat, lon, raw = saved_meanwhile(query)
            return Location(str(query), (lat, lon), raw)

        def reverse(self, query, *, exactly_one=True, **kwargs):
            raise NotImplementedError

    geocoding.register_geocoder("racing", lambda config: Racing())
    try:
        summary = retry_pending_geocodes(NOW, config=dict(fake_online, GEOCODER="racing"))
    finally:
        geocoding.GEOCODERS.pop("racing", None)
        geocoding._cached_geocoder.cache_clear()
    assert summary.errors == [] and summary.located == 0  # a save meanwhile is no error
    db.session.expire_all()
    p = db.session.get(type(patient), patient.id)
    assert (p.zip, p.state, p.latitude, p.geocode_status) == ("30303", "GA", None, GeocodeStatus.PENDING)
    # The new address was never tried: no attempt counted, no error stored, due at once.
    assert (p.geocode_attempts, p.geocode_error, p.geocode_next_at) == (0, None, None)
    assert db.session.get(type(lead), lead.id).matched_at is None  # nothing was matched to the old place


def test_a_patient_whose_retry_always_breaks_is_counted_and_given_up(db, fake_online, monkeypatch):
    """An unexpected error (not the geocoder saying no) used to roll the attempt back with the rest:
    the patient came back every lease for ever, admins never told, the job's summary silent."""
    from crm.services import enrichment

    admin = UserFactory(role="admin")
    patient = pending_patient(zip="33101", city="Miami", state="FL")
    lead = LeadFactory(patient=patient)
    closed = pending_patient(zip="33101", city="Miami", state="FL")
    LeadFactory(patient=closed, status="lost", lost_reason="spam")
    db.session.commit()

    def broken(*args, **kwargs):
        raise RuntimeError("matching broke")

    monkeypatch.setattr(enrichment, "match_and_store", broken)
    FakeOnline.fail = True  # pending after each try, so the re-match (broken here) runs
    first = retry_pending_geocodes(NOW, config=fake_online)
    assert first.claimed == 2 and "1 error(s): RuntimeError" in str(first)  # the closed lead is not re-matched
    db.session.refresh(patient)
    assert patient.geocode_status == GeocodeStatus.PENDING and patient.geocode_attempts == 1
    assert "matching broke" in patient.geocode_error
    later = NOW
    for _ in range(3):
        later += timedelta(hours=1)
        retry_pending_geocodes(later, config=fake_online)
    db.session.refresh(patient)
    db.session.refresh(closed)
    assert patient.geocode_status == closed.geocode_status == GeocodeStatus.FAILED
    assert retry_pending_geocodes(later + timedelta(days=1), config=fake_online).claimed == 0
    notes = db.session.scalars(sa.select(Notification).where(Notification.user_id == admin.id)).all()
    # Told about the open lead's patient only: nobody needs to act on a closed lead's address.
    assert [n.kind for n in notes] == ["geocode_failed"] and f"Lead #{lead.id}" in notes[0].message


def test_the_migration_unlocates_physicians_stored_at_a_state_centre(tmp_path):
    from flask_migrate import downgrade, upgrade

    from crm.extensions import db as _db
    from crm.models import Physician
    from tests.conftest import build_app

    app = build_app(f"sqlite:///{tmp_path / 'migrate.sqlite3'}")
    with app.app_context():
        upgrade()
        downgrade(revision="0020_appointment_outcome_asked")
        state_centre = PhysicianFactory.build(latitude=28.13, longitude=-81.96, geocode_precision="state")
        at_zip = PhysicianFactory.build(latitude=25.78, longitude=-80.2, geocode_precision="zip")
        _db.session.add_all([state_centre, at_zip])
        _db.session.commit()
        ids = state_centre.id, at_zip.id
        upgrade()
        _db.session.expire_all()
        moved, kept = (_db.session.get(Physician, i) for i in ids)
        assert moved.latitude is None and moved.geocode_status == GeocodeStatus.FAILED
        assert moved.geocode_error == geocoding.STATE_ONLY and moved.geocode_precision is None
        assert kept.latitude == 25.78 and kept.geocode_precision == GeocodePrecision.ZIP
        rtree = _db.session.execute(sa.text("SELECT id FROM physicians_rtree")).scalars().all()
        assert rtree == [at_zip.id]
        _db.session.remove()
        _db.engine.dispose()
