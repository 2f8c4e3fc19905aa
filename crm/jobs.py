"""Background jobs of SPEC 8, declared as data. Importing this module starts nothing.

Each job is a sweep over rows with a due time (the state lives in the database,
not in APScheduler's job store), claims a row with a conditional UPDATE before
acting on it, and returns a one-line summary. ``run_job`` records every run in
``job_runs`` and logs it. ``flask crm scheduler`` (crm/cli/scheduler.py) runs the
jobs in one process, behind a lock (``SchedulerLock``).

Jobs owned by other areas are imported lazily inside their wrapper: a missing
function is logged and recorded as a failed run, never fatal to the scheduler.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from crm.extensions import db
from crm.logging_setup import error_text, scrub
from crm.models import JobRun

log = logging.getLogger("crm.jobs")


class JobUnavailable(RuntimeError):
    """The function a job delegates to does not exist in this build."""


def _optional(module: str, name: str) -> Callable:
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
    except AttributeError:
        pass
    raise JobUnavailable(f"skipped: {module}.{name} is not available")


def _cfg(name: str, default):
    value = current_app.config.get(name)
    return default if value in (None, "") else value


# --- job bodies: (now) -> one-line summary -------------------------------------------


def geocode_retry(now: datetime) -> str:
    from crm.services.enrichment import retry_pending_geocodes, retry_pending_physicians

    limit = int(_cfg("GEOCODE_RETRY_BATCH", 100))
    patients = retry_pending_geocodes(now, limit=limit)
    physicians = retry_pending_physicians(now, limit, current_app.config)
    return f"geocode retry + re-match: {patients}; {physicians}"


def enrich_new(now: datetime) -> str:
    from crm.services.pipeline import enrich_new_leads

    return str(enrich_new_leads(now, limit=int(_cfg("ENRICH_BATCH", 200))))


def auto_assignment(now: datetime) -> str:
    from crm.services.routing import auto_assign_sweep

    return f"{auto_assign_sweep(now)} lead(s) auto-assigned"


def sla_escalation(now: datetime) -> str:
    from crm.services.sla import SlaConfig, sla_sweep

    c = sla_sweep(now, SlaConfig.from_config(current_app.config))
    return (
        f"{c['breached']} lead(s) past the speed-to-lead target, {c['notified']} admin notification(s), "
        f"{c['rescheduled']} deadline(s) moved to business hours"
    )


def stale_assignments(now: datetime) -> str:
    from crm.services.sla import stale_sweep

    hours = int(_cfg("STALE_ASSIGNMENT_HOURS", 24))
    return f"{stale_sweep(now, hours)} untouched lead(s) returned to the pool after {hours} h"


def follow_up_reminders(now: datetime) -> str:
    from crm.services.followups import send_reminders

    c = send_reminders(now)
    return f"{c['reminded']} follow-up(s) due, {c['emailed']} owner(s) reminded"


def unreachable_close(now: datetime) -> str:
    from crm.services.sla import unreachable_sweep

    n, d = int(_cfg("UNREACHABLE_ATTEMPTS", 6)), int(_cfg("UNREACHABLE_DAYS", 10))
    return f"{unreachable_sweep(now, n, d)} lead(s) closed lost/unreachable ({n} attempts over {d} days)"


def registration_expiry(now: datetime) -> str:
    fn = _optional("crm.services.directory", "warn_expiring_registrations")
    return f"{fn(now)} expiring registration(s) warned about"


def appointment_reminders(now: datetime) -> str:
    from crm.services.booking import send_appointment_reminders

    queued = send_appointment_reminders(now, hours=int(_cfg("APPOINTMENT_REMINDER_HOURS", 24)))
    return f"{queued} appointment reminder(s) queued"


def visit_outcomes(now: datetime) -> str:
    from crm.services.booking import plan_outcome_follow_ups

    return f"{plan_outcome_follow_ups(now)} past visit(s) without an outcome: a follow-up asks for it"


def inbox_retry(now: datetime) -> str:
    fn = _optional("crm.services.intake", "retry_failed_items")
    return f"{fn(now, limit=50)} failed intake item(s) retried"


def outbox(now: datetime) -> str:
    from crm.services.mailer import send_pending

    c = send_pending(now)
    return (
        f"outbox: {c['sent']} sent, {c['stored']} stored (no SMTP), {c['retry']} to retry, {c['failed']} failed, "
        f"{c['withdrawn']} withdrawn"
    )


def housekeeping(now: datetime) -> str:
    from crm.services.housekeeping import housekeeping as forget

    lockout = current_app.config["LOGIN_LOCKOUT"]
    return str(
        forget(
            db.session,
            now,
            lockout=lockout,
            job_run_days=int(_cfg("JOB_RUN_RETENTION_DAYS", 30)),
            spam_days=int(_cfg("SPAM_RETENTION_DAYS", 30)),
        )
    )


def report_rollups(now: datetime) -> str:
    from crm.services.report_rollups import refresh_report_rollups

    return str(refresh_report_rollups(db.session, now, _cfg("BUSINESS_TIMEZONE", "America/New_York")))


@dataclass(frozen=True)
class Job:
    id: str
    seconds: int
    func: Callable[[datetime], str]
    description: str
    quiet: bool = False  # runs often: a run that did nothing (empty summary) leaves no JobRun row


JOBS: tuple[Job, ...] = (
    Job("enrich_new", 5, enrich_new, "Geocode, check, match and route leads intake just stored", quiet=True),
    Job("geocode_retry", 120, geocode_retry, "Geocode retry with backoff, then re-match"),
    Job("auto_assign", 60, auto_assignment, "Auto-assign waiting leads (round robin)"),
    Job("sla_sweep", 60, sla_escalation, "Speed-to-lead SLA: flag and escalate to admins"),
    Job("stale_assignments", 300, stale_assignments, "Untouched assigned leads back to the pool"),
    Job("follow_up_reminders", 60, follow_up_reminders, "Remind owners of due follow-ups"),
    Job("unreachable_close", 900, unreachable_close, "Close leads unreachable after N attempts over D days"),
    Job("registration_expiry", 6 * 3600, registration_expiry, "Warn admins of registrations expiring in 30 days"),
    Job("appointment_reminders", 300, appointment_reminders, "Email patients 24 h before the visit"),
    Job("visit_outcomes", 600, visit_outcomes, "Ask for the outcome of visits that have passed without one"),
    Job("inbox_retry", 120, inbox_retry, "Retry failed intake items"),
    Job("outbox", 30, outbox, "Send queued emails"),
    Job("report_rollups", 60, report_rollups, "Rebuild the /reports rollups of the days that changed"),
    Job(
        "housekeeping",
        3600,
        housekeeping,
        "Forget expired sign-in failure counts, old job runs and old spam",
        quiet=True,
    ),
)
JOBS_BY_ID = {job.id: job for job in JOBS}


def run_job(job: Job, now: datetime | None = None) -> JobRun:
    """Run one job in the current app context; its JobRun row records the outcome (a quiet job's
    idle run is returned unsaved)."""
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    run_id = None
    if not job.quiet:  # a row up front shows a long run as "running"
        run = JobRun(job_id=job.id, started_at=now, ok=True, summary="running")
        try:
            db.session.add(run)
            db.session.commit()
        except SQLAlchemyError as exc:  # the database is locked or gone: not run, said in one line
            db.session.rollback()
            summary = f"not run: its start could not be recorded ({scrub(error_text(exc, 200))})"
            log.error("job %s %s", job.id, summary)
            return JobRun(job_id=job.id, started_at=now, finished_at=datetime.now(UTC), ok=False, summary=summary)
        run_id = run.id
    try:
        summary, ok = job.func(now), True
        db.session.commit()
    except JobUnavailable as exc:
        db.session.rollback()
        summary, ok = str(exc), False
        log.warning("job %s %s", job.id, summary)
    except Exception as exc:  # noqa: BLE001 - one failing job never stops the others
        db.session.rollback()
        # The message (a PostgreSQL error's quoted values withheld, emails and phones masked) and
        # the traceback: "failed: OperationalError" alone could not be diagnosed.
        summary, ok = f"failed: {scrub(error_text(exc, 300))}", False
        log.error("job %s failed: %s", job.id, error_text(exc), exc_info=exc)
    finished, text = datetime.now(UTC), (summary or "nothing to do")[:1000]
    try:
        if run_id is None:
            run = JobRun(job_id=job.id, started_at=now)
            if summary or not ok:
                db.session.add(run)
        else:
            run = db.session.get(JobRun, run_id)
        run.finished_at, run.ok, run.summary = finished, ok, text
        db.session.commit()
    except SQLAlchemyError as exc:
        # The job's own work is committed (or rolled back) already; only its record is lost. The row
        # stays "running", which the routing page shows as unfinished once it is old (STUCK_AFTER).
        db.session.rollback()
        log.error("job %s: its outcome could not be recorded (%s)", job.id, error_text(exc, 200))
        said = f"ran ({text})" if ok else text
        summary = f"{said[:600]}, but its run could not be recorded: {scrub(error_text(exc, 200))}"
        run = JobRun(job_id=job.id, started_at=now, finished_at=finished, ok=False, summary=summary)
    elapsed = (time.perf_counter() - started) * 1000
    if ok and (summary or not job.quiet):
        log.info("job %s: %s (%.0f ms)", job.id, run.summary, elapsed)
    return run


# A run still "running" after this long ended without recording it (the process was killed, or the
# database refused the record): /admin/routing says so instead of "running" for good.
STUCK_AFTER = timedelta(hours=1)


def run_is_stuck(run: JobRun, now: datetime | None = None) -> bool:
    """A run that never recorded its end and started over STUCK_AFTER ago."""
    if run.finished_at is not None:
        return False
    started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
    return started < (now or datetime.now(UTC)) - STUCK_AFTER


def scheduler_silence(now: datetime | None = None, silent_after: timedelta | None = None) -> datetime | None | bool:
    """When the scheduler last started a job, if that is over SCHEDULER_SILENT_MINUTES ago (False: it
    ran since, or a job is running now; None: no job has ever run). Admins are told, since nothing else
    shows it: reminders, escalations, auto-assignment, inbox retries and report rollups stop without a
    sound. Read by primary key (the newest rows), not by a scan of the runs' start times."""
    now = now or datetime.now(UTC)
    if silent_after is None:
        silent_after = timedelta(minutes=int(current_app.config.get("SCHEDULER_SILENT_MINUTES", 10)))
    latest = db.session.execute(
        sa.select(JobRun.started_at, JobRun.finished_at).order_by(JobRun.id.desc()).limit(20)
    ).all()
    if not latest:
        return None
    for started, finished in latest:
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        if started > now - silent_after or (finished is None and started > now - STUCK_AFTER):
            return False  # ran lately, or is in the middle of a long job (a full report rebuild)
    return max(started for started, _ in latest)


def run_all(
    now: datetime | None = None, only: tuple[str, ...] = (), stop_requested: Callable[[], bool] = lambda: False
) -> list[JobRun]:
    """Every job (or those named) once, in order; none starts once ``stop_requested()`` says so."""
    jobs = [JOBS_BY_ID[j] for j in only] if only else list(JOBS)
    runs = []
    for job in jobs:
        if stop_requested():
            break
        runs.append(run_job(job, now))
    return runs


# --- the one-scheduler lock ----------------------------------------------------------

ADVISORY_KEY = zlib.crc32(b"appointment-desk:scheduler")  # a stable 32-bit key
# Whether this session holds the lock: a bigint key shows as classid (high half), objid (low half).
_HOLDS_ADVISORY = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    " AND classid = 0 AND objid = :k AND objsubid = 1 AND granted)"
)
# The lock's connection notices a cut network within about a minute instead of the kernel's hours.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}

HELD, UNREACHABLE, TAKEN = "held", "unreachable", "taken"


class SchedulerLock:
    """Held for the scheduler's lifetime: a PostgreSQL advisory lock on a dedicated
    connection, or an fcntl lock on ``SCHEDULER_LOCK_FILE`` for SQLite. The OS or
    the database frees it when the process dies.

    On PostgreSQL the lock lives as long as its connection: a database restart, a cut network or
    an administrator's ``pg_terminate_backend`` frees it while the scheduler runs on. ``check()``
    (before every job run) finds that out and takes it again on a new connection, unless another
    scheduler took it meanwhile."""

    def __init__(self, app):
        self.app = app
        self.engine = None
        self.conn = None
        self.fh = None
        self.dialect = None
        self._guard = threading.Lock()  # the jobs' threads share the lock's one connection

    def describe(self) -> str:
        if self.dialect == "postgresql":
            return f"PostgreSQL advisory lock {ADVISORY_KEY}"
        return f"lock file {self.lock_path()}"

    def lock_path(self) -> Path:
        configured = self.app.config.get("SCHEDULER_LOCK_FILE")
        if configured:
            return Path(configured)
        url = db.engine.url
        if url.database and url.database != ":memory:":
            return Path(url.database + ".scheduler.lock")
        return Path(tempfile.gettempdir()) / "appointment-desk-scheduler.lock"

    def try_acquire(self) -> bool:
        import sqlalchemy as sa

        self.dialect = db.engine.dialect.name
        if self.dialect == "postgresql":
            if self.conn is None:
                # Its own engine and connection: never returned to the app's pool.
                connect_args = _KEEPALIVES if db.engine.dialect.driver == "psycopg" else {}
                self.engine = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool, connect_args=connect_args)
                self.conn = self.engine.connect()
            got = self.conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
            self.conn.commit()
            return bool(got)
        path = self.lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.fh is None:
            self.fh = open(path, "a+")  # noqa: SIM115 - held open for the process lifetime
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"{os.getpid()}\n")
        self.fh.flush()
        return True

    def acquire(self, wait: bool = False, poll: float = 5.0, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.try_acquire():
                return True
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(poll)

    def check(self) -> str:
        """``HELD`` when this process still holds the lock (taken again if its connection was
        lost and nobody else took it), ``UNREACHABLE`` when the database cannot be reached to
        find out (no job should run now; ask again later), ``TAKEN`` when another scheduler holds
        it now (this one must stop). Needs an app context."""
        import sqlalchemy as sa

        if self.dialect != "postgresql":
            return HELD if self.fh is not None else TAKEN  # a lock file is held while it is open
        with self._guard:
            if self.conn is not None:
                try:
                    held = self.conn.execute(sa.text(_HOLDS_ADVISORY), {"k": ADVISORY_KEY}).scalar()
                    self.conn.commit()
                    if held:
                        return HELD
                except Exception as exc:  # noqa: BLE001 - a cut connection, whatever the driver says
                    log.warning("scheduler lock: its database connection was lost (%s)", type(exc).__name__)
            self._close_connection()
            try:
                got = self.try_acquire()
            except Exception as exc:  # noqa: BLE001 - the database is down or unreachable
                self._close_connection()
                # Once per job run while it lasts: the scheduler's OutageNotice tells the story.
                log.debug("scheduler lock: cannot reach the database to take it again (%s)", type(exc).__name__)
                return UNREACHABLE
            if got:
                log.warning("scheduler lock: lost with its database connection, taken again")
                return HELD
            return TAKEN

    def _close_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        if self.engine is not None:
            self.engine.dispose()
        self.conn = self.engine = None

    def release(self) -> None:
        import sqlalchemy as sa

        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                self.conn.commit()
        self._close_connection()
        if self.fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
