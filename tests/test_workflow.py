"""The transition table (SPEC 4): every allowed move, refusals with a clear message, events."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from crm.models import LeadEvent
from crm.models.enums import EventKind, LeadStatus, LostReason
from crm.services import workflow
from crm.services.workflow import TRANSITIONS, TransitionError, change_status, check_transition
from tests.test_queue_helpers import WED, form_post, make_lead

S = LeadStatus


@pytest.mark.parametrize(("frm", "to"), sorted(TRANSITIONS, key=lambda t: (t[0].value, t[1].value)))
def test_every_allowed_transition_is_applied_and_recorded(db, admin, frm, to):
    lead = make_lead(db, status=frm)
    reason = LostReason.NOT_INTERESTED if to == S.LOST else None
    by_appointment = TRANSITIONS[(frm, to)].by_appointment  # booking's own moves
    change_status(lead, to, actor=admin, reason=reason, note="because", now=WED, by_appointment=by_appointment)
    db.session.commit()
    assert lead.status == to
    event = db.session.scalar(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.STATUS_CHANGED))
    assert event.data["from"] == frm.value and event.data["to"] == to.value and event.actor_id == admin.id
    if to == S.LOST:
        assert lead.lost_reason == LostReason.NOT_INTERESTED and lead.closed_at == WED
    if frm == S.LOST:
        assert lead.lost_reason is None and lead.closed_at is None


def test_the_table_covers_spec_4():
    open_ = [S.NEW, S.ATTEMPTING, S.CONTACTED, S.BOOKED]
    assert all((s, S.LOST) in TRANSITIONS for s in open_)  # lost from any open status
    assert (S.BOOKED, S.CONTACTED) in TRANSITIONS  # appointment cancelled
    assert all(TRANSITIONS[(S.LOST, s)].admin_only for s in (S.NEW, S.ATTEMPTING, S.CONTACTED))
    assert not any(frm == S.COMPLETED for frm, _ in TRANSITIONS)


@pytest.mark.parametrize(
    ("frm", "to", "message"),
    [
        (S.NEW, S.BOOKED, "A lead that is new cannot move to booked. From new it can go to: attempting, lost."),
        (S.NEW, S.COMPLETED, "A lead that is new cannot move to completed"),
        (S.ATTEMPTING, S.NEW, "A lead that is attempting cannot move to new."),  # not "A attempting lead"
        (S.ATTEMPTING, S.NEW, "cannot move to new"),
        (S.CONTACTED, S.COMPLETED, "cannot move to completed"),
        (S.COMPLETED, S.CONTACTED, "A completed lead is closed"),
        (S.LOST, S.BOOKED, "A lost lead can only be reopened"),
        (S.NEW, S.NEW, "already new"),
    ],
)
def test_refused_transitions_say_why(frm, to, message):
    with pytest.raises(TransitionError) as err:
        check_transition(frm, to, is_admin=True, reason="ok")
    assert message in str(err.value)


def test_lost_needs_a_reason_and_reopen_needs_an_admin(db, specialist):
    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    with pytest.raises(TransitionError, match="Choose why the lead is lost"):
        change_status(lead, S.LOST, actor=specialist)
    with pytest.raises(TransitionError, match="Unknown status"):
        change_status(lead, "archived", actor=specialist)
    change_status(lead, S.LOST, actor=specialist, reason="price")
    with pytest.raises(TransitionError, match="Only an admin can reopen"):
        change_status(lead, S.NEW, actor=specialist)
    assert [t for t, _ in workflow.allowed_targets(lead, specialist)] == []


def test_closing_a_lead_closes_its_follow_ups(db, specialist):
    from crm.services import followups

    lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)
    change_status(lead, S.LOST, actor=specialist, reason="spam", now=WED)
    db.session.commit()
    assert lead.next_follow_up_at is None and all(fu.done_at is not None for fu in lead.follow_ups)


def test_log_call_moves_new_to_attempting_then_contacted(db, specialist):
    lead = make_lead(db, assignee=specialist)
    workflow.log_call(lead, "no_answer", actor=specialist, now=WED)
    assert lead.status == S.ATTEMPTING and lead.attempts == 1 and lead.first_contact_at == WED
    workflow.log_call(lead, "reached", actor=specialist, note="Wants Tuesday", now=WED)
    db.session.commit()
    assert lead.status == S.CONTACTED and lead.attempts == 2
    kinds = db.session.scalars(sa.select(LeadEvent.kind).order_by(LeadEvent.id)).all()
    assert kinds.count(EventKind.CALL_ATTEMPT) == 2 and kinds.count(EventKind.STATUS_CHANGED) == 2
    with pytest.raises(TransitionError, match="Choose the call's outcome"):
        workflow.log_call(lead, "hung up", actor=specialist)


def test_status_route_changes_and_refuses_with_a_message(client, auth, db, specialist):
    auth.as_user(specialist)
    lead = make_lead(db, status=S.CONTACTED, assignee=specialist)
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="lost", lost_reason="", note="")
    assert resp.status_code == 422
    assert "Choose why the lead is lost." in resp.get_data(as_text=True)
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="completed", lost_reason="")
    assert resp.status_code == 422
    assert "A lead that is contacted cannot move to completed" in resp.get_data(as_text=True)
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="lost", lost_reason="chose_elsewhere", note="x")
    assert resp.status_code == 302
    db.session.expire_all()
    assert lead.status == S.LOST and lead.lost_reason == LostReason.CHOSE_ELSEWHERE
    # A specialist cannot reopen; the form offers nothing and the route refuses.
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="new", lost_reason="")
    assert resp.status_code == 422 and "Only an admin can reopen a lost lead." in resp.get_data(as_text=True)


def test_admin_reopens_a_lost_lead(client, auth, db, admin):
    auth.as_user(admin)
    lead = make_lead(db, status=S.LOST)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Reopen as new" in page
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="attempting", lost_reason="")
    assert resp.status_code == 302
    db.session.expire_all()
    assert lead.status == S.ATTEMPTING


@pytest.mark.parametrize(("frm", "to"), [(S.CONTACTED, S.BOOKED), (S.BOOKED, S.COMPLETED), (S.BOOKED, S.CONTACTED)])
def test_booked_and_completed_follow_the_appointment_not_a_hand(db, admin, frm, to):
    lead = make_lead(db, status=frm)
    with pytest.raises(TransitionError, match="when an appointment is booked"):
        change_status(lead, to, actor=admin, now=WED)
    assert to not in [t for t, _ in workflow.allowed_targets(lead, admin)]


def test_the_status_form_cannot_book_or_complete(client, auth, db, admin):
    auth.as_user(admin)
    lead = make_lead(db, status=S.CONTACTED)
    resp = form_post(client, f"/leads/{lead.id}/status", lead, to="booked", lost_reason="")
    assert resp.status_code == 422 and "when an appointment is booked" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert lead.status == S.CONTACTED


def test_an_admin_reopen_is_not_closed_again_by_the_unreachable_sweep(db, admin):
    from datetime import timedelta

    from crm.services.sla import unreachable_sweep

    lead = make_lead(db, status=S.ATTEMPTING)
    lead.attempts, lead.first_contact_at = 6, WED - timedelta(days=11)
    db.session.commit()
    assert unreachable_sweep(WED, attempts=6, days=10) == 1 and lead.status == S.LOST
    change_status(lead, S.ATTEMPTING, actor=admin, now=WED)
    db.session.commit()
    assert unreachable_sweep(WED + timedelta(minutes=15), attempts=6, days=10) == 0
    assert lead.status == S.ATTEMPTING and lead.attempts == 0
    reopened = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.STATUS_CHANGED)).all()[-1]
    assert reopened.data["attempts_before"] == 6


def test_after_a_reopen_the_unreachable_days_count_from_the_reopening(db, admin):
    """Six quick attempts the day after a reopen are not "six over ten days": the lead's first
    contact (weeks before) does not start the window again."""
    from datetime import timedelta

    from crm.services.sla import unreachable_sweep

    lead = make_lead(db, status=S.LOST)
    lead.lost_reason, lead.first_contact_at = "unreachable", WED - timedelta(days=30)
    db.session.commit()
    change_status(lead, S.ATTEMPTING, actor=admin, now=WED)
    lead.attempts = 6  # six calls logged the next day
    db.session.commit()
    assert unreachable_sweep(WED + timedelta(days=1), attempts=6, days=10) == 0
    assert lead.status == S.ATTEMPTING
    assert unreachable_sweep(WED + timedelta(days=10, minutes=1), attempts=6, days=10) == 1
    assert lead.status == S.LOST


def test_moving_a_new_lead_on_by_hand_is_its_first_contact(db, specialist):
    """Without a logged call the SLA clock used to stop while first_contact_at stayed empty, so
    speed-to-lead counted the lead as never contacted."""
    from datetime import timedelta

    lead = make_lead(db, status=S.NEW, assignee=specialist)
    change_status(lead, S.ATTEMPTING, actor=specialist, now=WED)
    assert lead.first_contact_at == WED
    change_status(lead, S.CONTACTED, actor=specialist, now=WED + timedelta(hours=1))
    assert lead.first_contact_at == WED  # the first one stays
