"""Forgetting what is no longer needed, so tables the app writes on every sign-in failure or job
run stay small: the ``housekeeping`` job (crm/jobs.py) runs this hourly.

- ``login_throttles``: a row counts one email's failed sign-ins (crm/services/accounts.py). Once
  its windows (``LOGIN_LOCKOUT`` and 24 hours) and any lock are over it decides nothing, yet a
  stream of made-up emails would keep adding rows; those are deleted.
- ``job_runs``: about ten thousand rows a day. Runs older than ``JOB_RUN_RETENTION_DAYS`` are
  deleted, except each job's latest, which the Routing & jobs page shows.
- Inbox items caught by the form's honeypot (``spam``): kept whole so an admin can replay a real
  patient's request, but what a bot (or a browser's autofill) sent is health information nobody
  asked for: deleted after ``SPAM_RETENTION_DAYS``. Every other inbox item stays (SPEC 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from crm.models import InboxItem, JobRun, LoginThrottle
from crm.models.enums import InboxStatus
from crm.services.accounts import DAILY_WINDOW


@dataclass(frozen=True)
class HousekeepingResult:
    login_throttles: int
    job_runs: int
    spam: int = 0

    def __str__(self) -> str:
        if not (self.login_throttles or self.job_runs or self.spam):
            return ""
        return (
            f"forgot {self.login_throttles} expired sign-in failure count(s), "
            f"{self.job_runs} old job run(s) and {self.spam} old spam inbox item(s)"
        )


def forget_expired_login_throttles(session: Session, now: datetime, lockout: timedelta) -> int:
    """Rows whose counting windows (``lockout`` and the 24-hour one) started longer ago than
    they last and whose lock (if any) is over: the next failure for that email starts new
    windows anyway."""
    window_over = sa.or_(LoginThrottle.window_started_at.is_(None), LoginThrottle.window_started_at < now - lockout)
    day_over = sa.or_(LoginThrottle.day_started_at.is_(None), LoginThrottle.day_started_at < now - DAILY_WINDOW)
    lock_over = sa.or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now)
    result = session.execute(sa.delete(LoginThrottle).where(window_over, day_over, lock_over))
    return result.rowcount or 0


def forget_old_job_runs(session: Session, now: datetime, keep_days: int) -> int:
    latest_per_job = sa.select(sa.func.max(JobRun.id)).group_by(JobRun.job_id)
    result = session.execute(
        sa.delete(JobRun).where(
            JobRun.started_at < now - timedelta(days=keep_days),
            JobRun.id.not_in(latest_per_job.scalar_subquery()),
        )
    )
    return result.rowcount or 0


def forget_old_spam(session: Session, now: datetime, keep_days: int) -> int:
    result = session.execute(
        sa.delete(InboxItem).where(
            InboxItem.status == InboxStatus.SPAM, InboxItem.received_at < now - timedelta(days=keep_days)
        )
    )
    return result.rowcount or 0


def housekeeping(
    session: Session, now: datetime, *, lockout: timedelta, job_run_days: int, spam_days: int = 30
) -> HousekeepingResult:
    result = HousekeepingResult(
        login_throttles=forget_expired_login_throttles(session, now, lockout),
        job_runs=forget_old_job_runs(session, now, job_run_days),
        spam=forget_old_spam(session, now, spam_days),
    )
    session.flush()
    return result
