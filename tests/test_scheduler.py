"""The scheduler: every SPEC 8 job with an explicit id, a lock so two schedulers never run a job twice."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from crm import create_app
from crm.cli.scheduler import Stop, build_scheduler, run_until_stopped
from crm.extensions import db as _db
from crm.jobs import ADVISORY_KEY, HELD, JOBS, JOBS_BY_ID, TAKEN, UNREACHABLE, Job, SchedulerLock, run_all, run_job
from crm.models import JobRun, Notification
from crm.models.enums import LeadStatus
from crm.services import followups
from tests.test_queue_helpers import WED, make_lead

ROOT = Path(__file__).resolve().parent.parent
SPEC_8 = {
    "geocode_retry",
    "auto_assign",
    "sla_sweep",
    "stale_assignments",
    "follow_up_reminders",
    "unreachable_close",
    "registration_expiry",
    "appointment_reminders",
    "inbox_retry",
    "outbox",
}
# Beyond SPEC 8: intake stores only and enrich_new enriches and routes what it stored;
# report_rollups keeps the /reports rollups fresh (docs/reports.md "Rollups"); housekeeping keeps
# login_throttles and job_runs from growing without end; visit_outcomes asks for the outcome of a visit
# that passed without one (SPEC 2.8).
JOB_IDS = SPEC_8 | {"enrich_new", "report_rollups", "housekeeping", "visit_outcomes"}
QUIET = {"enrich_new", "housekeeping"}  # a run with nothing to do leaves no row


def test_every_spec_8_job_is_scheduled_with_an_explicit_id(app):
    assert {job.id for job in JOBS} == JOB_IDS
    with app.app_context():
        scheduler = build_scheduler(app, JOBS)
        jobs = scheduler.get_jobs()
    assert sorted(j.id for j in jobs) == sorted(JOB_IDS)
    assert all(j.trigger.interval == timedelta(seconds=JOBS_BY_ID[j.id].seconds) for j in jobs)
    assert not scheduler.running  # building it starts nothing


def test_the_app_starts_no_scheduler(app):
    assert not [t for t in threading.enumerate() if "APScheduler" in t.name or "scheduler" in t.name.lower()]


def test_every_job_runs_and_is_recorded(app, db):
    runs = run_all(WED)
    assert {r.job_id for r in runs} == JOB_IDS
    failed = {r.job_id: r.summary for r in runs if not r.ok}
    assert not failed, failed
    recorded = db.session.scalars(sa.select(JobRun.job_id)).all()
    assert sorted(recorded) == sorted(JOB_IDS - QUIET)
    assert {job.id for job in JOBS if job.quiet} == QUIET


def test_jobs_are_idempotent(app, db, specialist):
    lead = make_lead(db, status=LeadStatus.ATTEMPTING, assignee=specialist)
    followups.schedule(lead, due_at=WED, kind="call", actor=specialist, now=WED)
    db.session.commit()
    later = WED + timedelta(minutes=5)
    with app.test_request_context():
        first = run_job(JOBS_BY_ID["follow_up_reminders"], later)
        second = run_job(JOBS_BY_ID["follow_up_reminders"], later)
    assert first.summary == "1 follow-up(s) due, 1 owner(s) reminded"
    assert second.summary == "0 follow-up(s) due, 0 owner(s) reminded"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 1


def test_a_failing_job_is_recorded_and_does_not_stop_the_others(app, db, monkeypatch, caplog):
    """The run says what failed and the log where (a traceback): "failed: OperationalError" alone
    could not be diagnosed. Patient data in a message stays masked in both."""
    import logging

    from crm import jobs

    def broken(now):
        raise RuntimeError("no mailbox for jane.canary@example.com")

    monkeypatch.setattr(jobs, "JOBS_BY_ID", {**jobs.JOBS_BY_ID, "outbox": jobs.Job("outbox", 30, broken, "x")})
    with caplog.at_level(logging.ERROR, logger="crm.jobs"):
        runs = run_all(WED, only=("outbox", "sla_sweep"))
    job_id, ok, summary = runs[0].job_id, runs[0].ok, runs[0].summary
    assert (job_id, ok) == ("outbox", False) and summary.startswith("failed: RuntimeError: no mailbox for ")
    assert "jane.canary@example.com" not in summary
    assert runs[1].ok
    logged = "\n".join(caplog.messages + [r.exc_text or "" for r in caplog.records])
    assert "job outbox failed: RuntimeError" in logged and "Traceback" in logged and "in broken" in logged
    assert "jane.canary@example.com" not in logged


def test_two_schedulers_run_each_job_once(app, db):
    """Two scheduler processes start together: one takes the lock and runs the jobs, the other runs none."""
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def scheduler(name: str) -> None:
        with app.app_context():
            lock = SchedulerLock(app)
            barrier.wait(timeout=10)
            got = lock.try_acquire()
            barrier.wait(timeout=10)  # both tried before either lets go
            outcome[name] = got
            if got:
                run_all(WED)
            barrier.wait(timeout=60)
            lock.release()
            _db.session.remove()

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert sorted(outcome.values()) == [False, True]
    counts = dict(db.session.execute(sa.select(JobRun.job_id, sa.func.count()).group_by(JobRun.job_id)).all())
    assert counts == dict.fromkeys(JOB_IDS - QUIET, 1)  # the quiet jobs had nothing to do: no row


def test_once_exits_1_when_a_job_failed_with_one_line_on_stderr(app, db, monkeypatch):
    """--once is for cron and scripts: a failed job must not look like success."""
    from crm import jobs

    def broken(now):
        raise RuntimeError("relay said no\n[SQL: DELETE FROM somewhere]\nmore lines")

    monkeypatch.setattr(jobs, "JOBS_BY_ID", {**jobs.JOBS_BY_ID, "outbox": jobs.Job("outbox", 30, broken, "x")})
    result = app.test_cli_runner().invoke(args=["crm", "scheduler", "--once", "--job", "outbox", "--job", "sla_sweep"])
    assert result.exit_code == 1, result.output
    assert "2 job(s) run, 1 not ok." in result.output
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("outbox")]
    assert "relay said no [SQL: DELETE FROM somewhere] more lines" in line  # one line per job
    assert (
        result.stderr.strip()
        == "Error: job outbox failed: RuntimeError: relay said no [SQL: DELETE FROM somewhere] more lines"
    )


def test_lock_is_released_for_the_next_scheduler(app):
    with app.app_context():
        first, second = SchedulerLock(app), SchedulerLock(app)
        assert first.try_acquire()
        assert not second.acquire(wait=True, poll=0.05, timeout=0.2)
        first.release()
        assert second.try_acquire()
        assert "lock" in second.describe()
        second.release()


def test_cli_refuses_a_second_scheduler(app, db):
    runner = app.test_cli_runner()
    with app.app_context():
        holder = SchedulerLock(app)
        assert holder.try_acquire()
        try:
            result = runner.invoke(args=["crm", "scheduler", "--once"])
        finally:
            holder.release()
    assert result.exit_code == 1
    assert "Another scheduler is already running" in result.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(JobRun)) == 0
    result = runner.invoke(args=["crm", "scheduler", "--once", "--job", "sla_sweep", "--job", "outbox"])
    assert result.exit_code == 0, result.output
    assert "2 job(s) run, 0 not ok." in result.output
    result = runner.invoke(args=["crm", "scheduler", "--once", "--job", "nope"])
    assert result.exit_code != 0 and "unknown job(s) nope" in result.output


def _slow_job(started: threading.Event, release: threading.Event, finished: list):
    def slow(now):
        started.set()
        release.wait(15)
        finished.append(time.monotonic())
        return "slow job done"

    return Job("slow_test_job", 3600, slow, "a job that takes a while")


def test_sigterm_lets_the_running_job_finish_then_exits_0(app, db, monkeypatch, caplog):
    """systemd / docker stop send SIGTERM: no new job starts, the running one finishes, and only
    then is the lock let go (a second scheduler waiting with --wait must not start beside it)."""
    from crm import jobs

    started, release, finished = threading.Event(), threading.Event(), []
    job = _slow_job(started, release, finished)
    monkeypatch.setattr(jobs, "JOBS_BY_ID", {**jobs.JOBS_BY_ID, job.id: job})
    lock_free_while_running: list[bool] = []

    def operator():
        assert started.wait(30)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.7)  # the scheduler has seen the signal and is waiting for the job
        with app.app_context():
            other = SchedulerLock(app)
            lock_free_while_running.append(other.try_acquire())
            other.release()
        release.set()

    helper = threading.Thread(target=operator)
    helper.start()
    with caplog.at_level(logging.INFO, logger="crm.scheduler"):
        result = app.test_cli_runner().invoke(args=["crm", "scheduler", "--job", job.id])
    returned = time.monotonic()
    helper.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert finished and finished[0] < returned  # the job finished before the command returned
    assert lock_free_while_running == [False]
    assert "Scheduler stopped (SIGTERM received)." in result.output
    assert "waiting for running jobs to finish" in caplog.text and "scheduler: stopped, no job running" in caplog.text
    run = db.session.scalar(sa.select(JobRun).where(JobRun.job_id == job.id))
    assert run.ok and run.summary == "slow job done" and run.finished_at is not None
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handlers are back


def test_sigterm_during_once_finishes_the_running_job_and_starts_no_other(app, db, monkeypatch):
    from crm import jobs

    ran = []

    def interrupted(now):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while this job runs
        ran.append("first")
        return "first done"

    first = Job("first_job", 3600, interrupted, "sends the scheduler a SIGTERM")
    second = Job("second_job", 3600, lambda now: ran.append("second") or "second done", "must not start")
    monkeypatch.setattr(jobs, "JOBS", [first, second])
    monkeypatch.setattr(jobs, "JOBS_BY_ID", {first.id: first, second.id: second})
    before = signal.getsignal(signal.SIGTERM)
    result = app.test_cli_runner().invoke(args=["crm", "scheduler", "--once"])
    assert result.exit_code == 0, result.output
    assert ran == ["first"]
    assert "first_job              ok  first done" in result.output
    assert "Stopped early (SIGTERM received): 1 job(s) not started." in result.output
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


class _LockTakenOver:
    def check(self):
        return TAKEN


def test_a_scheduler_whose_lock_was_taken_over_runs_nothing_and_exits_1(app, db):
    ran = []
    job = Job("noted", 3600, lambda now: ran.append(now) or "ran", "records that it ran")
    stop = Stop()
    with app.app_context():
        code = run_until_stopped(app, [job], _LockTakenOver(), stop, first_run_in=0)
    assert code == 1 and not ran
    assert stop.reason == "another scheduler holds the lock now"


def test_a_cut_lock_connection_is_noticed_and_the_lock_taken_again_unless_another_has_it(app, db):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the advisory lock lives on a PostgreSQL connection; SQLite's lock file cannot be cut")

    def cut(lock: SchedulerLock) -> None:
        pid = lock.conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        lock.conn.commit()
        db.session.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        db.session.commit()
        for _ in range(50):  # the backend ends (and frees the lock) just after the call returns
            if not db.session.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}):
                break
            time.sleep(0.05)
        db.session.commit()

    # In this database only: a scheduler of another database on the same server (a dev server's)
    # holds the same key in its own.
    holders = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k AND objsubid = 1 AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with app.app_context():
        lock = SchedulerLock(app)
        assert lock.try_acquire() and lock.check() == HELD
        cut(lock)
        assert db.session.scalar(holders, {"k": ADVISORY_KEY}) == 0  # the server freed it
        assert lock.check() == HELD  # noticed, and taken again on a new connection
        assert db.session.scalar(holders, {"k": ADVISORY_KEY}) == 1
        db.session.commit()
        cut(lock)
        other = SchedulerLock(app)
        assert other.try_acquire()  # a scheduler waiting with --wait gets it first
        try:
            assert lock.check() == TAKEN
        finally:
            other.release()
            lock.release()


def _app_on(url: str):
    from tests.conftest import build_app

    return build_app(url)


def _dispose(app) -> None:
    with app.app_context():
        _db.session.remove()
        for engine in _db.engines.values():
            engine.dispose()


def _refuses_to_start(app, monkeypatch, *args) -> str:
    from crm.cli import scheduler

    def never(*a, **kw):
        raise AssertionError("the scheduler started on a database it cannot work with")

    monkeypatch.setattr(scheduler, "run_until_stopped", never)
    result = app.test_cli_runner().invoke(args=["crm", "scheduler", *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def test_the_scheduler_refuses_a_database_that_is_not_migrated(monkeypatch, tmp_path):
    from alembic.script import ScriptDirectory
    from flask_migrate import stamp

    blank = _app_on(f"sqlite:///{tmp_path / 'blank.sqlite3'}")
    try:
        output = _refuses_to_start(blank, monkeypatch)
        assert "the scheduler does not start: the database has no tables yet" in output
        assert "flask --app wsgi db upgrade" in output
        with blank.app_context():
            script = ScriptDirectory.from_config(blank.extensions["migrate"].migrate.get_config())
            head = script.get_revision(script.get_current_head())
            stamp(revision=head.down_revision)  # the previous release's schema
        output = _refuses_to_start(blank, monkeypatch, "--once")
        assert f"is at migration {head.down_revision}, this code needs {head.revision}" in output
        with blank.app_context(), _db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed1234'"))
        output = _refuses_to_start(blank, monkeypatch)
        assert "is at migration f00dfeed1234, which this code does not know" in output
    finally:
        _dispose(blank)


def test_a_database_outage_is_logged_once_with_reminders_and_its_end_not_once_per_skipped_run(caplog):
    from crm.cli.scheduler import OutageNotice

    now = [datetime(2026, 12, 2, 9, 0, tzinfo=UTC)]
    notice = OutageNotice(remind=timedelta(minutes=5), clock=lambda: now[0])
    caplog.set_level("WARNING", logger="crm.scheduler")
    notice.answered()  # nothing was wrong: nothing said
    for second in range(0, 12 * 60, 20):  # 12 minutes of runs every 20 s, all skipped
        now[0] = datetime(2026, 12, 2, 9, 0, tzinfo=UTC) + timedelta(seconds=second)
        notice.skipped_run("outbox")
    notice.answered()
    notice.answered()
    said = [r.getMessage() for r in caplog.records if r.name == "crm.scheduler"]
    assert said == [
        "scheduler: the database does not answer; job runs are skipped until it does (outbox)",
        "scheduler: the database still does not answer (5 min); 16 job run(s) skipped so far",
        "scheduler: the database still does not answer (10 min); 31 job run(s) skipped so far",
        "scheduler: the database answers again after 700 s; 36 job run(s) were skipped",
    ]


class _LockUnreachable:
    def check(self):
        return UNREACHABLE


def test_while_the_lock_cannot_be_checked_no_job_runs_and_the_log_says_so_once(app, db, caplog):
    ran = []
    jobs = [Job(f"noted{i}", 3600, lambda now: ran.append(now) or "ran", "records that it ran") for i in range(3)]
    stop = Stop()
    caplog.set_level("WARNING", logger="crm.scheduler")
    with app.app_context():
        scheduler = build_scheduler(app, jobs, lock=_LockUnreachable(), stop=stop, first_run_in=0)
        scheduler.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(j.next_run_time < datetime.now(UTC) for j in scheduler.get_jobs()):
            time.sleep(0.05)
        time.sleep(0.3)
        scheduler.shutdown(wait=True)
    assert not ran
    warnings = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_the_default_lock_file_is_per_database(tmp_path):
    """Two instances of one checkout on different SQLite databases each run their own scheduler:
    with SCHEDULER_LOCK_FILE unset the lock sits next to the database file, not in instance/."""
    env = {k: v for k, v in os.environ.items() if k != "SCHEDULER_LOCK_FILE"}
    code = (
        "import config as c; print(repr(c.Config.SCHEDULER_LOCK_FILE), repr(c.DevelopmentConfig.SCHEDULER_LOCK_FILE))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["''", "''"]
    env["SCHEDULER_LOCK_FILE"] = str(tmp_path / "chosen.lock")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == repr(str(tmp_path / "chosen.lock"))  # an explicit one still wins

    apps = [
        create_app("config.TestConfig", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / name}")
        for name in ("one.db", "two.db")
    ]
    locks = []
    try:
        for app in apps:
            with app.app_context():
                lock = SchedulerLock(app)
                assert lock.try_acquire(), "the other database's scheduler must not keep this one out"
                assert (
                    lock.lock_path() == tmp_path / f"{Path(app.config['SQLALCHEMY_DATABASE_URI']).name}.scheduler.lock"
                )
                locks.append((app, lock))
        with apps[0].app_context():  # the same database: still one scheduler
            assert not SchedulerLock(apps[0]).try_acquire()
    finally:
        for app, lock in locks:
            with app.app_context():
                lock.release()
    shared = tmp_path / "shared.lock"
    for app in apps:
        app.config["SCHEDULER_LOCK_FILE"] = str(shared)
    with apps[0].app_context():
        first = SchedulerLock(apps[0])
        assert first.try_acquire() and first.lock_path() == shared
        with apps[1].app_context():
            assert not SchedulerLock(apps[1]).try_acquire()  # one lock file named for both: one scheduler
        first.release()


def test_a_second_stop_signal_is_only_noted_and_said_after_the_stopping_line(caplog):
    """It was logged from the signal handler (logging takes a lock the interrupted thread may hold),
    and so before the line saying the scheduler was stopping."""
    from crm.cli.scheduler import Stop

    stop = Stop()
    with caplog.at_level("INFO", logger="crm"):
        stop.request("SIGINT received")
        stop.request("SIGTERM received", exit_code=3)
    assert caplog.records == [] and stop.repeated == ["SIGTERM received"]
    assert (stop.reason, stop.exit_code) == ("SIGINT received", 0)


def test_a_stop_signal_sent_while_a_job_finishes_is_logged_before_stopped(app, db, caplog):
    """The usual second Ctrl-C comes while the running job finishes, after the 'stopping' line: it was
    noted and never said."""
    import threading as _threading

    started, release = _threading.Event(), _threading.Event()

    def slow(now):
        started.set()
        release.wait(10)
        return "ran"

    stop = Stop()

    def press_twice():
        started.wait(10)
        stop.request("SIGINT received")
        time.sleep(0.5)  # the scheduler has logged "stopping" and waits for the job
        stop.request("SIGTERM received")
        release.set()

    _threading.Thread(target=press_twice, daemon=True).start()
    with caplog.at_level("INFO", logger="crm"), app.app_context():
        assert run_until_stopped(app, [Job("slow", 3600, slow, "takes a while")], None, stop, first_run_in=0) == 0
    lines = [r.getMessage() for r in caplog.records]
    stopping = next(i for i, m in enumerate(lines) if m.startswith("scheduler: stopping (SIGINT received)"))
    also = next(i for i, m in enumerate(lines) if "also asked to stop by SIGTERM received" in m)
    stopped = next(i for i, m in enumerate(lines) if m == "scheduler: stopped, no job running")
    assert stopping < also < stopped


def test_a_database_that_refuses_the_runs_record_gives_a_failed_run_not_a_traceback(app, db, monkeypatch):
    """A locked database: the job is not run, and --once says so in one line and exits 1."""
    from crm import jobs

    real_commit = _db.session.commit
    calls = []

    def locked_once():
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("INSERT INTO job_runs", {}, Exception("database is locked"))
        return real_commit()

    monkeypatch.setattr(_db.session, "commit", locked_once)
    ran = []
    job = Job("probe", 60, lambda now: ran.append(now) or "did it", "x")
    run = run_job(job, WED)
    assert (run.ok, ran) == (False, []) and run.summary.startswith("not run: its start could not be recorded")
    assert "database is locked" in run.summary
    monkeypatch.setattr(jobs, "JOBS_BY_ID", {**JOBS_BY_ID, "probe": job})
    calls.clear()
    result = app.test_cli_runner().invoke(args=["crm", "scheduler", "--once", "--job", "probe"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: job probe not run: its start could not be recorded" in result.stderr


def test_admins_are_told_when_the_scheduler_is_not_running(app, client, auth, db, admin):
    auth.as_user(admin)
    page = client.get("/admin/").get_data(as_text=True)
    assert "The scheduler is not running" in page and "no background job has ever run" in page
    assert 'href="/admin/routing"' in page  # Routing & jobs is one click from the admin home
    assert 'href="/admin/"' in client.get("/admin/routing").get_data(as_text=True)  # and back
    now = datetime.now(UTC)
    db.session.add(JobRun(job_id="sla_sweep", started_at=now - timedelta(minutes=25), finished_at=now, ok=True))
    db.session.commit()
    page = client.get("/admin/routing").get_data(as_text=True)
    assert "The scheduler is not running" in page and "no background job has started since" in page
    # A job started 25 minutes ago and still running (a full report rebuild): the scheduler is alive.
    long_run = JobRun(job_id="report_rollups", started_at=now - timedelta(minutes=24), ok=True, summary="running")
    db.session.add(long_run)
    db.session.commit()
    assert "The scheduler is not running" not in client.get("/admin/").get_data(as_text=True)
    long_run.finished_at = now
    db.session.add(JobRun(job_id="sla_sweep", started_at=now - timedelta(minutes=1), finished_at=now, ok=True))
    db.session.commit()
    assert "The scheduler is not running" not in client.get("/admin/").get_data(as_text=True)
    # Jobs run from cron every half hour: the warning waits as long as it is told to.
    app.config["SCHEDULER_SILENT_MINUTES"] = 45
    from crm.jobs import scheduler_silence

    assert scheduler_silence(now + timedelta(minutes=30)) is False
    assert scheduler_silence(now + timedelta(minutes=50)) is not False


def test_a_run_that_never_recorded_its_end_is_shown_as_unfinished(app, client, auth, db, admin):
    now = datetime.now(UTC)
    db.session.add(JobRun(job_id="outbox", started_at=now - timedelta(hours=2), ok=True, summary="running"))
    db.session.add(JobRun(job_id="sla_sweep", started_at=now - timedelta(minutes=1), ok=True, summary="running"))
    db.session.commit()
    auth.as_user(admin)
    page = client.get("/admin/routing").get_data(as_text=True)
    outbox_row = next(row for row in page.split("<tr>") if ">outbox<" in row)
    assert "did not finish: the scheduler stopped during this run" in outbox_row and "text-danger" in outbox_row
    sweep_row = next(row for row in page.split("<tr>") if ">sla_sweep<" in row)
    assert "running" in sweep_row and "did not finish" not in sweep_row  # a minute in: still running


def test_a_run_whose_end_cannot_be_recorded_says_it_ran(app, db, monkeypatch):
    real_commit = _db.session.commit
    calls = []

    def third_fails():
        calls.append(1)
        if len(calls) == 3:  # the start's record, the job's own work, then the end's record
            raise sa.exc.OperationalError("UPDATE job_runs", {}, Exception("database is locked"))
        return real_commit()

    monkeypatch.setattr(_db.session, "commit", third_fails)
    run = run_job(Job("probe", 60, lambda now: "3 lead(s) auto-assigned", "x"), WED)
    assert not run.ok
    assert run.summary.startswith("ran (3 lead(s) auto-assigned), but its run could not be recorded:")
