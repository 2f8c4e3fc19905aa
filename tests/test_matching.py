"""Physician matching (SPEC 6): every rule, widening, ties, telehealth, exclusions, and the index
against a brute-force scan for random directories."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Appointment, Patient, Registration
from crm.models.enums import AppointmentStatus, GeocodeStatus, VisitMode
from crm.services import matching
from crm.services.matching import EARTH_RADIUS_MILES, comparable, haversine_miles, match_lead
from tests.factories import ConditionFactory, LeadFactory, PatientFactory, PhysicianFactory, StateProgramFactory

ORIGIN = (25.7617, -80.1918)  # Miami
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def north(miles: float) -> tuple[float, float]:
    """A point ``miles`` due north of the origin (exact on the sphere we measure with)."""
    return ORIGIN[0] + math.degrees(miles / EARTH_RADIUS_MILES), ORIGIN[1]


def doc(miles: float, **kw):
    lat, lon = north(miles)
    return PhysicianFactory(latitude=lat, longitude=lon, **kw)


@pytest.fixture
def world(db):
    dystonia = ConditionFactory(name="Dystonia", slug="dystonia")
    other = ConditionFactory(name="Glaucoma", slug="glaucoma")
    fl = StateProgramFactory(state="FL", name="Florida", telehealth_allowed=True, registry_url="https://example.org/fl")
    fl.qualifying_conditions = [dystonia]
    StateProgramFactory(state="GA", name="Georgia", telehealth_allowed=False, physician_discretion=True)
    db.session.commit()  # the property test rolls back each example down to this
    return {"dystonia": dystonia, "other": other}


def new_lead(world, **patient):
    fields = {"latitude": ORIGIN[0], "longitude": ORIGIN[1], "state": "FL", **patient}
    return LeadFactory(patient=PatientFactory(**fields), condition=world["dystonia"])


def ids(result, mode):
    return [c["physician_id"] for c in result["candidates"] if c["mode"] == mode]


def reasons(result):
    return {x["physician_id"]: x["reason"] for x in result["excluded"]}


def book(lead, physician, n=1, at=NOW - timedelta(days=1), status=AppointmentStatus.BOOKED):
    for _ in range(n):
        lead.appointments.append(
            Appointment(physician=physician, starts_at=NOW + timedelta(days=2), mode=VisitMode.IN_PERSON, status=status)
        )
        lead.appointments[-1].created_at = at


def check_both(db, lead, now=NOW):
    """The indexed result, after checking the brute-force scan agrees with it."""
    db.session.flush()
    indexed = match_lead(lead, now)
    assert comparable(indexed) == comparable(match_lead(lead, now, bruteforce=True))
    return indexed


def test_every_exclusion_reason_in_words(db, world):
    lead = new_lead(world)
    ok = doc(1, last_name="Eligible")
    closed = doc(2, accepting_new=False)
    unregistered = doc(3, registered_in=["GA"])
    expired = doc(4, registered_in=[])
    expired.registrations.append(Registration(state="FL", number="FL-9", expires_on=date(2026, 3, 1)))
    other_condition = doc(5, conditions=[world["other"]])
    treats_it = doc(6, conditions=[world["other"], world["dystonia"]])
    full = doc(7, weekly_capacity=2)
    book(new_lead(world), full, n=2)
    inactive = doc(8, active=False)
    result = check_both(db, lead)

    assert reasons(result) == {
        closed.id: "not accepting new patients",
        unregistered.id: "no registration in FL",
        expired.id: "registration expired 2026-03-01",
        other_condition.id: "does not treat dystonia",
        full.id: "at weekly capacity",
    }
    assert set(ids(result, "in_person")) == {ok.id, treats_it.id}
    assert inactive.id not in reasons(result) and inactive.id not in ids(result, "in_person")
    assert result["rules"]["radius_miles"] == 250  # only 2 eligible: widened to the end


def test_cancelled_and_old_bookings_do_not_count(db, world):
    lead = new_lead(world)
    busy = doc(1, weekly_capacity=1)
    other = new_lead(world)
    book(other, busy, status=AppointmentStatus.CANCELLED)
    book(other, busy, at=NOW - timedelta(days=8))
    result = check_both(db, lead)
    assert ids(result, "in_person") == [busy.id]
    assert result["candidates"][0]["bookings_7d"] == 0


def test_radius_widens_until_three_eligible(db, world):
    lead = new_lead(world)
    near = [doc(5), doc(10)]
    assert check_both(db, lead)["rules"]["radius_miles"] == 250
    doc(40)
    result = check_both(db, lead)
    assert result["rules"]["radius_miles"] == 50
    assert ids(result, "in_person")[:2] == [near[0].id, near[1].id]
    far = doc(60)  # outside the final radius: not listed
    assert far.id not in ids(check_both(db, lead), "in_person")
    doc(20)
    result = check_both(db, lead)
    assert result["rules"]["radius_miles"] == 25
    assert len(ids(result, "in_person")) == 3


def test_ties_within_a_tenth_of_a_mile_go_by_priority_then_bookings(db, world):
    lead = new_lead(world)
    a = doc(5.00, priority=2)
    b = doc(5.05, priority=1)  # 0.05 mi farther, preferred: first
    c = doc(5.08, priority=2)
    d = doc(5.09, priority=2)
    book(new_lead(world), c, n=1)  # same priority as a and d; c has a booking
    e = doc(5.3, priority=1)  # outside the tie: stays behind
    result = check_both(db, lead)
    assert ids(result, "in_person") == [b.id, a.id, d.id, c.id, e.id]
    first = result["candidates"][0]
    assert first["mode"] == "in_person" and first["priority"] == 1
    assert first["distance_miles"] == pytest.approx(5.05, abs=0.01)


def test_first_ten_only_and_json_shape(db, world):
    lead = new_lead(world)
    docs = [doc(1 + i) for i in range(14)]
    result = check_both(db, lead)
    assert ids(result, "in_person") == [d.id for d in docs[:10]]
    assert set(result) >= {"lead_id", "origin", "eligibility", "candidates", "excluded", "rules"}
    assert result["origin"] == {"latitude": ORIGIN[0], "longitude": ORIGIN[1], "precision": "zip"}
    c = result["candidates"][0]
    assert {"physician_id", "npi", "name", "distance_miles", "mode", "priority"} <= set(c)
    assert c["npi"] == docs[0].npi and c["name"] == docs[0].full_name
    assert result["eligibility"]["eligible"] is True


def test_telehealth_list_ranked_by_priority_bookings_distance(db, world):
    lead = new_lead(world)
    t1 = doc(30, offers_telehealth=True, priority=2)
    t2 = doc(300, offers_telehealth=True, priority=1)  # far away, but preferred
    t3 = doc(10, offers_telehealth=True, priority=2)
    t4 = doc(5, offers_telehealth=True, priority=2)
    book(new_lead(world), t4)
    only_tele = doc(2, offers_telehealth=True, offers_in_person=False, priority=3)
    not_offered = doc(3)
    result = check_both(db, lead)
    assert ids(result, "telehealth") == [t2.id, t3.id, t1.id, t4.id, only_tele.id]
    assert not_offered.id not in ids(result, "telehealth")
    assert only_tele.id not in ids(result, "in_person") and only_tele.id not in reasons(result)


def test_telehealth_not_allowed_in_state(db, world):
    lead = new_lead(world, state="GA", latitude=33.749, longitude=-84.388)
    ga_tele = PhysicianFactory(
        state="GA", latitude=33.75, longitude=-84.39, offers_telehealth=True, offers_in_person=False
    )
    ga_both = PhysicianFactory(state="GA", latitude=33.76, longitude=-84.39, offers_telehealth=True)
    result = check_both(db, lead)
    assert ids(result, "telehealth") == []
    assert result["rules"]["telehealth"] is False
    assert reasons(result)[ga_tele.id] == "telehealth only, and GA does not allow telehealth certification"
    assert ids(result, "in_person") == [ga_both.id]
    telehealth_check = next(c for c in result["eligibility"]["checks"] if c["rule"] == "telehealth")
    assert "not allowed in GA" in telehealth_check["text"]


def test_no_location_yet_still_gets_the_telehealth_list(db, world):
    lead = new_lead(world, latitude=None, longitude=None, geocode_precision=None, geocode_status=GeocodeStatus.PENDING)
    tele = doc(50, offers_telehealth=True)
    unlocated = PhysicianFactory(latitude=None, longitude=None, offers_telehealth=True, priority=1)
    doc(1)
    result = check_both(db, lead)
    assert result["origin"]["latitude"] is None
    assert ids(result, "in_person") == [] and result["excluded"] == []
    assert ids(result, "telehealth") == [unlocated.id, tele.id]
    assert result["candidates"][0]["distance_miles"] is None


def test_state_precision_is_not_a_location(db, world):
    lead = new_lead(world, geocode_precision="state")
    doc(1)
    result = check_both(db, lead)
    assert result["origin"]["latitude"] is None and ids(result, "in_person") == []


def test_no_program_no_registrations(db, world):
    lead = new_lead(world, state="ID", latitude=43.615, longitude=-116.2)
    near = PhysicianFactory(state="ID", latitude=43.62, longitude=-116.2, registered_in=["OR"])
    result = check_both(db, lead)
    assert result["eligibility"]["eligible"] is False
    assert ids(result, "in_person") == [] and ids(result, "telehealth") == []
    assert reasons(result) == {near.id: "no registration in ID"}


def test_exclusions_stop_at_the_last_candidate_of_a_full_list(db, world):
    lead = new_lead(world)
    for i in range(10):
        doc(1 + i)
    close_excluded = doc(0.5, accepting_new=False)
    beyond = doc(12, accepting_new=False)  # farther than the tenth candidate
    result = check_both(db, lead)
    assert reasons(result) == {close_excluded.id: "not accepting new patients"}
    assert beyond.id not in reasons(result)


def test_across_the_antimeridian(db, world):
    """Western Aleutians: the nearest physicians sit on the other side of longitude 180, where
    planar distances on stored longitudes mean nothing (PostgreSQL then walks boxes, not KNN)."""
    StateProgramFactory(state="AK", name="Alaska", telehealth_allowed=True)
    adak = (51.88, -176.66)
    assert matching.wraps(*adak, matching.LAST_TELEHEALTH_RING) and not matching.wraps(*ORIGIN, 500)
    lead = new_lead(world, state="AK", latitude=adak[0], longitude=adak[1])
    near = PhysicianFactory(state="AK", latitude=52.0, longitude=-176.5, registered_in=["AK"])
    west = [
        PhysicianFactory(state="AK", latitude=lat, longitude=lon, registered_in=["AK"], offers_telehealth=True)
        for lat, lon in ((51.95, 179.6), (51.5, 178.9))
    ]
    result = check_both(db, lead)
    assert ids(result, "in_person") == [near.id, west[0].id, west[1].id]
    assert result["rules"]["radius_miles"] == 250
    assert 150 < result["candidates"][1]["distance_miles"] < 200


EVENING = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)  # 20:00 on 25 November in Miami


def registered_until(miles: float, expires_on: date):
    physician = doc(miles, registered_in=[])
    physician.registrations.append(Registration(state="FL", number="FL-7", expires_on=expires_on))
    return physician


@time_machine.travel(EVENING, tick=False)
def test_expiry_and_age_go_by_the_patients_own_date(db, world):
    """At 20:00 in Miami it is already the 26th in UTC: a registration valid through the 25th
    still counts, and a patient whose 18th birthday is the 26th is still 17."""
    lead = new_lead(world, date_of_birth=date(2008, 11, 26), age_confirmed=False)
    through_today = registered_until(1, date(2026, 11, 25))
    lapsed = registered_until(2, date(2026, 11, 24))
    result = check_both(db, lead, EVENING)
    assert ids(result, "in_person") == [through_today.id]
    assert reasons(result) == {lapsed.id: "registration expired 2026-11-24"}
    age = next(c for c in result["eligibility"]["checks"] if c["rule"] == "age")
    assert age["status"] == "fail" and "the patient is 17" in age["text"]

    next_morning = EVENING + timedelta(hours=13)  # 09:00 on the 26th in Miami
    result = check_both(db, lead, next_morning)
    assert through_today.id not in ids(result, "in_person")
    assert reasons(result)[through_today.id] == "registration expired 2026-11-25"
    assert next(c for c in result["eligibility"]["checks"] if c["rule"] == "age")["status"] == "pass"


@time_machine.travel(EVENING, tick=False)
def test_the_patients_date_comes_from_their_zone_then_zip_then_state_then_the_business_zone(app):
    late_in_hawaii = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)  # 23:00 on the 25th in Honolulu, 04:00 on the 26th in NY
    with app.app_context():
        for patient, day in [
            (Patient(timezone="Pacific/Honolulu", zip="33101", state="FL"), 25),  # the geocoded zone first
            (Patient(zip="96813", state="HI"), 25),
            (Patient(state="HI"), 25),
            (Patient(), 26),  # nothing known: BUSINESS_TIMEZONE (New York)
        ]:
            assert matching.patient_today(patient, late_in_hawaii) == date(2026, 11, day)


def test_haversine_and_bounding_box():
    assert haversine_miles(*ORIGIN, *north(10)) == pytest.approx(10, rel=1e-9)
    nyc, la = (40.7128, -74.0060), (34.0522, -118.2437)
    assert haversine_miles(*nyc, *la) == pytest.approx(2445, rel=0.01)
    lat0, lat1, lon0, lon1 = matching.bounding_box(*nyc, 25)
    for bearing in range(0, 360, 15):
        # Points at 24.99 miles in every direction lie inside the box.
        d = 24.99 / EARTH_RADIUS_MILES
        b = math.radians(bearing)
        p1 = math.radians(nyc[0])
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
        l2 = math.radians(nyc[1]) + math.atan2(
            math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
        )
        assert lat0 <= math.degrees(p2) <= lat1 and lon0 <= math.degrees(l2) <= lon1


# --------------------------------------------------------------------------- index == brute force

physician_strategy = st.fixed_dictionaries(
    {
        "dlat": st.floats(-4, 4),
        "dlon": st.floats(-4, 4),
        "cluster": st.booleans(),  # many physicians close together: ties and small rings
        "located": st.integers(0, 9),
        "priority": st.integers(1, 3),
        "accepting": st.integers(0, 9),
        "active": st.integers(0, 15),
        "in_person": st.integers(0, 5),
        "telehealth": st.booleans(),
        "capacity": st.integers(0, 3),
        "bookings": st.integers(0, 3),
        "registration": st.sampled_from(["FL", "FL", "FL", "expired", "GA", "none"]),
        "conditions": st.sampled_from(["all", "all", "dystonia", "other"]),
    }
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(physician_strategy, min_size=0, max_size=45),
    located_patient=st.integers(0, 5),
    state=st.sampled_from(["FL", "FL", "GA"]),
)
def test_indexed_matching_equals_brute_force(db, world, specs, located_patient, state):
    """Random directories around the patient: the ring search over the spatial index returns
    exactly what a scan of every physician returns (candidates, order, exclusions, radius)."""
    try:
        lead = new_lead(
            world,
            state=state,
            **({} if located_patient else {"latitude": None, "longitude": None, "geocode_precision": None}),
        )
        booker = new_lead(world)
        for s in specs:
            scale = 0.01 if s["cluster"] else 1.0
            located = s["located"] > 0
            regs = {"FL": ["FL"], "GA": ["GA"], "none": [], "expired": []}[s["registration"]]
            p = PhysicianFactory(
                latitude=ORIGIN[0] + s["dlat"] * scale if located else None,
                longitude=ORIGIN[1] + s["dlon"] * scale if located else None,
                priority=s["priority"],
                accepting_new=s["accepting"] > 0,
                active=s["active"] > 0,
                offers_in_person=s["in_person"] > 0,
                offers_telehealth=s["telehealth"],
                weekly_capacity=s["capacity"],
                registered_in=regs,
                conditions={"all": [], "dystonia": [world["dystonia"]], "other": [world["other"]]}[s["conditions"]],
            )
            if s["registration"] == "expired":
                p.registrations.append(Registration(state=state, number="X", expires_on=date(2026, 1, 31)))
            book(booker, p, n=s["bookings"])
        check_both(db, lead)
    finally:
        db.session.rollback()


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(-70, 70),
    planar=st.floats(0.001, 5),
    bearing=st.floats(0, 2 * math.pi),
    fraction=st.floats(0, 1),
)
def test_covered_miles_is_a_lower_bound(lat, planar, bearing, fraction):
    """Every point within covered_miles(lat, D) of the origin lies at a planar (degree) distance
    below D: what PostgreSQL's nearest-neighbour reads rely on to know they are complete."""
    r = matching.covered_miles(lat, planar)
    d = r * fraction / EARTH_RADIUS_MILES  # a point at a distance up to r, in any direction
    p1 = math.radians(lat)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
    dl = math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    assert math.hypot(math.degrees(p2) - lat, math.degrees(dl)) < planar
    if abs(lat) + planar < 89:  # and it is not uselessly small: about D cos(lat)
        assert r >= 0.95 * math.radians(planar) * math.cos(math.radians(abs(lat) + planar)) * EARTH_RADIUS_MILES


def test_indexed_matching_equals_brute_force_in_small_rounds(db, world, monkeypatch):
    """PostgreSQL reads nearest neighbours in rounds; with tiny rounds every match takes many of
    them (the completeness bound, skipping rows already read, the telehealth fallback)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the nearest-neighbour rounds are PostgreSQL's (SQLite walks R*Tree rings)")
    monkeypatch.setattr(matching, "NEAR_K", 2)
    monkeypatch.setattr(matching, "TELE_K", 1)
    rounds = []
    real = matching.match_knn
    monkeypatch.setattr(matching, "match_knn", lambda *args: rounds.append(real(*args)) or rounds[-1])
    test_indexed_matching_equals_brute_force(db=db, world=world)
    assert rounds and max(o.queries for o in rounds) >= 3
