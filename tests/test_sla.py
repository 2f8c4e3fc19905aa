"""Speed-to-lead SLA (business hours), escalation once, stale leads back to the pool, unreachable close."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from crm.models import Lead, LeadEvent, Notification
from crm.models.enums import EventKind, LeadStatus, LostReason
from crm.services import followups
from crm.services.sla import SlaConfig, sla_deadline, sla_state, sla_sweep, stale_sweep, unreachable_sweep
from tests.factories import UserFactory
from tests.test_queue_helpers import WED, make_lead

S = LeadStatus
CFG = SlaConfig()  # 15 minutes, 08:00-20:00 Mon-Fri, America/New_York


@pytest.mark.parametrize(
    ("created", "due"),
    [
        (WED, WED + timedelta(minutes=15)),  # Wednesday 09:00 EST
        # Wednesday 19:55 EST -> 5 minutes today, 10 on Thursday from 08:00 -> 08:10 EST.
        (datetime(2026, 11, 19, 0, 55, tzinfo=UTC), datetime(2026, 11, 19, 13, 10, tzinfo=UTC)),
        # Saturday night -> Monday 08:15 EST.
        (datetime(2026, 11, 22, 2, 0, tzinfo=UTC), datetime(2026, 11, 23, 13, 15, tzinfo=UTC)),
        # Friday 23:00 EDT before the DST change -> Monday 08:15 EST (13:15 UTC).
        (datetime(2026, 10, 31, 3, 0, tzinfo=UTC), datetime(2026, 11, 2, 13, 15, tzinfo=UTC)),
    ],
)
def test_sla_deadline_counts_business_time(created, due):
    assert sla_deadline(created, CFG) == due


@pytest.mark.parametrize(
    ("created", "patient_tz", "due"),
    [
        # Wednesday 09:00 EST, an Eastern patient: both open, 09:15.
        (WED, "America/New_York", WED + timedelta(minutes=15)),
        # Wednesday 19:55 EST: 5 minutes today, then Thursday from 09:00 (callable), not 08:00 -> 09:10 EST.
        (datetime(2026, 11, 19, 0, 55, tzinfo=UTC), "America/New_York", datetime(2026, 11, 19, 14, 10, tzinfo=UTC)),
        # A Californian overnight: the desk opens 08:00 EST, but 09:00 PST is 12:00 EST -> 12:15 EST.
        (datetime(2026, 11, 18, 8, 0, tzinfo=UTC), "America/Los_Angeles", datetime(2026, 11, 18, 17, 15, tzinfo=UTC)),
        # A Californian at 16:50 PST (19:50 EST): 10 minutes before the desk closes, 5 on Thursday from 09:00 PST.
        (datetime(2026, 11, 19, 0, 50, tzinfo=UTC), "America/Los_Angeles", datetime(2026, 11, 19, 17, 5, tzinfo=UTC)),
        # Hawaii: 09:00 HST is 14:00 EST.
        (datetime(2026, 11, 18, 12, 0, tzinfo=UTC), "Pacific/Honolulu", datetime(2026, 11, 18, 19, 15, tzinfo=UTC)),
        # Guam (UTC+10): 09:00-20:00 there is 18:00-05:00 EST, so the only shared time is 18:00-20:00 EST
        # on the desk's weekdays when Guam is not on its Sunday.
        (datetime(2026, 11, 18, 14, 0, tzinfo=UTC), "Pacific/Guam", datetime(2026, 11, 18, 23, 15, tzinfo=UTC)),
    ],
)
def test_the_clock_runs_while_the_desk_is_open_and_the_patient_may_be_called(created, patient_tz, due):
    assert sla_deadline(created, CFG, patient_tz) == due


def test_windows_that_never_meet_fall_back_to_business_hours():
    night = SlaConfig(calling_hours="21:00-23:00")  # the desk closes at 20:00 in the same zone
    assert sla_deadline(WED, night, "America/New_York") == sla_deadline(WED, night) == WED + timedelta(minutes=15)


def test_sla_state_for_the_queue_row(db):
    lead = make_lead(db, created_at=WED)
    assert sla_state(lead, WED + timedelta(minutes=5), CFG) == {
        "breached": False,
        "due_at": WED + timedelta(minutes=15),
        "minutes": 10,
    }
    assert sla_state(lead, WED + timedelta(minutes=20), CFG)["breached"] is True
    lead.first_contact_at = WED
    assert sla_state(lead, WED + timedelta(minutes=20), CFG) is None


def test_sweep_flags_and_escalates_to_every_admin_once(db, admin):
    second_admin = UserFactory(role="admin")
    UserFactory(role="admin", active=False)
    late = make_lead(db, created_at=WED)
    on_time = make_lead(db, created_at=WED + timedelta(minutes=10))
    contacted = make_lead(db, created_at=WED, status=S.ATTEMPTING)
    contacted.first_contact_at = WED + timedelta(minutes=3)
    db.session.commit()
    now = WED + timedelta(minutes=20)
    assert sla_sweep(now, CFG) == {"breached": 1, "rescheduled": 0, "notified": 2}
    assert sla_sweep(now + timedelta(minutes=1), CFG) == {"breached": 0, "rescheduled": 0, "notified": 0}
    db.session.commit()
    assert late.sla_breached_at == now and late.escalated_at == now and on_time.sla_breached_at is None
    notes = db.session.scalars(sa.select(Notification).order_by(Notification.user_id)).all()
    assert [n.user_id for n in notes] == [admin.id, second_admin.id]
    assert "missed the 15-minute speed-to-lead target by 5m (unassigned)" in notes[0].message
    assert db.session.scalar(sa.select(LeadEvent.kind).where(LeadEvent.lead_id == late.id)) == EventKind.SLA_BREACHED


def test_a_breach_found_within_its_minute_reads_without_a_zero_lateness(client, auth, db, admin):
    make_lead(db, created_at=WED)
    db.session.commit()
    sla_sweep(WED + timedelta(minutes=15, seconds=30), CFG)
    db.session.commit()
    note = db.session.scalar(sa.select(Notification))
    assert note.message.endswith("missed the 15-minute speed-to-lead target (unassigned).")
    auth.as_user(admin)
    page = client.get("/notifications").get_data(as_text=True)
    assert ">Speed-to-lead missed</span>" in page and "Sla escalation" not in page


def test_a_late_escalation_reads_in_hours_and_days_and_names_the_assignee(db, admin, specialist):
    lead = make_lead(db, created_at=WED, assignee=specialist)
    db.session.commit()
    sla_sweep(WED + timedelta(minutes=15 + 125), CFG)
    note = db.session.scalar(sa.select(Notification))
    assert note.message.endswith(f"target by 2h 5m (assigned to {specialist.name}, not contacted yet).")
    assert note.lead_id == lead.id


def test_off_hours_lead_is_rescheduled_not_breached(db, admin):
    sat = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    lead = make_lead(db, created_at=sat)
    assert sla_sweep(sat + timedelta(hours=1), CFG) == {"breached": 0, "rescheduled": 1, "notified": 0}
    db.session.commit()
    db.session.expire_all()
    # Monday: the desk opens at 08:00 EST, the (Eastern) patient may be called from 09:00.
    assert lead.sla_due_at == datetime(2026, 11, 23, 14, 15, tzinfo=UTC) and lead.sla_breached_at is None
    assert sla_sweep(datetime(2026, 11, 23, 14, 10, tzinfo=UTC), CFG)["breached"] == 0
    assert sla_sweep(datetime(2026, 11, 23, 14, 20, tzinfo=UTC), CFG)["breached"] == 1


def test_breached_lead_is_flagged_in_the_queue(client, auth, db, specialist, admin):
    lead = make_lead(db, created_at=datetime.now(UTC) - timedelta(days=3))
    lead.sla_breached_at = datetime.now(UTC)
    db.session.commit()
    auth.as_user(specialist)
    html = client.get("/queue").get_data(as_text=True)
    assert 'class="sla-breached' in html
    assert re.search(r"SLA (\d+d \d+h|\d+h \d+m) over", html)  # 15-min target missed by days, shown readably


def test_untouched_assigned_lead_returns_to_the_pool(db, specialist):
    now = WED
    stale = make_lead(db, status=S.ATTEMPTING, assignee=specialist, created_at=now - timedelta(hours=30))
    stale.assigned_at = now - timedelta(hours=25)
    busy = make_lead(db, status=S.ATTEMPTING, assignee=specialist, created_at=now - timedelta(hours=30))
    busy.assigned_at, busy.last_activity_at = now - timedelta(hours=25), now - timedelta(hours=2)
    planned = make_lead(db, status=S.CONTACTED, assignee=specialist, created_at=now - timedelta(hours=30))
    planned.assigned_at = now - timedelta(hours=25)
    fu = followups.schedule(planned, due_at=now + timedelta(hours=3), kind="email", actor=specialist, now=now)
    planned.last_activity_at = now - timedelta(hours=25)
    db.session.commit()
    assert stale_sweep(now, 24) == 1
    assert stale_sweep(now, 24) == 0  # idempotent
    db.session.commit()
    db.session.expire_all()
    assert stale.assignee_id is None and busy.assignee_id == specialist.id and planned.assignee_id == specialist.id
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.lead_id == stale.id)).all()[-1]
    assert event.kind == EventKind.UNASSIGNED and event.data == {"from": specialist.id, "reason": "untouched for 24 h"}
    assert fu.owner_id == specialist.id


def test_a_note_written_while_the_stale_sweep_runs_keeps_the_lead(db, specialist, monkeypatch):
    """The sweep looks leads up, then claims each: a note committed in between (which keeps the
    version) must still keep the lead with its specialist."""
    from crm.services import sla, workflow

    now = WED
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist, created_at=now - timedelta(hours=30))
    lead.assigned_at = lead.last_activity_at = now - timedelta(hours=25)
    db.session.commit()
    real_get = sla.db.session.get

    def note_first(model, ident, **kw):  # the colleague's note lands between the look-up and the claim
        found = real_get(model, ident, **kw)
        if model is Lead and ident == lead.id:
            workflow.add_note(found, "Spoke to her daughter", actor=specialist, now=now)
        return found

    monkeypatch.setattr(sla.db.session, "get", note_first)
    assert stale_sweep(now, 24) == 0
    monkeypatch.undo()
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).assignee_id == specialist.id


def test_unreachable_after_n_attempts_over_d_days(db, specialist):
    now = WED

    def lead_with(attempts, first_days_ago, status=S.ATTEMPTING):
        lead = make_lead(db, status=status, assignee=specialist, created_at=now - timedelta(days=30), commit=False)
        lead.attempts, lead.first_contact_at = attempts, now - timedelta(days=first_days_ago)
        return lead

    gone = lead_with(6, 11)
    too_few = lead_with(5, 11)
    too_recent = lead_with(6, 5)
    reached = lead_with(8, 12, status=S.CONTACTED)
    db.session.commit()
    followups.schedule(gone, due_at=now + timedelta(hours=1), kind="call", actor=specialist, now=now)
    db.session.commit()
    assert unreachable_sweep(now, 6, 10) == 1
    assert unreachable_sweep(now, 6, 10) == 0
    db.session.commit()
    db.session.expire_all()
    assert gone.status == S.LOST and gone.lost_reason == LostReason.UNREACHABLE and gone.next_follow_up_at is None
    assert {too_few.status, too_recent.status, reached.status} == {S.ATTEMPTING, S.CONTACTED}
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.lead_id == gone.id)).all()[-1]
    assert event.actor_id is None and event.data["reason"] == "unreachable"
    assert event.data["note"] == "6 unanswered attempts over 10+ days"
    # Configurable: 5 attempts over 10 days closes the next one.
    assert unreachable_sweep(now, 5, 10) == 1


def test_the_queue_and_the_sweep_agree_on_a_patient_of_unknown_zone(db, admin):
    """No zone and no ZIP: both follow the calling window in the desk's zone (as calls do), where the
    sweep used to count business hours alone and flag at 08:15 a lead the queue showed due 09:15."""
    created = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # Wednesday 07:00 EST
    lead = make_lead(db, created_at=created, zip=None, timezone=None, state=None)
    db.session.commit()
    due = datetime(2026, 11, 18, 14, 15, tzinfo=UTC)  # 09:15 EST
    assert sla_state(lead, created, CFG)["due_at"] == due
    assert sla_sweep(datetime(2026, 11, 18, 13, 20, tzinfo=UTC), CFG)["breached"] == 0  # 08:20: not late
    assert sla_sweep(due + timedelta(minutes=1), CFG)["breached"] == 1
