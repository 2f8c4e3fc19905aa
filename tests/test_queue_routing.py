"""Get next lead (atomic, never the same lead twice), auto-assignment, manual (re)assignment."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from crm.extensions import db as _db
from crm.models import Lead, LeadEvent, User
from crm.models.enums import EventKind, LeadStatus
from crm.services import routing, settings
from crm.services.calling_window import make_window
from crm.services.routing import AssignmentError, auto_assign, auto_assign_sweep, claim_next
from tests.factories import LeadFactory, UserFactory
from tests.test_queue_helpers import form_post, make_lead

S = LeadStatus


def test_get_next_assigns_the_most_urgent_and_opens_it(client, auth, db, specialist):
    now = datetime.now(UTC)
    make_lead(db, created_at=now - timedelta(minutes=5))
    oldest = make_lead(db, created_at=now - timedelta(hours=2))
    make_lead(db, status=S.BOOKED, created_at=now - timedelta(days=2))  # booked leads are not "next"
    auth.as_user(specialist)
    resp = client.post("/queue/next")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/leads/{oldest.id}")
    db.session.expire_all()
    assert oldest.assignee_id == specialist.id and oldest.assigned_at is not None
    event = db.session.scalar(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.ASSIGNED))
    assert event.lead_id == oldest.id and event.data == {"to": specialist.id, "by": "get_next"}
    assert "is yours now" in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_get_next_with_an_empty_pool(client, auth, specialist):
    auth.as_user(specialist)
    resp = client.post("/queue/next", follow_redirects=True)
    assert resp.status_code == 200 and "No unassigned lead is waiting" in resp.get_data(as_text=True)
    resp = client.post("/queue/next", headers={"Accept": "application/json"})
    assert resp.status_code == 404 and resp.json == {"error": "No unassigned lead is waiting."}


def test_get_next_points_to_booked_leads_left_without_an_owner(client, auth, db, specialist):
    """Unassigned lists a booked lead whose owner left; Get next does not hand it out, and says
    so instead of "nothing is waiting"."""
    booked = make_lead(db, status=S.BOOKED)
    auth.as_user(specialist)
    resp = client.post("/queue/next")
    assert resp.headers["Location"].endswith("/queue?view=unassigned")
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "1 booked lead has no owner" in html and f"/leads/{booked.id}" in html


WINDOW = make_window()


def _claim_in_threads(app, user_ids: list[int]) -> list[int | None]:
    barrier = threading.Barrier(len(user_ids))
    results: list[int | None] = [None] * len(user_ids)
    errors: list[BaseException] = []

    def work(i: int, uid: int) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=30)
                user = _db.session.get(User, uid)  # after the barrier: no pooled connection held while waiting
                for _ in range(20):  # SQLite: a busy database is retried, never double-assigned
                    try:
                        lead = claim_next(user, window=WINDOW)  # as the button does
                        results[i] = lead.id if lead else None
                        _db.session.commit()
                        break
                    except sa.exc.OperationalError:
                        _db.session.rollback()
                _db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, uid)) for i, uid in enumerate(user_ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_two_specialists_pressing_at_once_get_two_different_leads(app, db):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("FOR UPDATE SKIP LOCKED is the PostgreSQL path (CRM_TEST_DB=postgresql+psycopg://...)")
    a, b = UserFactory(), UserFactory()
    for _ in range(2):
        make_lead(db, commit=False)
    db.session.commit()
    got = _claim_in_threads(app, [a.id, b.id])
    assert None not in got and len(set(got)) == 2


def test_fifty_claims_over_ten_leads_never_duplicate(app, db):
    users = [UserFactory() for _ in range(50)]
    leads = [make_lead(db, commit=False) for _ in range(10)]
    db.session.commit()
    got = _claim_in_threads(app, [u.id for u in users])
    claimed = [x for x in got if x is not None]
    assert sorted(claimed) == sorted(lead.id for lead in leads)  # each lead exactly once
    db.session.expire_all()
    owners = db.session.execute(sa.select(Lead.id, Lead.assignee_id)).all()
    assert all(owner is not None for _, owner in owners)
    assigned_events = db.session.scalar(
        sa.select(sa.func.count()).select_from(LeadEvent).where(LeadEvent.kind == EventKind.ASSIGNED)
    )
    assert assigned_events == 10


@pytest.fixture
def on_shift(db):
    def make(**kw):
        kw.setdefault("on_shift", True)
        return UserFactory(**kw)

    return make


def test_auto_assign_round_robin_language_capacity(app, db, on_shift):
    app.config["AUTO_ASSIGN"] = True
    try:
        ann = on_shift(name="Ann", languages=["en"])
        bob = on_shift(name="Bob", languages=["en", "es"])
        UserFactory(name="Off shift", on_shift=False)
        UserFactory(name="Inactive", on_shift=True, active=False)
        db.session.commit()
        now = datetime.now(UTC)
        first = make_lead(db, language="en")
        assert auto_assign(first, now=now) in (ann, bob)
        second = make_lead(db, language="en")
        assert auto_assign(second, now=now + timedelta(seconds=1)) not in (None, first.assignee)  # round robin
        spanish = make_lead(db, language="es")
        assert auto_assign(spanish, now=now + timedelta(seconds=2)) == bob  # shares the patient's language
        ann.capacity = 1  # Ann now has one open lead: full
        bob.capacity = 0
        db.session.commit()
        assert auto_assign(make_lead(db), now=now) is None  # nobody under capacity: waits in Unassigned
        event = db.session.scalar(sa.select(LeadEvent).where(LeadEvent.lead_id == spanish.id))
        assert event.kind == EventKind.ASSIGNED and event.actor_id is None and event.data["by"] == "auto"
    finally:
        app.config["AUTO_ASSIGN"] = False


def test_auto_assign_off_by_setting_or_config(app, db, on_shift, admin):
    on_shift()
    lead = make_lead(db)
    assert auto_assign(lead) is None  # TestConfig: AUTO_ASSIGN=False
    settings.set_setting(settings.AUTO_ASSIGN, True, actor=admin)
    db.session.commit()
    assert auto_assign(lead) is not None  # the admin setting wins over the config
    settings.set_setting(settings.AUTO_ASSIGN, False, actor=admin)
    assert settings.auto_assign_enabled({"AUTO_ASSIGN": True}) is False


def test_auto_assign_sweep_hands_out_waiting_leads(app, db, on_shift, admin):
    settings.set_setting(settings.AUTO_ASSIGN, True, actor=admin)
    on_shift(capacity=2)
    on_shift(capacity=1)
    for _ in range(5):
        make_lead(db, commit=False)
    db.session.commit()
    assert auto_assign_sweep(datetime.now(UTC)) == 3  # then everyone is full
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).where(Lead.assignee_id.is_(None))) == 2


def test_one_sweep_deals_round_robin_not_to_the_lowest_id(app, db, on_shift, admin):
    """Every assignment in one sweep used to carry the same time, so the tie-break (lowest id)
    gave the first specialist lead after lead."""
    settings.set_setting(settings.AUTO_ASSIGN, True, actor=admin)
    team = [on_shift(capacity=10) for _ in range(3)]
    for _ in range(6):
        make_lead(db, commit=False)
    db.session.commit()
    assert auto_assign_sweep(datetime.now(UTC)) == 6
    db.session.commit()
    dealt = dict(db.session.execute(sa.select(Lead.assignee_id, sa.func.count()).group_by(Lead.assignee_id)).all())
    assert dealt == {user.id: 2 for user in team}


def test_two_assigners_at_once_never_push_a_specialist_past_capacity(app, db, on_shift, admin, monkeypatch):
    """The enrich_new and auto_assign jobs (two scheduler threads) route at the same moment, and
    both count Kim's open leads before either has committed: only one of them may give her a
    lead. Without the advisory lock both counted 0 of 1 and she ended with 2."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time; the lock is PostgreSQL's (CRM_TEST_DB=postgresql+psycopg://...)")
    settings.set_setting(settings.AUTO_ASSIGN, True, actor=admin)
    kim = on_shift(name="Kim", capacity=1)
    lead_ids = [make_lead(db, commit=False) for _ in range(2)]
    db.session.commit()
    lead_ids = [lead.id for lead in lead_ids]
    kim_id = kim.id
    barrier = threading.Barrier(2)
    counted = routing.open_counts

    def count_then_meet(user_ids):
        counts = counted(user_ids)
        # Both counts taken before either assigns (the race); with the lock the second assigner
        # waits for the first to commit, so it never gets here in time and goes on alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=3)
        return counts

    monkeypatch.setattr(routing, "open_counts", count_then_meet)
    errors: list[BaseException] = []

    def assign(lead_id: int) -> None:
        try:
            with app.app_context():
                routing.auto_assign(_db.session.get(Lead, lead_id))
                _db.session.commit()
                _db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=assign, args=(lead_id,)) for lead_id in lead_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).where(Lead.assignee_id == kim_id)) == 1


def test_a_lead_given_back_is_not_dealt_straight_back_to_the_same_specialist(client, auth, app, db, on_shift, admin):
    """Maria unassigns a lead she cannot take; the next sweep gives it to someone else, never to her
    (before, round robin handed it back within a minute), and her Get next prefers other leads."""
    settings.set_setting(settings.AUTO_ASSIGN, True, actor=admin)
    maria = on_shift(name="Maria", capacity=10)
    lead = make_lead(db, assignee=maria, created_at=datetime.now(UTC) - timedelta(hours=3))
    auth.as_user(maria)
    assert form_post(client, f"/leads/{lead.id}/unassign", lead).status_code == 302
    db.session.expire_all()
    assert auto_assign_sweep(datetime.now(UTC)) == 0  # only Maria on shift: it waits in Unassigned
    db.session.commit()
    assert db.session.get(Lead, lead.id).assignee_id is None
    james = on_shift(name="James", capacity=10)
    db.session.commit()
    assert auto_assign_sweep(datetime.now(UTC)) == 1
    db.session.commit()
    assert db.session.get(Lead, lead.id).assignee_id == james.id
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert 'Back to the pool</strong> <span class="text-muted">from Maria</span>' in page
    assert "returned to the pool" not in page

    # Get next: the lead Maria gave back comes after a newer one, but is still dealt when alone.
    settings.set_setting(settings.AUTO_ASSIGN, False, actor=admin)
    routing.unassign(db.session.get(Lead, lead.id), actor=admin)  # back in the pool, last given back by James
    routing.assign(db.session.get(Lead, lead.id), maria, actor=admin)
    routing.unassign(db.session.get(Lead, lead.id), actor=maria)
    newer = make_lead(db, created_at=datetime.now(UTC) - timedelta(minutes=5))
    assert claim_next(maria).id == newer.id
    assert claim_next(maria).id == lead.id
    db.session.commit()


def test_a_returning_patients_new_lead_goes_to_whoever_has_their_open_lead(app, db, on_shift, admin):
    """Pat's second request (another condition) went to a second specialist, so two people would
    call one patient: it goes to the owner of the open lead, even past capacity; round robin when
    that owner is off shift or has given this lead back."""
    settings.set_setting(settings.AUTO_ASSIGN, True, actor=admin)
    ann = on_shift(name="Ann", capacity=1)
    bob = on_shift(name="Bob", capacity=5)
    first = make_lead(db, assignee=ann)
    second = LeadFactory(patient=first.patient, status=S.NEW)
    db.session.commit()
    assert auto_assign(second) == ann  # Ann is full, but it is her patient
    event = db.session.scalar(
        sa.select(LeadEvent).where(LeadEvent.lead_id == second.id, LeadEvent.kind == EventKind.ASSIGNED)
    )
    assert event.data == {"to": ann.id, "by": "patient_owner"}
    routing.unassign(second, actor=ann)
    assert auto_assign(second) == bob  # Ann gave it back: round robin, not Ann again
    # Everyone full and an older lead waiting that nobody can take: the sweep still reaches a
    # returning patient's lead further down and gives it to their owner (it used to stop at the first).
    bob.capacity = 1
    waiting = make_lead(db, created_at=datetime.now(UTC) - timedelta(hours=5))
    again = LeadFactory(patient=first.patient, status=S.NEW, created_at=datetime.now(UTC) - timedelta(hours=1))
    db.session.commit()
    assert auto_assign_sweep(datetime.now(UTC)) == 1
    db.session.commit()
    assert (waiting.assignee_id, again.assignee_id) == (None, bob.id)  # Bob holds the latest of them
    third = LeadFactory(patient=first.patient, status=S.NEW)
    ann.on_shift = False
    db.session.commit()
    assert auto_assign(third) == bob  # Ann is off shift: Bob, who holds the patient's other open lead


def test_assign_rules(db, specialist, admin):
    other = UserFactory(name="Other")
    lead = make_lead(db)
    routing.assign(lead, specialist, actor=specialist)
    with pytest.raises(AssignmentError, match="already assigned to Sam Specialist"):
        routing.assign(lead, other, actor=other)
    with pytest.raises(AssignmentError, match="Only an admin can assign a lead to someone else"):
        routing.assign(lead, other, actor=specialist)
    routing.assign(lead, other, actor=admin)
    with pytest.raises(AssignmentError, match="Only the assignee or an admin"):
        routing.unassign(lead, actor=specialist)
    routing.unassign(lead, actor=other)
    with pytest.raises(AssignmentError, match="not assigned"):
        routing.unassign(lead, actor=admin)
    other.active = False
    with pytest.raises(AssignmentError, match="deactivated"):
        routing.assign(lead, other, actor=admin)


def test_assign_to_me_and_unassign_routes(client, auth, db, specialist):
    lead = make_lead(db)
    auth.as_user(specialist)
    assert form_post(client, f"/leads/{lead.id}/assign", lead).status_code == 302
    db.session.expire_all()
    assert lead.assignee_id == specialist.id
    resp = form_post(client, f"/leads/{lead.id}/unassign", lead)
    assert resp.status_code == 302
    db.session.expire_all()
    assert lead.assignee_id is None
    # Assigning to a user who does not exist: a clear message, not a 500.
    resp = form_post(client, f"/leads/{lead.id}/assign", lead, user_id="99999")
    assert resp.status_code == 422 and "That user does not exist." in resp.get_data(as_text=True)
    resp = form_post(client, f"/leads/{lead.id}/assign", lead, user_id="not a number")
    assert resp.status_code in (302, 422)


def test_admin_routing_page_turns_auto_assignment_off_and_on(client, auth, db, admin, specialist):
    auth.as_user(admin)
    page = client.get("/admin/routing").get_data(as_text=True)
    assert "Sam Specialist" in page and "sla_sweep" in page
    assert client.post("/admin/routing", data={"auto_assign": "off"}).status_code == 302
    assert settings.get_setting(settings.AUTO_ASSIGN) is False
    assert client.post("/admin/routing", data={"auto_assign": "default"}).status_code == 302
    assert settings.get_setting(settings.AUTO_ASSIGN) is None
    resp = client.post("/admin/routing", data={"auto_assign": "sometimes"})
    assert resp.status_code == 200 and "Not a valid choice" in resp.get_data(as_text=True)
    auth.logout()
    auth.as_user(specialist)
    assert client.get("/admin/routing").status_code == 403


def test_the_jobs_table_does_not_call_a_quiet_job_that_found_nothing_to_do_never_run(client, auth, db, admin):
    from crm import jobs

    auth.as_user(admin)
    page = client.get("/admin/routing").get_data(as_text=True)
    enrich_row = next(row for row in page.split("<tr>") if "enrich_new" in row)
    assert "no work yet" in enrich_row and "never" not in enrich_row
    assert "Runs that find nothing to do are not listed." in enrich_row
    outbox_row = next(row for row in page.split("<tr>") if ">outbox<" in row)
    assert "never" in outbox_row and "not listed" not in outbox_row
    jobs.run_job(jobs.JOBS_BY_ID["outbox"])  # an ordinary job records every run
    page = client.get("/admin/routing").get_data(as_text=True)
    assert "never" not in next(row for row in page.split("<tr>") if ">outbox<" in row)


def test_get_next_hands_out_the_most_urgent_lead_that_can_be_called_now(client, auth, db, specialist):
    ten_in_new_york = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)  # 07:00 in Los Angeles
    with time_machine.travel(ten_in_new_york, tick=False):
        hour = timedelta(hours=1)
        west = make_lead(db, timezone="America/Los_Angeles", created_at=ten_in_new_york - 3 * hour)
        west_by_email = make_lead(
            db, timezone="America/Los_Angeles", preferred_contact_method="email", created_at=ten_in_new_york - 2 * hour
        )
        east = make_lead(db, timezone="America/New_York", created_at=ten_in_new_york - hour)
        auth.as_user(specialist)
        got = [client.post("/queue/next").headers["Location"] for _ in range(3)]
    # West's patient cannot be rung before 9: email first, then New York, then west (nobody else left).
    assert got == [f"/leads/{west_by_email.id}", f"/leads/{east.id}", f"/leads/{west.id}"]


def test_get_next_and_the_queue_take_a_patient_not_yet_located_by_their_zip(client, auth, db, specialist):
    """Before geocoding gives a zone, the ZIP's zone decides, as it does for the call form."""
    ten_in_new_york = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)  # 07:00 in Los Angeles
    with time_machine.travel(ten_in_new_york, tick=False):
        west = make_lead(db, timezone=None, zip="90001", state=None, created_at=ten_in_new_york - timedelta(hours=2))
        east = make_lead(db, timezone="America/New_York", created_at=ten_in_new_york - timedelta(hours=1))
        auth.as_user(specialist)
        page = client.get("/queue?view=unassigned").get_data(as_text=True)
        west_row = next(row for row in page.split("<tr") if f"/leads/{west.id}" in row)
        assert "07:00 AM PST" in west_row and "calls 9 AM" in west_row  # its local time, and when calls open
        assert client.post("/queue/next").headers["Location"] == f"/leads/{east.id}"


def test_without_a_window_or_anyone_reachable_get_next_goes_by_urgency_alone(db, specialist):
    night = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)  # 01:00 in New York, 22:00 in Los Angeles
    west = make_lead(db, timezone="America/Los_Angeles", created_at=night - timedelta(hours=3))
    later_west = make_lead(db, timezone="America/Los_Angeles", created_at=night - timedelta(hours=2))
    make_lead(db, timezone="America/New_York", created_at=night - timedelta(hours=1))
    assert claim_next(specialist, now=night, window=WINDOW).id == west.id  # nobody reachable: the oldest
    morning = night + timedelta(hours=9)  # 10:00 in New York, 07:00 in Los Angeles
    assert claim_next(UserFactory(), now=morning).id == later_west.id  # no window: urgency alone


def test_the_jobs_table_gives_each_interval_in_its_own_unit(client, auth, db, admin):
    auth.as_user(admin)
    page = client.get("/admin/routing").get_data(as_text=True)

    def every(job_id):
        row = next(row for row in page.split("<tr>") if f">{job_id}<" in row)
        return row.split('<td class="text-nowrap">')[1].split("</td>")[0]

    assert [every(j) for j in ("enrich_new", "outbox", "auto_assign", "registration_expiry", "housekeeping")] == [
        "5 s",
        "30 s",
        "1 min",
        "6 h",
        "1 h",
    ]
