"""The mail outbox (crm/services/mailer.py): retries with backoff, a claim two runners respect,
giving up in view of the admins and the lead, and an admin's "Send again"."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from crm.extensions import db as _db
from crm.models import LeadEvent, Notification, OutboxEmail
from crm.models.enums import EventKind, OutboxStatus
from crm.services import mailer
from tests.factories import UserFactory
from tests.test_queue_helpers import WED, make_lead


@pytest.fixture
def smtp(app, monkeypatch):
    """SMTP configured; ``smtp.down`` makes every send fail, ``smtp.sent`` lists what went out."""

    class Smtp:
        down = False
        delay = 0.0
        sent: list[str] = []

        @staticmethod
        def send(msg):
            if Smtp.down:
                raise ConnectionRefusedError("connection refused")
            time.sleep(Smtp.delay)
            Smtp.sent.append(msg.subject)

    Smtp.sent = []
    monkeypatch.setattr(mailer.mail, "send", Smtp.send)
    monkeypatch.setitem(app.config, "MAIL_SERVER", "smtp.example.com")
    monkeypatch.setitem(app.config, "MAIL_SUPPRESS_SEND", False)
    return Smtp


def test_a_short_smtp_outage_delays_the_email_and_loses_nothing(db, smtp):
    """Two minutes of refused connections with the job every 30 s used to use up all five tries:
    each failed try now waits longer (1, 5, 15 min ...) and the email goes out once SMTP is back."""
    mailer.queue_email("p@example.com", "Your visit", "Body", kind="appointment_confirmation")
    db.session.commit()
    smtp.down = True
    # The job's runs over two minutes (a second late each: a run's own time moves on while it works).
    runs = [WED] + [WED + timedelta(seconds=30 * k + 1) for k in range(1, 5)]
    counts = [mailer.send_pending(t) for t in runs]
    assert [c["retry"] for c in counts] == [1, 0, 1, 0, 0]  # tried at 0 s, then not before 60 s, then 6 min
    row = db.session.scalar(sa.select(OutboxEmail))
    assert row.status == OutboxStatus.QUEUED and row.attempts == 2
    assert timedelta(0) <= row.next_attempt_at - (runs[2] + timedelta(minutes=5)) < timedelta(seconds=1)
    assert "ConnectionRefusedError" in row.error
    smtp.down = False
    assert mailer.send_pending(runs[2] + timedelta(minutes=4))["sent"] == 0  # still waiting
    assert mailer.send_pending(runs[2] + timedelta(minutes=5, seconds=1))["sent"] == 1
    db.session.expire_all()
    assert row.status == OutboxStatus.SENT and row.next_attempt_at is None and row.error is None
    assert smtp.sent == ["Your visit"]


def test_after_the_last_try_admins_and_the_lead_are_told_and_an_admin_sends_it_again(app, db, smtp, monkeypatch):
    admin = UserFactory(role="admin")
    UserFactory(role="admin", active=False)
    lead = make_lead(db)
    monkeypatch.setitem(app.config, "MAIL_MAX_ATTEMPTS", 3)
    mailer.queue_email("p@example.com", "Reminder", "Body", kind="appointment_reminder", lead=lead)
    db.session.commit()
    smtp.down = True
    when = WED
    for _ in range(3):
        mailer.send_pending(when)
        when += timedelta(hours=1)
    row = db.session.scalar(sa.select(OutboxEmail))
    assert row.status == OutboxStatus.FAILED and row.attempts == 3 and row.next_attempt_at is None
    assert mailer.send_pending(when + timedelta(days=1)) == {
        "sent": 0,
        "stored": 0,
        "retry": 0,
        "failed": 0,
        "withdrawn": 0,
    }
    note = db.session.scalars(sa.select(Notification)).one()  # the active admin only
    assert note.user_id == admin.id and note.kind == "email_failed" and note.lead_id == lead.id
    assert f"lead #{lead.id}" in note.message and "appointment reminder" in note.message
    event = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.EMAIL_FAILED)).one()
    assert event.lead_id == lead.id and event.data == {
        "kind": "appointment_reminder",
        "attempts": 3,
        "outbox_id": row.id,
    }

    mailer.resend(row, when)
    db.session.commit()
    assert (row.status, row.attempts) == (OutboxStatus.QUEUED, 0)
    assert note.read_at is not None  # dealt with
    smtp.down = False
    assert mailer.send_pending(when)["sent"] == 1
    with pytest.raises(ValueError, match="Only an email that failed"):
        mailer.resend(row, when)


def test_two_runners_never_send_one_email_twice(app, db, smtp):
    """The claim used to leave the row "queued" with one more attempt counted, so a runner that read
    it a moment later claimed it again and sent it a second time."""
    for k in range(3):
        mailer.queue_email(f"p{k}@example.com", f"Email {k}", "Body", kind="test")
    db.session.commit()
    smtp.delay = 0.3
    results: list[dict] = []

    def runner():
        with app.app_context():
            try:
                results.append(mailer.send_pending(WED))
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=60)
    assert sorted(smtp.sent) == ["Email 0", "Email 1", "Email 2"]
    assert sum(r["sent"] for r in results) == 3
    db.session.expire_all()
    assert {(r.status, r.attempts) for r in db.session.scalars(sa.select(OutboxEmail))} == {(OutboxStatus.SENT, 1)}


def test_a_row_whose_runner_died_mid_send_is_taken_again_after_the_lease(db, smtp):
    mailer.queue_email("p@example.com", "Hello", "Body", kind="test")
    db.session.commit()
    row = db.session.scalar(sa.select(OutboxEmail))
    assert mailer._claim(row.id, WED)  # a runner took it and died before sending
    assert mailer.send_pending(WED + timedelta(minutes=5))["sent"] == 0  # its lease still runs
    assert mailer.send_pending(WED + mailer.SEND_LEASE)["sent"] == 1
    assert smtp.sent == ["Hello"]


def test_admins_see_failed_emails_and_send_one_again(app, client, auth, admin, specialist, db, smtp, monkeypatch):
    """/admin says how many emails are not sent; /admin/outbox lists them (recipient masked) with
    "Send again"; the lead's timeline says the email was not sent. Specialists get no access."""
    from crm.models import AuditLog

    lead = make_lead(db, assignee=specialist)
    monkeypatch.setitem(app.config, "MAIL_MAX_ATTEMPTS", 1)
    failed = mailer.queue_email("nora.canary@example.com", "Reminder", "Body", kind="appointment_reminder", lead=lead)
    retrying = mailer.queue_email("other@example.com", "Confirmation", "Body", kind="appointment_confirmation")
    db.session.commit()
    smtp.down = True
    mailer.send_pending(WED)  # the first fails for good (1 try allowed), so does the second...
    retrying.status, retrying.attempts = OutboxStatus.QUEUED, 1  # ...which we make one still retrying
    retrying.next_attempt_at = WED + timedelta(minutes=1)
    db.session.commit()

    auth.as_user(admin)
    home = " ".join(client.get("/admin/").get_data(as_text=True).split())
    assert "Emails not sent" in home and "1 failed · 1 retrying" in home
    page = client.get("/admin/outbox").get_data(as_text=True)
    assert "nora.canary@example.com" not in page and "n***@example.com" in page
    assert page.count("Send again</button>") == 1 and "next try" in page and "ConnectionRefusedError" in page
    assert client.get("/admin/outbox?status=sent").status_code == 200
    assert client.get("/admin/outbox?status=nonsense").status_code == 200  # shown as "needs attention"

    # An error stored before errors were cleaned, quoting the address, is masked on the page.
    retrying.error = "SMTPRecipientsRefused: {'other.canary@example.com': (550, b'no such user')}"
    db.session.commit()
    page = client.get("/admin/outbox").get_data(as_text=True)
    assert "other.canary@example.com" not in page and "SMTPRecipientsRefused" in page

    smtp.down = False
    resp = client.post(f"/admin/outbox/{failed.id}/resend")
    assert resp.status_code == 302
    db.session.expire_all()
    assert (failed.status, failed.attempts) == (OutboxStatus.QUEUED, 0)
    entry = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "resend_email")).one()
    assert entry.object_id == str(failed.id) and entry.detail["lead_id"] == lead.id
    again = client.post(f"/admin/outbox/{failed.id}/resend", follow_redirects=True)
    assert "Only an email that failed can be sent again." in again.get_data(as_text=True)
    assert client.post("/admin/outbox/999999/resend").status_code == 404

    auth.logout()
    auth.as_user(specialist)
    timeline = " ".join(client.get(f"/leads/{lead.id}").get_data(as_text=True).split())
    assert "Email not sent" in timeline and "gave up after 1 try;" in timeline
    assert client.get("/admin/outbox").status_code == 403
    assert client.post(f"/admin/outbox/{failed.id}/resend").status_code == 403


def test_an_appointment_email_overtaken_while_it_waited_is_withdrawn_not_sent_late(app, db, smtp, specialist, admin):
    """Retries last most of a day: the confirmation of a visit moved meanwhile, or of one since
    past, must not reach the patient with the old time; nor may an admin send it again."""
    from crm.services import booking
    from tests.test_queue_helpers import matched_lead

    later = WED + timedelta(days=2)
    lead, (doc,) = matched_lead(db, assignee=specialist)
    appt = booking.book(lead, physician_id=doc.id, starts_at=later, mode="in_person", actor=specialist, now=WED)
    db.session.commit()
    smtp.down = True
    assert mailer.send_pending(WED)["retry"] == 1  # the confirmation waits for SMTP
    booking.reschedule(appt, starts_at=later + timedelta(hours=2), actor=specialist, now=WED + timedelta(minutes=5))
    db.session.commit()
    smtp.down = False
    counts = mailer.send_pending(WED + timedelta(hours=1))
    assert (counts["sent"], counts["withdrawn"]) == (1, 1)
    first, moved = db.session.scalars(sa.select(OutboxEmail).order_by(OutboxEmail.id)).all()
    assert (first.status, moved.status) == (OutboxStatus.WITHDRAWN, OutboxStatus.SENT)
    assert first.error == f"withdrawn: email #{moved.id} about the same visit replaces it"
    assert smtp.sent == [moved.subject]

    # A reminder failed for good, found by an admin after the visit: not sent again.
    reminder = mailer.queue_email("p@example.com", "Tomorrow", "Body", kind="appointment_reminder", appointment=appt)
    reminder.status = OutboxStatus.FAILED
    db.session.commit()
    with pytest.raises(ValueError, match="the visit's time has passed"):
        mailer.resend(reminder, later + timedelta(days=1))
    assert mailer.overtaken(reminder, WED) is None  # before the visit, it could be


def test_a_retry_waits_from_its_own_failure_not_from_the_start_of_a_slow_run(db, smtp, monkeypatch):
    mailer.queue_email("a@example.com", "Slow", "Body", kind="test")
    mailer.queue_email("b@example.com", "Refused", "Body", kind="test")
    db.session.commit()

    def send(msg):
        if msg.subject == "Refused":
            raise ConnectionRefusedError("connection refused")
        time.sleep(0.4)  # a slow server for the first email of the run
        smtp.sent.append(msg.subject)

    monkeypatch.setattr(mailer.mail, "send", send)
    assert mailer.send_pending(WED) == {"sent": 1, "stored": 0, "retry": 1, "failed": 0, "withdrawn": 0}
    refused = db.session.scalar(sa.select(OutboxEmail).where(OutboxEmail.subject == "Refused"))
    # Its one-minute wait starts when it failed, 0.4 s into the run.
    assert timedelta(seconds=0.35) <= refused.next_attempt_at - (WED + timedelta(minutes=1)) < timedelta(seconds=5)


@pytest.fixture
def stalling_smtp_server():
    """A server that accepts connections and never says a word (a hung relay); it hangs up after 8 s."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        accepted.append(conn)
        time.sleep(8)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in accepted:
        conn.close()


def test_an_smtp_server_that_stalls_fails_the_try_after_mail_timeout(app, db, monkeypatch, stalling_smtp_server):
    """Flask-Mail opens its connection with no timeout: without MAIL_TIMEOUT this run would wait for
    the server to hang up (8 s here, as long as the operating system allows in real life)."""
    state = app.extensions["mail"]
    monkeypatch.setattr(state, "server", "127.0.0.1")
    monkeypatch.setattr(state, "port", stalling_smtp_server)
    monkeypatch.setattr(state, "use_tls", False)
    monkeypatch.setattr(state, "use_ssl", False)
    monkeypatch.setattr(state, "suppress", False)
    monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
    monkeypatch.setitem(app.config, "MAIL_SUPPRESS_SEND", False)
    monkeypatch.setitem(app.config, "MAIL_TIMEOUT", 1)
    mailer.queue_email("p@example.com", "Your visit", "Body", kind="appointment_confirmation")
    db.session.commit()

    started = time.monotonic()
    assert mailer.send_pending(WED)["retry"] == 1
    assert time.monotonic() - started < 5
    row = db.session.scalar(sa.select(OutboxEmail))
    assert row.status == OutboxStatus.QUEUED and row.attempts == 1
    assert "timed out" in row.error


def test_a_relay_that_does_not_answer_stops_the_run_instead_of_timing_out_on_every_email(db, smtp):
    for n in range(3):
        mailer.queue_email(f"p{n}@example.com", f"Email {n}", "Body", kind="test")
    db.session.commit()
    smtp.down = True  # refused: every email of the batch would wait for the same silence
    assert mailer.send_pending(WED) == {"sent": 0, "stored": 0, "retry": 1, "failed": 0, "withdrawn": 0}
    tries = db.session.scalars(sa.select(OutboxEmail.attempts).order_by(OutboxEmail.id)).all()
    assert tries == [1, 0, 0]  # the others untried and uncounted, due at the next run
    smtp.down = False
    assert mailer.send_pending(WED + timedelta(seconds=30))["sent"] == 2
    assert mailer.send_pending(WED + timedelta(minutes=2))["sent"] == 1
