"""``flask crm scheduler``: every background job of SPEC 8, in one process.

    flask --app wsgi crm scheduler            # run until SIGTERM / Ctrl-C (APScheduler BackgroundScheduler)
    flask --app wsgi crm scheduler --once     # run every job once and exit (tests, ops, cron)
    flask --app wsgi crm scheduler --wait     # stand by until the running scheduler stops

A second scheduler never runs a job twice: it cannot take the lock (PostgreSQL
advisory lock / fcntl lock file) and exits with a message, or waits with --wait.
Web workers (gunicorn) never start it; ``make run`` starts it beside the dev server.

It refuses to start on a database whose migrations are not all applied (every job would fail).
SIGTERM or SIGINT stop it cleanly: no new job starts, a running one finishes, the lock is let go
only then, and the process exits 0. Before every job run it checks that it still holds the lock
(SchedulerLock.check); when another scheduler took it over, it stops and exits 1.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

from crm.cli import crm_cli

log = logging.getLogger("crm.scheduler")

LOCK_TAKEN_EXIT = 1  # another scheduler holds the lock (at start, or took it over later)


class Stop:
    """Why and when the scheduler stops: set by a signal, or by a job run that found the lock
    taken over by another scheduler."""

    # A plain flag, polled: a signal handler must not take a lock (threading.Event does) that the
    # main thread it interrupted may be holding.
    def __init__(self) -> None:
        self.requested = False
        self.exit_code = 0
        self.reason = ""
        self.repeated: list[str] = []  # later requests, said once stopping is logged (logging takes a lock)

    def request(self, reason: str, exit_code: int = 0) -> None:
        if self.requested:
            self.repeated.append(reason)
            return
        self.reason, self.exit_code = reason, exit_code
        self.requested = True


class OutageNotice:
    """What the log says while the database does not answer: one warning when it stops, a reminder
    every ``remind`` with the number of job runs skipped, one line when it answers again. A warning
    for every skipped run would be a dozen jobs' worth every minute, burying everything else."""

    def __init__(self, remind: timedelta = timedelta(minutes=5), clock=lambda: datetime.now(UTC)) -> None:
        self.remind, self.clock = remind, clock
        self.since: datetime | None = None
        self.said: datetime | None = None
        self.skipped = 0
        self._lock = threading.Lock()  # job runs may end on two executor threads at once

    def skipped_run(self, job_id: str) -> None:
        with self._lock:
            now = self.clock()
            self.skipped += 1
            if self.since is None:
                self.since = self.said = now
                log.warning("scheduler: the database does not answer; job runs are skipped until it does (%s)", job_id)
            elif now - self.said >= self.remind:
                self.said = now
                minutes = int((now - self.since).total_seconds() // 60)
                log.warning(
                    "scheduler: the database still does not answer (%d min); %d job run(s) skipped so far",
                    minutes,
                    self.skipped,
                )

    def answered(self) -> None:
        with self._lock:
            if self.since is None:
                return
            seconds = int((self.clock() - self.since).total_seconds())
            log.warning(
                "scheduler: the database answers again after %d s; %d job run(s) were skipped", seconds, self.skipped
            )
            self.since = self.said = None
            self.skipped = 0


def build_scheduler(app, jobs, *, lock=None, stop: Stop | None = None, first_run_in: float = 2.0):
    """A BackgroundScheduler with one interval trigger per job; each run gets an app context.

    With ``lock`` (a SchedulerLock), a job starts only once ``lock.check()`` has found the lock
    still held; when another scheduler holds it now, ``stop`` is asked to end this one."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from crm.extensions import db
    from crm.jobs import HELD, TAKEN, run_job

    workers = 1 if db.engine.dialect.name == "sqlite" else 2
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=workers)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
    )

    outage = OutageNotice()

    def runner(job):
        if stop is not None and stop.requested:
            return  # queued before the stop: nothing new starts
        with app.app_context():
            try:
                if lock is not None:
                    state = lock.check()
                    if state == TAKEN:
                        log.error("scheduler: another scheduler took the lock over; %s not run", job.id)
                        if stop is not None:
                            stop.request("another scheduler holds the lock now", LOCK_TAKEN_EXIT)
                        return
                    if state != HELD:  # the lock cannot be checked: the database does not answer
                        outage.skipped_run(job.id)
                        return
                    outage.answered()
                run_job(job)
            finally:
                db.session.remove()

    start = datetime.now(UTC) + timedelta(seconds=first_run_in)
    for i, job in enumerate(jobs):
        scheduler.add_job(
            runner,
            IntervalTrigger(seconds=job.seconds, timezone=UTC),
            args=[job],
            id=job.id,
            name=job.description,
            next_run_time=start + timedelta(seconds=i),  # staggered first runs
            replace_existing=True,
        )
    return scheduler


def run_until_stopped(app, jobs, lock, stop: Stop, *, first_run_in: float = 2.0) -> int:
    """Run the jobs until ``stop`` is requested, then let running jobs finish; the exit code."""
    scheduler = build_scheduler(app, jobs, lock=lock, stop=stop, first_run_in=first_run_in)
    scheduler.start()
    while not stop.requested:
        time.sleep(0.2)
    log.info("scheduler: stopping (%s): no new job starts, waiting for running jobs to finish", stop.reason)
    said = _say_repeated(stop, 0)
    scheduler.shutdown(wait=True)
    _say_repeated(stop, said)  # signals sent while the running jobs finished
    log.info("scheduler: stopped, no job running")
    return stop.exit_code


def _say_repeated(stop: Stop, already: int) -> int:
    """Log the stop requests that came after the first (noted by the signal handler, which must not
    log) and were not logged yet; returns how many are logged now."""
    more = stop.repeated[already:]
    if more:
        log.info("scheduler: also asked to stop by %s while stopping", ", ".join(more))
    return already + len(more)


def _on_signals(stop: Stop):
    """SIGTERM and SIGINT ask ``stop`` to end the scheduler; returns the handlers to put back."""

    def handler(signum, frame):
        stop.request(f"{signal.Signals(signum).name} received")

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


@crm_cli.command("scheduler")
@click.option("--once", is_flag=True, help="Run every job once, then exit.")
@click.option("--wait", is_flag=True, help="If another scheduler holds the lock, wait for it instead of exiting.")
@click.option("--job", "only", multiple=True, help="Only this job id (repeatable).")
@with_appcontext
def scheduler_command(once: bool, wait: bool, only: tuple[str, ...]) -> None:
    """Run the background jobs (geocode retry, routing, SLA, reminders, outbox, ...)."""
    from crm.cli import migration_problem
    from crm.jobs import JOBS, JOBS_BY_ID, SchedulerLock, run_all

    unknown = [j for j in only if j not in JOBS_BY_ID]
    if unknown:
        raise click.BadParameter(
            f"unknown job(s) {', '.join(unknown)}; known: {', '.join(JOBS_BY_ID)}", param_hint="--job"
        )
    problem = migration_problem()
    if problem:
        raise click.ClickException(f"the scheduler does not start: {problem}")
    app = current_app._get_current_object()
    lock = SchedulerLock(app)
    if not lock.acquire(wait=False):
        if not wait:
            click.echo(
                f"Another scheduler is already running (it holds the {lock.describe()}); "
                "this one exits without running any job. Use --wait to stand by.",
                err=True,
            )
            sys.exit(LOCK_TAKEN_EXIT)
        click.echo(f"Another scheduler holds the {lock.describe()}; waiting for it to stop...", err=True)
        lock.acquire(wait=True)
    try:
        if once:
            # SIGTERM or Ctrl-C: the running job finishes, the rest do not start (as for the daemon).
            stop = Stop()
            previous = _on_signals(stop)
            try:
                runs = run_all(only=only, stop_requested=lambda: stop.requested)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            for run in runs:
                # One line per job: an error's SQL or traceback text is in the log and on /admin/routing.
                line = " ".join((run.summary or "").split())
                click.echo(f"{run.job_id:<22} {'ok ' if run.ok else 'ERR'} {line[:300]}")
                if not run.ok:
                    click.echo(f"Error: job {run.job_id} {line[:300]}", err=True)
            failed = sum(1 for r in runs if not r.ok)
            click.echo(f"{len(runs)} job(s) run, {failed} not ok.")
            if stop.requested:
                left = (len(only) if only else len(JOBS)) - len(runs)
                click.echo(f"Stopped early ({stop.reason}): {left} job(s) not started.", err=True)
            if failed:
                sys.exit(1)  # cron and scripts, which --once is for, see that a job failed
            return
        jobs = [JOBS_BY_ID[j] for j in only] if only else list(JOBS)
        stop = Stop()
        previous = _on_signals(stop)
        try:
            click.echo(
                f"Scheduler running {len(jobs)} job(s) ({lock.describe()} held). "
                "Ctrl-C or SIGTERM stops it once running jobs finish."
            )
            for job in jobs:
                log.info("scheduler: %s every %ss — %s", job.id, job.seconds, job.description)
            code = run_until_stopped(app, jobs, lock, stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        lock.release()
    click.echo(f"Scheduler stopped ({stop.reason}).", err=code != 0)
    if code:
        sys.exit(code)
