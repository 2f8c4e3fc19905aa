"""Per-day rollups behind /reports (docs/reports.md "Rollups").

The page reads ``report_daily_*`` (crm/models/reports.py) instead of scanning every lead of the
range: a 30-day page sums a few thousand rollup rows. The rollups are exact, not approximate:

* Each day's rows are the live queries of crm/services/reports.py (the same booked-leads set,
  stage, "waiting" and speed-to-lead bucket expressions) over that one local day, stored by
  ``_rebuild_*`` with one ``INSERT ... SELECT ... GROUP BY`` per table.
* Triggers (migration 0007) append to ``report_changes`` the time stamp of every lead, patient or
  appointment write that can move a number, in the writing transaction. ``refresh_report_rollups``
  takes those rows with one ``DELETE ... RETURNING`` and rebuilds the local days they fall on.
  A transaction that committed before that statement is seen by the rebuild (it runs later);
  one that commits after it leaves its rows for the next refresh. No clock is involved.
* The first refresh (no ``report_rollup_state`` row), a changed ``BUSINESS_TIMEZONE`` or
  ``full=True`` rebuilds every day that has leads or appointments.
* Refreshes are serialised: a PostgreSQL transaction-scoped advisory lock; on SQLite the
  database's single writer lock, taken before anything is read. A second refresh waits, then finds
  the changes already consumed: nothing is counted twice.

The page refreshes before reading (a single indexed probe when nothing changed), the
``report_rollups`` job every minute, ``flask crm reports refresh [--all]`` on demand.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crm.models import (
    Appointment,
    Lead,
    Patient,
    ReportChange,
    ReportDailyBookings,
    ReportDailyConditions,
    ReportDailyFirstContact,
    ReportDailyLeads,
    ReportDailySources,
    ReportDailyStates,
    ReportRollupState,
)
from crm.models.enums import AppointmentStatus
from crm.services import reports
from crm.services.reports import ReportRange
from crm.sqlite_lock import busy_timeout

log = logging.getLogger(__name__)

ADVISORY_KEY = zlib.crc32(b"appointment-desk:report-rollups")  # a stable 32-bit key
LEAD_TABLES = (ReportDailyLeads, ReportDailyFirstContact, ReportDailySources, ReportDailyConditions, ReportDailyStates)
BOOKING_TABLES = (ReportDailyBookings,)
STATE_ID = 1
_DAY_BATCH = 500  # days per "DELETE ... WHERE day IN (...)"


class RefreshBusy(RuntimeError):
    """Another refresh held the lock longer than the caller wanted to wait."""


@dataclass(frozen=True)
class RefreshResult:
    full: bool
    changes: int  # report_changes rows consumed
    lead_days: int  # local days whose lead rollups were rebuilt
    booking_days: int  # local days whose utilisation rollup was rebuilt
    ran: bool = True  # False: nothing had changed, nothing was locked or written

    def __str__(self) -> str:
        if not self.ran:
            return "report rollups: up to date"
        what = "full rebuild" if self.full else f"{self.changes} change(s)"
        return f"report rollups: {what}, {self.lead_days} lead day(s) and {self.booking_days} booking day(s) rebuilt"


def _dialect(session) -> str:
    return session.get_bind().dialect.name


def needs_refresh(session, tz: str) -> bool:
    """True when changes are waiting or the rollups were never built for ``tz`` (one round trip)."""
    t = ReportChange.__table__
    state_tz = (
        sa.select(ReportRollupState.__table__.c.timezone)
        .where(ReportRollupState.__table__.c.id == STATE_ID)
        .scalar_subquery()
    )
    pending = sa.exists(sa.select(t.c.id))
    built_for, waiting = session.execute(sa.select(state_tz, pending)).one()
    return built_for != tz or bool(waiting)


def _lock(session, wait_seconds: float | None) -> None:
    """Serialise refreshes for the rest of this transaction; RefreshBusy after ``wait_seconds``."""
    try:
        if _dialect(session) == "postgresql":
            if wait_seconds is not None:
                session.execute(sa.text(f"SET LOCAL lock_timeout = '{int(wait_seconds * 1000)}ms'"))
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY})
            if wait_seconds is not None:
                session.execute(sa.text("SET LOCAL lock_timeout = 0"))
        else:
            # A write statement (matching no row) takes SQLite's one writer lock now, before the
            # state is read; busy_timeout bounds the wait.
            t = ReportRollupState.__table__
            dbapi_connection = session.connection().connection.dbapi_connection
            with busy_timeout(dbapi_connection, None if wait_seconds is None else int(wait_seconds * 1000)):
                session.execute(sa.update(t).where(t.c.id == -1).values(refreshed_at=t.c.refreshed_at))
    except sa.exc.OperationalError as exc:
        raise RefreshBusy("another report refresh is running") from exc


def refresh_report_rollups(
    session, now: datetime, tz: str, *, full: bool = False, wait_seconds: float | None = None
) -> RefreshResult:
    """Bring the rollups up to date with the live tables (flushes; the caller commits).

    ``wait_seconds``: how long to wait for a concurrent refresh (None: as long as it takes);
    past it, RefreshBusy and the transaction must be rolled back.
    """
    if not full and not needs_refresh(session, tz):
        return RefreshResult(False, 0, 0, 0, ran=False)
    _lock(session, wait_seconds)
    if _dialect(session) == "postgresql":
        # A day is ~10,000 leads at most: parallel workers cost more to start than they save,
        # and each would hash the appointments again. JIT likewise (reports._no_jit).
        session.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
        reports._no_jit(session)
    zone = ZoneInfo(tz)
    st = ReportRollupState.__table__
    state_tz = session.execute(sa.select(st.c.timezone).where(st.c.id == STATE_ID)).scalar()
    changes_t = ReportChange.__table__
    if full or state_tz != tz:
        session.execute(sa.delete(changes_t))
        for model in LEAD_TABLES + BOOKING_TABLES:
            session.execute(sa.delete(model.__table__))
        lead_days = _days_with(session, Lead.created_at, zone)
        booking_days = _days_with(session, Appointment.starts_at, zone)
        changes, rebuilt_all = 0, True
    else:
        rows = session.execute(sa.delete(changes_t).returning(changes_t.c.kind, changes_t.c.at)).all()
        lead_days = {at.astimezone(zone).date() for kind, at in rows if kind == "lead"}
        booking_days = {at.astimezone(zone).date() for kind, at in rows if kind == "booking"}
        _delete_days(session, LEAD_TABLES, lead_days)
        _delete_days(session, BOOKING_TABLES, booking_days)
        changes, rebuilt_all = len(rows), False
    for day in sorted(lead_days):
        _rebuild_lead_day(session, day, zone)
    for day in sorted(booking_days):
        _rebuild_booking_day(session, day, zone)
    if state_tz is None:
        session.execute(sa.insert(st).values(id=STATE_ID, timezone=tz, built_at=now, refreshed_at=now))
    elif rebuilt_all:
        session.execute(sa.update(st).where(st.c.id == STATE_ID).values(timezone=tz, built_at=now))
    session.execute(sa.update(st).where(st.c.id == STATE_ID).values(refreshed_at=now))
    session.flush()
    result = RefreshResult(rebuilt_all, changes, len(lead_days), len(booking_days))
    log.info("%s", result)
    return result


def _days_with(session, column, zone: ZoneInfo) -> set[date]:
    """Local days holding at least one value of ``column`` (from its distinct UTC hours; an hour
    that straddles local midnight in a half-hour zone counts for both days)."""
    hour = reports._hour_bucket(session, column).label("hour")
    days = set()
    for (value,) in session.execute(sa.select(hour).where(column.is_not(None)).group_by(hour)):
        start = reports._as_utc_hour(value)
        days.add(start.astimezone(zone).date())
        days.add((start + timedelta(minutes=59, seconds=59)).astimezone(zone).date())
    return days


def _delete_days(session, models, days: set[date]) -> None:
    ordered = sorted(days)
    for k in range(0, len(ordered), _DAY_BATCH):
        batch = ordered[k : k + _DAY_BATCH]
        for model in models:
            t = model.__table__
            session.execute(sa.delete(t).where(t.c.day.in_(batch)))


def _bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    rng = ReportRange(day, day, zone.key)
    return rng.utc_from, rng.utc_to


def _insert(session, model, columns: list[str], select) -> None:
    session.execute(sa.insert(model.__table__).from_select(columns, select))


def _rebuild_lead_day(session, day: date, zone: ZoneInfo) -> None:
    """The lead rollups of one local day: the live report queries restricted to that day."""
    start, end = _bounds(day, zone)
    in_day = (Lead.created_at >= start, Lead.created_at < end, reports.reported_lead())
    d = sa.literal(day, sa.Date)
    booked = reports._booked_leads(ReportRange(day, day, zone.key))  # the live definition, for this day
    stage = reports._stage_expr(booked).label("stage")
    waiting = reports._waiting_expr().label("waiting")
    sla = reports._sla_expr().label("sla")
    _insert(
        session,
        ReportDailyLeads,
        ["day", "assignee_id", "status", "stage", "waiting", "sla", "n"],
        sa.select(d, Lead.assignee_id, Lead.status, stage, waiting, sla, sa.func.count())
        .select_from(Lead)
        .outerjoin(booked, booked.c.lead_id == Lead.id)
        .where(*in_day)
        .group_by(Lead.assignee_id, Lead.status, stage, waiting, sla),
    )
    speed = (
        sa.select(Lead.assignee_id.label("uid"), reports._bucket_column(session).label("bucket"))
        .where(*in_day, Lead.first_contact_at.is_not(None))
        .subquery("speed")
    )
    _insert(
        session,
        ReportDailyFirstContact,
        ["day", "assignee_id", "bucket", "n"],
        sa.select(d, speed.c.uid, speed.c.bucket, sa.func.count()).group_by(speed.c.uid, speed.c.bucket),
    )
    _insert(
        session,
        ReportDailySources,
        ["day", "source_kind", "webhook_source_id", "n"],
        sa.select(d, Lead.source_kind, Lead.webhook_source_id, sa.func.count())
        .where(*in_day)
        .group_by(Lead.source_kind, Lead.webhook_source_id),
    )
    _insert(
        session,
        ReportDailyConditions,
        ["day", "condition_id", "n"],
        sa.select(d, Lead.condition_id, sa.func.count()).where(*in_day).group_by(Lead.condition_id),
    )
    _insert(
        session,
        ReportDailyStates,
        ["day", "state", "n"],
        sa.select(d, Patient.state, sa.func.count())
        .select_from(Lead)
        .join(Patient, Patient.id == Lead.patient_id)
        .where(*in_day)
        .group_by(Patient.state),
    )


def _rebuild_booking_day(session, day: date, zone: ZoneInfo) -> None:
    start, end = _bounds(day, zone)
    _insert(
        session,
        ReportDailyBookings,
        ["day", "physician_id", "n"],
        sa.select(sa.literal(day, sa.Date), Appointment.physician_id, sa.func.count())
        .where(
            Appointment.starts_at >= start,
            Appointment.starts_at < end,
            Appointment.status != AppointmentStatus.CANCELLED,
            reports.not_a_test_leads_appointment(),
        )
        .group_by(Appointment.physician_id),
    )


# --- reading ---------------------------------------------------------------------------------------


def _nearest_ranks(histogram: Counter, ranks: set[int]) -> dict[int, int]:
    """Value at each 1-based rank of the ascending multiset given as {value: count}."""
    out, seen, wanted = {}, 0, sorted(ranks)
    for value in sorted(histogram):
        seen += histogram[value]
        while wanted and wanted[0] <= seen:
            out[wanted.pop(0)] = value
        if not wanted:
            break
    return out


class RollupCounts:
    """The counts of crm.services.reports.LiveCounts, summed from the rollups of the range's days.

    Refresh first (``refresh_report_rollups``) for numbers equal to the live ones.
    """

    def __init__(self, session, tz: str):
        self.session = session
        self.tz = tz

    def _days(self, model, rng: ReportRange):
        if rng.tz != self.tz:
            raise ValueError(f"rollups are by {self.tz} days, not {rng.tz}")
        return model.day.between(rng.start, rng.end)

    def per_day(self, rng: ReportRange) -> dict[date, int]:
        m = ReportDailyLeads
        rows = self.session.execute(sa.select(m.day, sa.func.sum(m.n)).where(self._days(m, rng)).group_by(m.day))
        return {day: int(n) for day, n in rows}

    def funnel_groups(self, rng: ReportRange) -> list[tuple]:
        m = ReportDailyLeads
        stmt = (
            sa.select(m.assignee_id, m.status, m.stage, m.waiting, m.sla, sa.func.sum(m.n))
            .where(self._days(m, rng))
            .group_by(m.assignee_id, m.status, m.stage, m.waiting, m.sla)
        )
        return [
            (uid, status, stage, waiting, sla, int(n))
            for uid, status, stage, waiting, sla, n in self.session.execute(stmt)
        ]

    def first_contact_ranks(self, rng: ReportRange) -> tuple[int, dict[int, int], dict[int, int]]:
        m = ReportDailyFirstContact
        stmt = (
            sa.select(m.assignee_id, m.bucket, sa.func.sum(m.n))
            .where(self._days(m, rng))
            .group_by(m.assignee_id, m.bucket)
        )
        overall: Counter = Counter()
        per_user: dict[int, Counter] = {}
        for uid, bucket, n in self.session.execute(stmt):
            overall[bucket] += int(n)
            if uid is not None:
                per_user.setdefault(uid, Counter())[bucket] += int(n)
        n = sum(overall.values())
        if not n:
            return 0, {}, {}
        ranks = _nearest_ranks(overall, {(n + 1) // 2, (9 * n + 9) // 10})
        medians = {}
        for uid, hist in per_user.items():
            rank = (sum(hist.values()) + 1) // 2
            medians[uid] = _nearest_ranks(hist, {rank})[rank]
        return n, ranks, medians

    def breakdown_groups(self, rng: ReportRange) -> tuple[dict, dict, dict]:
        s, c, st = ReportDailySources, ReportDailyConditions, ReportDailyStates
        run = self.session.execute
        sources = {
            (kind, sid): int(n)
            for kind, sid, n in run(
                sa.select(s.source_kind, s.webhook_source_id, sa.func.sum(s.n))
                .where(self._days(s, rng))
                .group_by(s.source_kind, s.webhook_source_id)
            )
        }
        conditions = {
            cid: int(n)
            for cid, n in run(
                sa.select(c.condition_id, sa.func.sum(c.n)).where(self._days(c, rng)).group_by(c.condition_id)
            )
        }
        states = {
            state: int(n)
            for state, n in run(sa.select(st.state, sa.func.sum(st.n)).where(self._days(st, rng)).group_by(st.state))
        }
        return sources, conditions, states

    def bookings(self, rng: ReportRange):
        m = ReportDailyBookings
        return (
            sa.select(m.physician_id.label("pid"), sa.func.sum(m.n).label("n"))
            .where(self._days(m, rng))
            .group_by(m.physician_id)
            .subquery("counts")
        )
