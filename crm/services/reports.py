"""Report queries (SPEC 10): pure functions over an explicit date range.

Every number is aggregated in the database (GROUP BY, window functions); Python only
receives grouped rows. Definitions are in docs/reports.md. The same SQL runs on SQLite
and PostgreSQL: percentiles use the nearest-rank method with ``row_number()`` and
``count()`` windows (SQLite has no ``percentile_cont``), day buckets come from hourly
UTC buckets mapped to the desk's time zone in Python (SQLite has no time zones).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from crm.models import Appointment, Condition, Lead, Patient, Physician, User, WebhookSource
from crm.models.enums import AppointmentStatus, LeadSourceKind, LeadStatus, LostReason, Role
from crm.services import spreadsheet

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
STAGES = ("new", "contacted", "booked", "completed")
# A lost lead closed for one of these reasons was reached: only a conversation tells us.
CONVERSATION_REASONS = (LostReason.NOT_INTERESTED, LostReason.PRICE, LostReason.CHOSE_ELSEWHERE)
OPEN = (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED, LeadStatus.BOOKED)


@dataclass(frozen=True)
class ReportRange:
    """Whole days ``start``..``end`` (both included) in the desk's time zone ``tz``."""

    start: date
    end: date
    tz: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def day_start(self, day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=self.zone).astimezone(UTC)

    @property
    def utc_from(self) -> datetime:
        return self.day_start(self.start)

    @property
    def utc_to(self) -> datetime:  # exclusive
        return self.day_start(self.end + timedelta(days=1))


def default_range(today: date, tz: str) -> ReportRange:
    return ReportRange(today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today, tz)


def today_in(tz: str, now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(tz)).date()


# --- portable SQL pieces ------------------------------------------------------------------------


def _no_jit(session) -> None:
    """PostgreSQL's JIT costs 30+ ms of compilation per aggregate here and saves nothing at
    these sizes; turn it off for the rest of this transaction only."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL jit = off"))


def _seconds_between(session, later, earlier):
    """Whole seconds from ``earlier`` to ``later`` on either database."""
    if session.get_bind().dialect.name == "postgresql":
        diff = sa.extract("epoch", later - earlier)
    else:
        # julianday is a float of days: 7199.5 s comes back as 7199.4999..., which would round down
        # where PostgreSQL's exact epoch rounds up. To the millisecond first, then to the second.
        diff = sa.func.round((sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0, 3)
    return sa.cast(sa.func.round(diff), sa.Integer)


# Speed to lead is reported at the resolution a desk reads it, and bounded so the rollup can keep a
# histogram: whole minutes below 2 h, quarter hours below 24 h, whole hours below 7 days, whole days
# beyond. A value is its bucket's lower bound (59 s reads as 0 min, 2 h 14 min as 2 h). Bucketing is
# monotonic, so the nearest-rank percentile of the buckets is the bucket of the exact percentile.
FIRST_CONTACT_BANDS = ((2 * 3600, 60), (24 * 3600, 900), (7 * 86400, 3600))
FIRST_CONTACT_BEYOND = 86400


def first_contact_bucket(seconds: int) -> int:
    """The reported value for a first contact ``seconds`` after creation (same as the SQL below)."""
    for limit, step in FIRST_CONTACT_BANDS:
        if seconds < limit:
            return int(seconds / step) * step  # truncates toward zero, like integer division in SQL
    return int(seconds / FIRST_CONTACT_BEYOND) * FIRST_CONTACT_BEYOND


def _int(value: int):
    return sa.literal_column(str(int(value)), sa.Integer)


def first_contact_bucket_sql(seconds):
    """``first_contact_bucket`` in SQL over an integer expression (integer division on both databases)."""
    whens = [(seconds < _int(limit), (seconds // _int(step)) * _int(step)) for limit, step in FIRST_CONTACT_BANDS]
    beyond = _int(FIRST_CONTACT_BEYOND)
    return sa.case(*whens, else_=(seconds // beyond) * beyond)


def _hour_bucket(session, column):
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.date_trunc("hour", column)
    return sa.func.substr(column, 1, 13)  # stored as "YYYY-MM-DD HH:MM:SS.ffffff"


def _as_utc_hour(value) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value[:13], "%Y-%m-%d %H").replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def reported_lead():
    """Leads the reports count: not one made by an admin's test delivery (``Lead.is_test``,
    crm/services/sources.py). Read from ``ix_leads_report`` like the other columns."""
    return sa.not_(Lead.is_test)


def _in_range(rng: ReportRange):
    return (Lead.created_at >= rng.utc_from, Lead.created_at < rng.utc_to, reported_lead())


def not_a_test_leads_appointment():
    """Utilisation leaves out appointments of test leads. NOT EXISTS, so neither database needs
    to find the test leads by scanning: PostgreSQL may hash them from the partial index
    ``ix_leads_test`` (migration 0014), SQLite (whose planner passes that index over without
    statistics) looks each lead up by its key."""
    test = aliased(Lead, name="test_lead")
    return ~sa.exists().where(test.id == Appointment.lead_id, test.is_test)


def _booked_leads(rng: ReportRange):
    """Leads with an appointment, as a DISTINCT set to LEFT JOIN (a join spills to disk properly;
    a big ``IN (subquery)`` that no longer fits work_mem turns into a scan per lead on PostgreSQL).
    An appointment is created after its lead, so only those created since the range began count."""
    return (
        sa.select(Appointment.lead_id.label("lead_id"))
        .where(Appointment.created_at >= rng.utc_from)
        .distinct()
        .subquery("booked_leads")
    )


def _stage_expr(booked):
    """Furthest funnel stage a lead reached: 0 new, 1 contacted, 2 booked, 3 completed. A stage once
    reached stays reached: a booking later cancelled, a reached patient later lost or reopened."""
    has_appt = booked.c.lead_id.is_not(None)
    return sa.case(
        (Lead.status == LeadStatus.COMPLETED, 3),
        (Lead.status == LeadStatus.BOOKED, 2),
        (has_appt, 2),
        (Lead.reached_at.is_not(None), 1),
        (Lead.status == LeadStatus.CONTACTED, 1),
        (sa.and_(Lead.status == LeadStatus.LOST, Lead.lost_reason.in_(CONVERSATION_REASONS)), 1),
        else_=0,
    )


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


# --- where the counts come from ------------------------------------------------------------------


class LiveCounts:
    """The reference: every count read straight from leads, patients and appointments.

    ``crm.services.report_rollups.RollupCounts`` answers the same five questions from the per-day
    rollups (what the page reads); the report functions below take either as ``counts`` and use
    this one when none is given. Tests check that both give the same report.
    """

    def __init__(self, session):
        self.session = session

    def per_day(self, rng: ReportRange) -> dict[date, int]:
        """New leads per local day (days without leads may be missing)."""
        session = self.session
        _no_jit(session)
        bucket = _hour_bucket(session, Lead.created_at).label("hour")
        rows = session.execute(sa.select(bucket, sa.func.count()).where(*_in_range(rng)).group_by(bucket)).all()
        counts: dict[date, int] = {}
        zone = rng.zone
        for hour, n in rows:
            day = _as_utc_hour(hour).astimezone(zone).date()
            counts[day] = counts.get(day, 0) + n
        return counts

    def funnel_groups(self, rng: ReportRange) -> list[tuple]:
        """``(assignee_id, status, stage, waiting, sla, n)`` groups of the leads of the range."""
        _no_jit(self.session)
        booked = _booked_leads(rng)
        stage = _stage_expr(booked).label("stage")
        waiting = _waiting_expr().label("waiting")
        sla = _sla_expr().label("sla")
        stmt = (
            sa.select(Lead.assignee_id, Lead.status, stage, waiting, sla, sa.func.count())
            .select_from(Lead)
            .outerjoin(booked, booked.c.lead_id == Lead.id)
            .where(*_in_range(rng))
            .group_by(Lead.assignee_id, Lead.status, stage, waiting, sla)
        )
        return [tuple(row) for row in self.session.execute(stmt).all()]

    def first_contact_ranks(self, rng: ReportRange) -> tuple[int, dict[int, int], dict[int, int]]:
        """(n, overall value by rank, median per assignee), nearest-rank on both databases.

        PostgreSQL: ``percentile_disc`` is exactly nearest rank (the first value whose position
        reaches p·n) and, with GROUPING SETS, one scan without materialising row numbers.
        SQLite: ``row_number()``/``count()`` windows keep the same ranks.
        """
        session = self.session
        _no_jit(session)
        d = (
            sa.select(Lead.assignee_id.label("uid"), _bucket_column(session).label("s"))
            .where(*_in_range(rng), Lead.first_contact_at.is_not(None))
            .subquery("d")
        )
        if session.get_bind().dialect.name == "postgresql":
            return _first_contact_ranks_pg(session, d)
        ranked = sa.select(
            d.c.uid,
            d.c.s,
            sa.func.row_number().over(order_by=d.c.s).label("rn"),
            sa.func.count().over().label("n"),
            sa.func.row_number().over(partition_by=d.c.uid, order_by=d.c.s).label("urn"),
            sa.func.count().over(partition_by=d.c.uid).label("un"),
        ).subquery()
        r = ranked.c
        rows = session.execute(
            sa.select(r.uid, r.s, r.rn, r.n, r.urn, r.un).where(
                sa.or_(
                    r.rn == (r.n + 1) // 2,
                    r.rn == (9 * r.n + 9) // 10,
                    sa.and_(r.uid.is_not(None), r.urn == (r.un + 1) // 2),
                )
            )
        ).all()
        n = rows[0].n if rows else 0
        overall = {row.rn: row.s for row in rows}
        medians = {row.uid: row.s for row in rows if row.uid is not None and row.urn == (row.un + 1) // 2}
        return n, overall, medians

    def breakdown_groups(self, rng: ReportRange) -> tuple[dict, dict, dict]:
        """Leads by ``(source_kind, webhook_source_id)``, by condition id and by state, one grouped scan."""
        _no_jit(self.session)
        stmt = (
            sa.select(Lead.source_kind, Lead.webhook_source_id, Lead.condition_id, Patient.state, sa.func.count())
            .select_from(Lead)
            .join(Patient, Patient.id == Lead.patient_id)
            .where(*_in_range(rng))
            .group_by(Lead.source_kind, Lead.webhook_source_id, Lead.condition_id, Patient.state)
        )
        sources: dict = {}
        conditions: dict = {}
        states: dict = {}
        for kind, source_id, condition_id, state, n in self.session.execute(stmt).all():
            key = (kind, source_id)
            sources[key] = sources.get(key, 0) + n
            conditions[condition_id] = conditions.get(condition_id, 0) + n
            states[state] = states.get(state, 0) + n
        return sources, conditions, states

    def bookings(self, rng: ReportRange):
        """Subquery ``(pid, n)``: appointments not cancelled starting in the range, per physician."""
        _no_jit(self.session)
        return (
            sa.select(Appointment.physician_id.label("pid"), sa.func.count().label("n"))
            .where(
                Appointment.starts_at >= rng.utc_from,
                Appointment.starts_at < rng.utc_to,
                Appointment.status != AppointmentStatus.CANCELLED,
                not_a_test_leads_appointment(),
            )
            .group_by(Appointment.physician_id)
            .subquery("counts")
        )


def _waiting_expr():
    """True for an open lead nobody has tried to contact yet."""
    return sa.case(
        (sa.and_(Lead.first_contact_at.is_(None), Lead.status.in_([LeadStatus.NEW, LeadStatus.ATTEMPTING])), sa.true()),
        else_=sa.false(),
    )


SLA_PENDING, SLA_MET, SLA_MISSED = 0, 1, 2


def _sla_expr():
    """The speed-to-lead target of a lead: missed once the SLA sweep flagged it (``sla_breached_at``,
    the flag that escalated it to the admins; business hours counted), met with a first contact
    and no flag, else not decided yet (waiting, or closed without a contact attempt)."""
    return sa.case(
        (Lead.sla_breached_at.is_not(None), _int(SLA_MISSED)),
        (Lead.first_contact_at.is_not(None), _int(SLA_MET)),
        else_=_int(SLA_PENDING),
    )


def _bucket_column(session):
    """Speed to lead of a lead in reported buckets (``first_contact_bucket``)."""
    return first_contact_bucket_sql(_seconds_between(session, Lead.first_contact_at, Lead.created_at))


def _first_contact_ranks_pg(session, d) -> tuple[int, dict[int, int], dict[int, int]]:
    stmt = (
        sa.select(
            sa.func.grouping(d.c.uid).label("overall"),
            d.c.uid,
            sa.func.count().label("n"),
            sa.func.percentile_disc(0.5).within_group(d.c.s).label("median"),
            sa.func.percentile_disc(0.9).within_group(d.c.s).label("p90"),
        )
        .select_from(d)
        .group_by(sa.text("GROUPING SETS ((), (d.uid))"))
    )
    n, overall, medians = 0, {}, {}
    for row in session.execute(stmt).all():
        if row.overall:
            n = row.n
            overall = {(n + 1) // 2: row.median, (9 * n + 9) // 10: row.p90} if n else {}
        elif row.uid is not None:
            medians[row.uid] = row.median
    return n, overall, medians


def _counts(session, counts):
    return counts if counts is not None else LiveCounts(session)


# --- the reports ---------------------------------------------------------------------------------


def leads_per_day(session, rng: ReportRange, counts=None) -> list[tuple[date, int]]:
    """New leads per local day, every day of the range present (zero days too)."""
    per_day = _counts(session, counts).per_day(rng)
    days = (rng.start + timedelta(days=k) for k in range(rng.days))
    return [(day, per_day.get(day, 0)) for day in days]


@dataclass
class SpecialistRow:
    user_id: int
    name: str
    assigned: int = 0
    contacted: int = 0
    booked: int = 0
    median_first_contact_seconds: int | None = None
    active: bool = True
    sla_met: int = 0
    sla_missed: int = 0

    @property
    def label(self) -> str:
        """The name as the page and the CSV show it: a deactivated user still holding leads is marked."""
        return self.name if self.active else f"{self.name} (inactive)"

    @property
    def conversion(self) -> float | None:
        return _pct(self.booked, self.assigned)

    @property
    def within_sla(self) -> float | None:
        """Of the leads whose speed-to-lead target is decided, the share that met it."""
        return _pct(self.sla_met, self.sla_met + self.sla_missed)


@dataclass
class Funnel:
    stages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    open: int = 0
    lost: int = 0
    unassigned: int = 0
    waiting: int = 0  # open, no contact attempt yet
    sla_met: int = 0
    sla_missed: int = 0
    # user -> [assigned, contacted, booked, speed-to-lead target met, missed]
    by_assignee: dict[int, list[int]] = field(default_factory=dict)
    # unassigned: [contacted, booked, target met, missed]
    unassigned_reached: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def rows(self) -> list[dict]:
        """One row per stage with the conversion from the previous stage and from new."""
        out, prev = [], None
        total = self.stages["new"]
        for name in STAGES:
            n = self.stages[name]
            out.append(
                {
                    "stage": name,
                    "leads": n,
                    "from_previous_pct": _pct(n, prev) if prev is not None else None,
                    "from_new_pct": _pct(n, total),
                }
            )
            prev = n
        return out


def funnel(session, rng: ReportRange, counts=None) -> Funnel:
    result = Funnel()
    for assignee_id, status, reached, not_attempted, sla, n in _counts(session, counts).funnel_groups(rng):
        result.stages["new"] += n
        result.waiting += n if not_attempted else 0
        met, missed = (n if sla == SLA_MET else 0), (n if sla == SLA_MISSED else 0)
        result.sla_met += met
        result.sla_missed += missed
        for k, name in enumerate(STAGES[1:], start=1):
            if reached >= k:
                result.stages[name] += n
        if status in OPEN:
            result.open += n
        elif status == LeadStatus.LOST:
            result.lost += n
        if assignee_id is None:
            result.unassigned += n
            result.unassigned_reached[0] += n if reached >= 1 else 0
            result.unassigned_reached[1] += n if reached >= 2 else 0
            result.unassigned_reached[2] += met
            result.unassigned_reached[3] += missed
            continue
        row = result.by_assignee.setdefault(assignee_id, [0, 0, 0, 0, 0])
        row[0] += n
        row[1] += n if reached >= 1 else 0
        row[2] += n if reached >= 2 else 0
        row[3] += met
        row[4] += missed
    return result


@dataclass
class SpeedToLead:
    contacted: int  # leads with a first contact attempt
    waiting: int  # open leads of the range not attempted yet
    median_seconds: int | None  # clock time: nights and weekends count
    p90_seconds: int | None
    sla_met: int = 0  # the speed-to-lead target, counted in business hours (_sla_expr)
    sla_missed: int = 0

    @property
    def within_sla(self) -> float | None:
        return _pct(self.sla_met, self.sla_met + self.sla_missed)


def _first_contact_ranks(session, rng: ReportRange, counts=None) -> tuple[int, dict[int, int], dict[int, int]]:
    return _counts(session, counts).first_contact_ranks(rng)


def speed_to_lead(session, rng: ReportRange, result: Funnel | None = None, ranks=None, counts=None) -> SpeedToLead:
    """Lead created -> first contact attempt, in reported buckets; nearest-rank median and p90."""
    n, overall, _ = ranks or _first_contact_ranks(session, rng, counts)
    result = result or funnel(session, rng, counts)
    target = {"sla_met": result.sla_met, "sla_missed": result.sla_missed}
    if not n:
        return SpeedToLead(0, result.waiting, None, None, **target)
    return SpeedToLead(n, result.waiting, overall.get((n + 1) // 2), overall.get((9 * n + 9) // 10), **target)


def median_first_contact_by_assignee(session, rng: ReportRange, counts=None) -> dict[int, int]:
    return _first_contact_ranks(session, rng, counts)[2]


def specialists(
    session, rng: ReportRange, result: Funnel | None = None, ranks=None, counts=None
) -> list[SpecialistRow]:
    """Active specialists plus anyone holding leads of the range, by current assignee."""
    result = result or funnel(session, rng, counts)
    medians = (ranks or _first_contact_ranks(session, rng, counts))[2]
    ids = set(result.by_assignee)
    users = session.execute(
        sa.select(User.id, User.name, User.active).where(
            sa.or_(User.id.in_(ids), sa.and_(User.role == Role.SPECIALIST, User.active.is_(True)))
        )
    ).all()
    rows = []
    for uid, name, active in users:
        assigned, contacted, booked, met, missed = result.by_assignee.get(uid, [0, 0, 0, 0, 0])
        rows.append(SpecialistRow(uid, name, assigned, contacted, booked, medians.get(uid), bool(active), met, missed))
    return sorted(rows, key=lambda r: (-r.assigned, r.name.lower()))


UNASSIGNED_LABEL = "Unassigned"


def unassigned_row(result: Funnel) -> SpecialistRow:
    """The leads of the range nobody holds, as a specialists-table row, so the rows add up to "new".
    No median: the first-contact percentiles are kept per assignee only."""
    contacted, booked, met, missed = result.unassigned_reached
    return SpecialistRow(0, UNASSIGNED_LABEL, result.unassigned, contacted, booked, sla_met=met, sla_missed=missed)


def _breakdown(rows, label) -> list[dict]:
    total = sum(n for _, n in rows)
    out = [{"label": label(key), "leads": n, "share_pct": _pct(n, total)} for key, n in rows]
    return sorted(out, key=lambda r: (-r["leads"], r["label"]))


_SOURCE_NAMES = {LeadSourceKind.FORM: "Request form", LeadSourceKind.MANUAL: "Entered by staff"}


def breakdowns(session, rng: ReportRange, counts=None) -> dict[str, list[dict]]:
    """Leads by source, state and condition (a few thousand groups at most)."""
    sources, conditions, states = _counts(session, counts).breakdown_groups(rng)
    source_names = dict(
        session.execute(
            sa.select(WebhookSource.id, WebhookSource.name).where(
                WebhookSource.id.in_([sid for _, sid in sources if sid is not None])
            )
        ).all()
    )
    condition_names = dict(
        session.execute(
            sa.select(Condition.id, Condition.name).where(
                Condition.id.in_([cid for cid in conditions if cid is not None])
            )
        ).all()
    )

    def source_label(key):
        kind, source_id = key
        if source_id is not None:
            return f"Webhook: {source_names.get(source_id, f'#{source_id}')}"
        return _SOURCE_NAMES.get(kind, str(kind).replace("_", " ").capitalize())

    return {
        "sources": _breakdown(list(sources.items()), source_label),
        "states": _breakdown(list(states.items()), lambda st: st or "Unknown"),
        "conditions": _breakdown(
            list(conditions.items()), lambda cid: condition_names.get(cid, "Not specified") if cid else "Not specified"
        ),
    }


def by_source(session, rng: ReportRange, counts=None) -> list[dict]:
    return breakdowns(session, rng, counts)["sources"]


def by_state(session, rng: ReportRange, counts=None) -> list[dict]:
    return breakdowns(session, rng, counts)["states"]


def by_condition(session, rng: ReportRange, counts=None) -> list[dict]:
    return breakdowns(session, rng, counts)["conditions"]


def utilisation(session, rng: ReportRange, counts=None, *, idle: bool = False) -> list[dict]:
    """Appointments (not cancelled) starting in the range against each physician's weekly capacity.
    ``idle``: also every active physician without one (0 %), after the others (the CSV)."""
    booked = _counts(session, counts).bookings(rng)
    stmt = sa.select(
        Physician.id,
        Physician.first_name,
        Physician.last_name,
        Physician.credential,
        Physician.state,
        Physician.weekly_capacity,
        sa.func.coalesce(booked.c.n, 0),
    )
    if idle:
        stmt = stmt.outerjoin(booked, booked.c.pid == Physician.id).where(
            sa.or_(booked.c.pid.is_not(None), Physician.active.is_(True))
        )
    else:
        stmt = stmt.join(booked, booked.c.pid == Physician.id)
    rows = []
    for pid, first, last, cred, state, weekly, n in session.execute(stmt).all():
        # The percentage is taken over the exact capacity; only the shown capacity is rounded
        # (10 a week over one day is 1.43 visits: one visit is 70 %, not 1/1.4 = 71.4 %).
        capacity = (weekly or 0) * rng.days / 7
        rows.append(
            {
                "physician_id": pid,
                "physician": f"{first} {last}, {cred}",
                "state": state,
                "weekly_capacity": weekly or 0,
                "capacity_in_range": round(capacity, 1),
                "bookings": n,
                "utilisation_pct": round(100.0 * n / capacity, 1) if capacity else None,
            }
        )
    return sorted(rows, key=lambda r: (-(r["utilisation_pct"] or 0), -r["bookings"], r["physician"]))


def idle_physicians(session, rng: ReportRange, counts=None) -> int:
    """Active physicians with no appointment (not cancelled) starting in the range: the ones the
    utilisation table, which lists bookings, cannot show."""
    booked = _counts(session, counts).bookings(rng)
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(Physician)
        .outerjoin(booked, booked.c.pid == Physician.id)
        .where(Physician.active.is_(True), booked.c.pid.is_(None))
    )


@dataclass
class Report:
    range: ReportRange
    per_day: list[tuple[date, int]]
    funnel: Funnel
    speed: SpeedToLead
    specialists: list[SpecialistRow]
    unassigned: SpecialistRow
    sources: list[dict]
    states: list[dict]
    conditions: list[dict]
    utilisation: list[dict]
    idle_physicians: int = 0


def build_report(session, rng: ReportRange, counts=None) -> Report:
    counts = _counts(session, counts)
    f = funnel(session, rng, counts)
    ranks = _first_contact_ranks(session, rng, counts)
    parts = breakdowns(session, rng, counts)
    return Report(
        range=rng,
        per_day=leads_per_day(session, rng, counts),
        funnel=f,
        speed=speed_to_lead(session, rng, f, ranks),
        specialists=specialists(session, rng, f, ranks),
        unassigned=unassigned_row(f),
        sources=parts["sources"],
        states=parts["states"],
        conditions=parts["conditions"],
        utilisation=utilisation(session, rng, counts),
        idle_physicians=idle_physicians(session, rng, counts),
    )


# --- CSV export ----------------------------------------------------------------------------------


def _minutes(seconds: int | None) -> int | float | str:
    """Minutes for the CSV: whole (every reported bucket is), "34" rather than "34.0"."""
    if seconds is None:
        return ""
    return seconds // 60 if seconds % 60 == 0 else round(seconds / 60, 1)


def _blank(v):
    return "" if v is None else v


def table(session, rng: ReportRange, name: str, counts=None) -> tuple[list[str], list[list]] | None:
    """(header, rows) of one exportable table, or None for an unknown name."""
    counts = _counts(session, counts)
    if name == "daily":
        return ["day", "new_leads"], [[d.isoformat(), n] for d, n in leads_per_day(session, rng, counts)]
    if name == "funnel":
        f = funnel(session, rng, counts)
        rows = [[r["stage"], r["leads"], _blank(r["from_previous_pct"]), _blank(r["from_new_pct"])] for r in f.rows()]
        return ["stage", "leads", "conversion_from_previous_pct", "conversion_from_new_pct"], rows
    if name == "speed":
        s = speed_to_lead(session, rng, counts=counts)
        return (
            ["leads_attempted", "open_not_attempted", "median_minutes", "p90_minutes"]
            + ["target_met", "target_missed", "within_target_pct"],
            [
                [s.contacted, s.waiting, _minutes(s.median_seconds), _minutes(s.p90_seconds)]
                + [s.sla_met, s.sla_missed, _blank(s.within_sla)]
            ],
        )
    if name == "specialists":
        # The last row holds the unassigned leads (zero included), so "assigned" sums to the new leads.
        f = funnel(session, rng, counts)
        rows = [
            [r.label, r.assigned, r.contacted, r.booked, _blank(r.conversion), _minutes(r.median_first_contact_seconds)]
            + [r.sla_met, r.sla_missed, _blank(r.within_sla)]
            for r in [*specialists(session, rng, f, counts=counts), unassigned_row(f)]
        ]
        header = ["specialist", "assigned", "contacted", "booked", "conversion_pct", "median_first_contact_minutes"]
        return header + ["target_met", "target_missed", "within_target_pct"], rows
    if name in ("sources", "states", "conditions"):
        data = breakdowns(session, rng, counts)[name]
        return [name[:-1], "leads", "share_pct"], [[r["label"], r["leads"], _blank(r["share_pct"])] for r in data]
    if name == "utilisation":
        keys = ["physician_id", "physician", "state", "weekly_capacity", "capacity_in_range", "bookings"]
        rows = [
            [r[k] for k in keys] + [_blank(r["utilisation_pct"])] for r in utilisation(session, rng, counts, idle=True)
        ]
        return keys + ["utilisation_pct"], rows
    return None


TABLES = ("daily", "funnel", "speed", "specialists", "sources", "states", "conditions", "utilisation")


def csv_cell(value) -> object:
    """Neutralise spreadsheet formulas (crm/services/spreadsheet.py)."""
    return spreadsheet.neutralise(value)


# Excel opens a double-clicked CSV as UTF-8 only after a byte order mark (else "JosÃ©").
CSV_BOM = "\ufeff"


def to_csv(header: list[str], rows: list[list]) -> str:
    """UTF-8 text with a BOM (for Excel), header row, CRLF."""
    out = io.StringIO()
    out.write(CSV_BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(h) for h in header])
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return out.getvalue()
