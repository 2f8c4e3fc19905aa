"""``flask crm scheduler``: every background job of SPEC 8, in one process.

    flask --app wsgi crm scheduler            # run forever (APScheduler BlockingScheduler)
    flask --app wsgi crm scheduler --once     # run every job once and exit (tests, ops, cron)
    flask --app wsgi crm scheduler --wait     # stand by until the running scheduler stops

A second scheduler never runs a job twice: it cannot take the lock (PostgreSQL
advisory lock / fcntl lock file) and exits with a message, or waits with --wait.
Web workers (gunicorn) never start it; ``make run`` starts it beside the dev server.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

from crm.cli import crm_cli

log = logging.getLogger("crm.scheduler")


def build_scheduler(app, jobs):
    """A BlockingScheduler with one interval trigger per job; each run gets an app context."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from crm.extensions import db
    from crm.jobs import run_job

    workers = 1 if db.engine.dialect.name == "sqlite" else 2
    scheduler = BlockingScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=workers)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
    )

    def runner(job):
        with app.app_context():
            try:
                run_job(job)
            finally:
                db.session.remove()

    start = datetime.now(UTC) + timedelta(seconds=2)
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


@crm_cli.command("scheduler")
@click.option("--once", is_flag=True, help="Run every job once, then exit.")
@click.option("--wait", is_flag=True, help="If another scheduler holds the lock, wait for it instead of exiting.")
@click.option("--job", "only", multiple=True, help="Only this job id (repeatable).")
@with_appcontext
def scheduler_command(once: bool, wait: bool, only: tuple[str, ...]) -> None:
    """Run the background jobs (geocode retry, routing, SLA, reminders, outbox, ...)."""
    from crm.jobs import JOBS, JOBS_BY_ID, SchedulerLock, run_all

    unknown = [j for j in only if j not in JOBS_BY_ID]
    if unknown:
        raise click.BadParameter(
            f"unknown job(s) {', '.join(unknown)}; known: {', '.join(JOBS_BY_ID)}", param_hint="--job"
        )
    app = current_app._get_current_object()
    lock = SchedulerLock(app)
    if not lock.acquire(wait=False):
        if not wait:
            click.echo(
                f"Another scheduler is already running (it holds the {lock.describe()}); "
                "this one exits without running any job. Use --wait to stand by.",
                err=True,
            )
            sys.exit(1)
        click.echo(f"Another scheduler holds the {lock.describe()}; waiting for it to stop...", err=True)
        lock.acquire(wait=True)
    try:
        if once:
            runs = run_all(only=only)
            for run in runs:
                click.echo(f"{run.job_id:<22} {'ok ' if run.ok else 'ERR'} {run.summary}")
            failed = sum(1 for r in runs if not r.ok)
            click.echo(f"{len(runs)} job(s) run, {failed} not ok.")
            return
        jobs = [JOBS_BY_ID[j] for j in only] if only else list(JOBS)
        scheduler = build_scheduler(app, jobs)

        def stop(signum, frame):
            log.info("scheduler: signal %s, stopping", signum)
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        click.echo(f"Scheduler running {len(jobs)} job(s) ({lock.describe()} held). Ctrl-C stops it.")
        for job in jobs:
            log.info("scheduler: %s every %ss — %s", job.id, job.seconds, job.description)
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            scheduler.start()
    finally:
        lock.release()
