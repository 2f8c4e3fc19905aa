"""Speed-to-lead SLA, stale assignments and the unreachable rule (SPEC 4, 7).

- SLA: first contact within ``SLA_MINUTES`` (15) counted inside business hours
  (``BUSINESS_HOURS`` 08:00-20:00, ``BUSINESS_DAYS`` mon-fri, ``BUSINESS_TIMEZONE``)
  while the patient may be called (``CALLING_WINDOW``/``CALLING_DAYS`` in the patient's zone).
  A lead submitted on Saturday night is due 15 minutes after Monday's first callable minute;
  a Californian's overnight lead 15 minutes after 09:00 in California, not 08:15 in New York,
  when nobody may call them yet.
  A lead past its deadline without a first contact is flagged (``sla_breached_at``,
  event ``sla_breached``) and every active admin gets one notification per lead.
- Stale: an assigned lead nobody has touched for ``STALE_ASSIGNMENT_HOURS`` (24),
  with no follow-up planned, returns to the pool (event ``unassigned``).
- Unreachable: a lead still ``attempting`` after ``UNREACHABLE_ATTEMPTS`` (6)
  unanswered attempts, the first at least ``UNREACHABLE_DAYS`` (10) days ago, is
  closed ``lost/unreachable``.

Every sweep claims a row with a conditional UPDATE before acting, so two runners
never act twice on one lead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Lead, LeadEvent, Patient
from crm.models.enums import EventKind, LeadStatus, LostReason
from crm.services import followups
from crm.services.calling_window import DEFAULT_DAYS, DEFAULT_WINDOW, Window, _local_at, make_window, zone
from crm.services.notifications import active_admins, notify
from crm.services.timeline import add_event
from crm.templating import age

log = logging.getLogger(__name__)

OPEN = [s.value for s in (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED, LeadStatus.BOOKED)]
WORKABLE = [s.value for s in (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED)]


@dataclass(frozen=True)
class SlaConfig:
    minutes: int = 15
    hours: str = "08:00-20:00"
    days: str = "mon,tue,wed,thu,fri"
    timezone: str = "America/New_York"
    calling_hours: str = DEFAULT_WINDOW  # the patient's calling window (their own zone)
    calling_days: str = DEFAULT_DAYS

    @classmethod
    def from_config(cls, config) -> SlaConfig:
        return cls(
            minutes=int(config.get("SLA_MINUTES", 15)),
            hours=config.get("BUSINESS_HOURS") or "08:00-20:00",
            days=config.get("BUSINESS_DAYS") or "mon,tue,wed,thu,fri",
            timezone=config.get("BUSINESS_TIMEZONE") or "America/New_York",
            calling_hours=config.get("CALLING_WINDOW") or DEFAULT_WINDOW,
            calling_days=config.get("CALLING_DAYS") or DEFAULT_DAYS,
        )

    def describe(self) -> str:
        """The business hours in words: "08:00–20:00, Mon–Fri, America/New_York"."""
        return f"{make_window(self.hours, self.days).describe()}, {self.timezone}"


# Business hours and a patient's calling window that never meet (a zone half a world away, odd
# settings): after this many days without a minute in both, the deadline counts business hours only.
_NO_OVERLAP_DAYS = 14


def _open_spans(start: datetime, window: Window, tz) -> Iterator[tuple[datetime, datetime]]:
    """The window's opening hours from ``start`` on, in order, as aware (from, to) pairs."""
    cursor = start.astimezone(tz)
    for _ in range(3700):  # at most ~10 years of days; a window always exists
        day = cursor.date()
        if day.weekday() in window.days:
            opens, closes = _local_at(day, window.start, tz), _local_at(day, window.end, tz)
            if max(cursor, opens) < closes:
                yield max(cursor, opens), closes
        cursor = _local_at(day + timedelta(days=1), time(0, 0), tz)
    raise AssertionError("business hours never open")


def _within(a: datetime, b: datetime, window: Window, tz) -> Iterator[tuple[datetime, datetime]]:
    """The parts of [a, b) inside ``window`` in ``tz``, in order."""
    first, last = a.astimezone(tz).date() - timedelta(days=1), b.astimezone(tz).date()
    day = first
    while day <= last:
        if day.weekday() in window.days:
            lo, hi = max(a, _local_at(day, window.start, tz)), min(b, _local_at(day, window.end, tz))
            if lo < hi:
                yield lo, hi
        day += timedelta(days=1)


def sla_deadline(created_at: datetime, cfg: SlaConfig, patient_tz: str | None = None) -> datetime:
    """When the first contact is due: ``cfg.minutes`` after ``created_at`` counted while the desk is
    open and, given the patient's zone, while the patient may be called (pure)."""
    business, desk = make_window(cfg.hours, cfg.days), zone(cfg.timezone)
    calling = make_window(cfg.calling_hours, cfg.calling_days) if patient_tz else None
    remaining = timedelta(minutes=cfg.minutes)
    for opens, closes in _open_spans(created_at, business, desk):
        spans = _within(opens, closes, calling, zone(patient_tz)) if calling else [(opens, closes)]
        for lo, hi in spans:
            if remaining <= hi - lo:
                return (lo + remaining).astimezone(UTC)
            remaining -= hi - lo
        if (
            calling
            and remaining == timedelta(minutes=cfg.minutes)
            and opens - created_at > timedelta(days=_NO_OVERLAP_DAYS)
        ):
            return sla_deadline(created_at, cfg)
    raise AssertionError("business hours never open")


def patient_zone(timezone: str | None, zip_code: str | None, cfg: SlaConfig) -> str:
    """The zone whose calling window the clock follows: the patient's, else the desk's (calls to a
    patient of unknown zone are refused by the desk's clock too). One rule for the queue and the sweep."""
    return followups.zone_of(timezone, zip_code) or cfg.timezone


def lead_deadline(lead: Lead, cfg: SlaConfig) -> datetime:
    """``sla_deadline`` for a lead, in its patient's zone."""
    patient = lead.patient
    tz = patient_zone(patient.timezone, patient.zip, cfg) if patient is not None else cfg.timezone
    return sla_deadline(lead.created_at, cfg, tz)


def sla_state(lead: Lead, now: datetime, cfg: SlaConfig) -> dict | None:
    """For the queue row: None once contacted/closed, else {breached, due_at, minutes}."""
    if lead.first_contact_at is not None or lead.status not in (LeadStatus.NEW, LeadStatus.ATTEMPTING):
        return None
    due = lead_deadline(lead, cfg)
    if lead.sla_due_at is not None and lead.sla_due_at > due:
        due = lead.sla_due_at
    delta = int((due - now).total_seconds() // 60)
    return {"breached": lead.sla_breached_at is not None or due <= now, "due_at": due, "minutes": delta}


def sla_sweep(now: datetime, cfg: SlaConfig, limit: int = 500) -> dict[str, int]:
    """Flag leads past their speed-to-lead deadline and escalate each to the admins once."""
    naive_cutoff = now - timedelta(minutes=cfg.minutes)
    rows = db.session.execute(
        sa.select(Lead.id, Lead.created_at, Lead.sla_due_at, Patient.timezone, Patient.zip)
        .join(Patient, Patient.id == Lead.patient_id)
        .where(
            sa.text("leads.status IN ('new', 'attempting')"),  # literal: matches ix_leads_sla_pending
            Lead.first_contact_at.is_(None),
            Lead.sla_breached_at.is_(None),
            sa.or_(Lead.sla_due_at <= now, sa.and_(Lead.sla_due_at.is_(None), Lead.created_at <= naive_cutoff)),
        )
        .order_by(Lead.sla_due_at)
        .limit(limit)
    ).all()
    counts = {"breached": 0, "rescheduled": 0, "notified": 0}
    admins = None
    for lead_id, created_at, _stored_due, patient_tz, patient_zip in rows:
        due = sla_deadline(created_at, cfg, patient_zone(patient_tz, patient_zip, cfg))
        if due > now:
            # Outside business hours the clock stops: remember the real deadline.
            db.session.execute(sa.update(Lead.__table__).where(Lead.__table__.c.id == lead_id).values(sla_due_at=due))
            counts["rescheduled"] += 1
            continue
        claimed = db.session.execute(
            sa.update(Lead.__table__)
            .where(Lead.__table__.c.id == lead_id, Lead.__table__.c.sla_breached_at.is_(None))
            .values(sla_breached_at=now, sla_due_at=due, escalated_at=now)
        ).rowcount
        if claimed != 1:
            continue
        lead = db.session.get(Lead, lead_id)
        add_event(lead, EventKind.SLA_BREACHED, {"due_at": due.isoformat(), "minutes": cfg.minutes}, at=now)
        if admins is None:
            admins = active_admins()
        late = int((now - due).total_seconds() // 60)
        # The sweep runs every minute, so most breaches are found within it: "by 0 min" reads as none.
        # As the queue shows ages: a lead that waited over a weekend is "by 2d 4h", not "by 3120 min".
        by = f" by {age(due, now)}" if late >= 1 else ""
        who = "unassigned" if lead.assignee is None else f"assigned to {lead.assignee.name}, not contacted yet"
        for admin in admins:
            counts["notified"] += notify(
                admin,
                "sla_escalation",
                f"Lead #{lead.id} missed the {cfg.minutes}-minute speed-to-lead target{by} ({who}).",
                lead=lead,
                dedupe_key=f"sla:{lead.id}:{admin.id}",
                at=now,
            )
        counts["breached"] += 1
    db.session.flush()
    return counts


def stale_sweep(now: datetime, hours: int, limit: int = 500) -> int:
    """Return leads assigned but untouched for ``hours`` (and with nothing planned) to the pool."""
    cutoff = now - timedelta(hours=hours)
    t = Lead.__table__.c
    ids = db.session.scalars(
        sa.select(Lead.id)
        .where(
            Lead.assignee_id.is_not(None),
            sa.text("leads.status IN ('new', 'attempting', 'contacted')"),  # ix_leads_assigned_workable
            Lead.assigned_at <= cutoff,
            sa.or_(Lead.last_activity_at.is_(None), Lead.last_activity_at <= cutoff),
            sa.or_(Lead.next_follow_up_at.is_(None), Lead.next_follow_up_at <= cutoff),
        )
        .order_by(Lead.assigned_at)
        .limit(limit)
    ).all()
    returned = 0
    for lead_id in ids:
        lead = db.session.get(Lead, lead_id)
        previous = lead.assignee_id
        claimed = db.session.execute(
            sa.update(Lead.__table__)
            .where(t.id == lead_id, t.assignee_id == previous, t.assigned_at <= cutoff)
            # A note or call since the look-up (a note no longer changes the version) keeps the lead.
            .where(sa.or_(t.last_activity_at.is_(None), t.last_activity_at <= cutoff))
            .values(assignee_id=None, assigned_at=None, version=t.version + 1, updated_at=now)
        ).rowcount
        if claimed != 1:
            continue
        db.session.expire(lead)
        followups.hand_over(lead, None, now)
        add_event(lead, EventKind.UNASSIGNED, {"from": previous, "reason": f"untouched for {hours} h"}, at=now)
        returned += 1
    db.session.flush()
    return returned


def unreachable_sweep(now: datetime, attempts: int, days: int, limit: int = 500) -> int:
    """Close ``lost/unreachable`` the leads still attempting after N attempts over D days."""
    from crm.services.workflow import TransitionError, change_status

    cutoff = now - timedelta(days=days)
    t = Lead.__table__.c
    # Reopened by an admin since the cutoff: its attempts count from the reopening, D days have
    # not passed. Left out in SQL, so a few hundred of them never hold the batch up.
    reopened_since = sa.exists().where(
        LeadEvent.lead_id == Lead.id,
        LeadEvent.kind == EventKind.STATUS_CHANGED,
        LeadEvent.created_at > cutoff,
        LeadEvent.data["from"].as_string() == LeadStatus.LOST.value,
    )
    ids = db.session.scalars(
        sa.select(Lead.id)
        .where(
            sa.text("leads.status = 'attempting'"),
            Lead.attempts >= attempts,
            Lead.first_contact_at <= cutoff,
            ~reopened_since,
        )
        .order_by(Lead.first_contact_at)
        .limit(limit)
    ).all()
    closed = 0
    for lead_id in ids:
        lead = db.session.get(Lead, lead_id)
        claimed = db.session.execute(
            sa.update(Lead.__table__)
            .where(t.id == lead_id, t.status == LeadStatus.ATTEMPTING.value, t.version == lead.version)
            .values(version=t.version + 1)
        ).rowcount
        if claimed != 1:
            continue
        db.session.refresh(lead)
        try:
            change_status(
                lead,
                LeadStatus.LOST,
                actor=None,
                reason=LostReason.UNREACHABLE,
                note=f"{lead.attempts} unanswered attempts over {days}+ days",
                now=now,
            )
        except TransitionError:
            continue
        closed += 1
    db.session.flush()
    return closed
