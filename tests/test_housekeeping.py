"""The hourly housekeeping job: sign-in failure counts and job runs do not pile up forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from crm.jobs import JOBS_BY_ID, run_job
from crm.models import JobRun, LoginThrottle
from tests.factories import PASSWORD

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def throttle(db, key, *, window_started_at=None, locked_until=None, failures=1, day_started_at=None):
    db.session.add(
        LoginThrottle(
            key=key,
            failures=failures,
            window_started_at=window_started_at,
            locked_until=locked_until,
            day_failures=failures if day_started_at else 0,
            day_started_at=day_started_at,
        )
    )


def test_expired_sign_in_failure_counts_are_forgotten_and_live_ones_kept(app, db):
    lockout = app.config["LOGIN_LOCKOUT"]  # 15 minutes
    throttle(db, "old-window", window_started_at=NOW - lockout - MIN)
    throttle(db, "lock-over", locked_until=NOW - MIN, failures=0)
    throttle(db, "current-window", window_started_at=NOW - 5 * MIN)
    throttle(db, "still-locked", locked_until=NOW + 5 * MIN, failures=0)
    throttle(db, "old-window-but-locked", window_started_at=NOW - 2 * lockout, locked_until=NOW + MIN)
    # The 24-hour count (LOGIN_DAILY_MAX_FAILURES) outlives the short window.
    throttle(db, "day-count-running", window_started_at=NOW - 2 * lockout, day_started_at=NOW - timedelta(hours=23))
    throttle(db, "day-count-over", window_started_at=NOW - 2 * lockout, day_started_at=NOW - timedelta(hours=25))
    db.session.commit()

    run = run_job(JOBS_BY_ID["housekeeping"], now=NOW)

    assert (
        run.ok
        and run.summary == "forgot 3 expired sign-in failure count(s), 0 old job run(s) and 0 old spam inbox item(s)"
    )
    kept = set(db.session.scalars(sa.select(LoginThrottle.key)))
    assert kept == {"current-window", "still-locked", "old-window-but-locked", "day-count-running"}


def test_a_locked_email_stays_locked_through_housekeeping(app, client, db, specialist):
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        client.post("/login", data={"email": specialist.email, "password": "wrong password!"})
    run_job(JOBS_BY_ID["housekeeping"])
    resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD})
    assert b"locked" in resp.data and resp.status_code == 200


def test_old_job_runs_go_but_every_jobs_latest_run_stays(app, db):
    days = app.config["JOB_RUN_RETENTION_DAYS"]  # 30
    old = NOW - timedelta(days=days + 1)
    for job_id, started_at in [
        ("outbox", old),
        ("outbox", old + MIN),
        ("outbox", NOW - timedelta(days=days - 1)),  # inside the retention: kept
        ("registration_expiry", old),  # its only run: the Routing & jobs page shows it
    ]:
        db.session.add(JobRun(job_id=job_id, started_at=started_at, finished_at=started_at, summary="done"))
    db.session.commit()

    run = run_job(JOBS_BY_ID["housekeeping"], now=NOW)

    assert run.summary == "forgot 0 expired sign-in failure count(s), 2 old job run(s) and 0 old spam inbox item(s)"
    left = db.session.execute(sa.select(JobRun.job_id, JobRun.started_at).where(JobRun.job_id != "housekeeping"))
    assert sorted((j, s.date()) for j, s in left) == [
        ("outbox", (NOW - timedelta(days=days - 1)).date()),
        ("registration_expiry", old.date()),
    ]


def test_an_idle_housekeeping_run_leaves_no_row(app, db):
    run = run_job(JOBS_BY_ID["housekeeping"], now=NOW)
    assert run.ok and run.summary == "nothing to do"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(JobRun)) == 0


def test_old_honeypot_items_are_deleted_and_every_other_inbox_item_kept(app, db):
    from crm.models import InboxItem
    from crm.models.enums import InboxChannel, InboxStatus

    days = app.config["SPAM_RETENTION_DAYS"]  # 30
    old, recent = NOW - timedelta(days=days + 1), NOW - timedelta(days=days - 1)
    for status, at in [
        (InboxStatus.SPAM, old),
        (InboxStatus.SPAM, recent),  # an admin may still replay it
        (InboxStatus.FAILED, old),
        (InboxStatus.REJECTED, old),
        (InboxStatus.ACCEPTED, old),
    ]:
        db.session.add(InboxItem(channel=InboxChannel.FORM, status=status, received_at=at, body="{}"))
    db.session.commit()

    run = run_job(JOBS_BY_ID["housekeeping"], now=NOW)

    assert run.summary.endswith("and 1 old spam inbox item(s)")
    left = sorted(
        (s.value, at.date()) for s, at in db.session.execute(sa.select(InboxItem.status, InboxItem.received_at))
    )
    assert left == sorted(
        [("spam", recent.date()), ("failed", old.date()), ("rejected", old.date()), ("accepted", old.date())]
    )
