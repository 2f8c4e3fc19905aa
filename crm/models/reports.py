"""Report rollups (docs/reports.md "Rollups"): per-day counts the /reports page reads instead of leads.

Each ``report_daily_*`` table holds, for one local day of the desk's time zone (``day``), the
counts of one grouping of the leads created that day (or of the appointments starting that day).
They are derived data: ``crm.services.report_rollups`` rebuilds a day by deleting its rows and
inserting the grouped counts again. No foreign keys (nothing refers to these rows and a rebuild
should not pay for checks); the ids they carry are read with the live tables.

``report_changes`` is written by database triggers (migration 0007), never by the application:
one row per insert/update/delete that can move a reported number, holding the time stamp whose
local day must be rebuilt. ``report_rollup_state`` is a single row saying for which time zone the
rollups were built.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base
from crm.models.enums import LeadSourceKind, LeadStatus
from crm.models.types import StrEnumType


class ReportDailyLeads(Base):
    """Leads created on ``day`` by current assignee, status, furthest funnel stage, "waiting" and
    speed-to-lead target (``sla``)."""

    __tablename__ = "report_daily_leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    assignee_id: Mapped[int | None]
    status: Mapped[LeadStatus] = mapped_column(StrEnumType(LeadStatus))
    stage: Mapped[int] = mapped_column(sa.SmallInteger)  # 0 new, 1 contacted, 2 booked, 3 completed
    waiting: Mapped[bool]  # open and no contact attempt yet
    # The speed-to-lead target: 0 not decided yet (no contact, not flagged late), 1 met (a first
    # contact and never flagged), 2 missed (flagged by the SLA sweep). crm.services.reports.SLA_*
    sla: Mapped[int] = mapped_column(sa.SmallInteger, server_default=sa.text("0"))
    n: Mapped[int]

    __table_args__ = (sa.Index("ix_report_daily_leads_day", "day"),)


class ReportDailyFirstContact(Base):
    """Histogram of speed to lead: leads created on ``day`` by assignee and time-to-first-contact bucket."""

    __tablename__ = "report_daily_first_contact"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    assignee_id: Mapped[int | None]
    bucket: Mapped[int]  # seconds, the bucket's lower bound (crm.services.reports.first_contact_bucket)
    n: Mapped[int]

    __table_args__ = (sa.Index("ix_report_daily_first_contact_day", "day"),)


class ReportDailySources(Base):
    __tablename__ = "report_daily_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    source_kind: Mapped[LeadSourceKind] = mapped_column(StrEnumType(LeadSourceKind))
    webhook_source_id: Mapped[int | None]
    n: Mapped[int]

    __table_args__ = (sa.Index("ix_report_daily_sources_day", "day"),)


class ReportDailyConditions(Base):
    __tablename__ = "report_daily_conditions"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    condition_id: Mapped[int | None]
    n: Mapped[int]

    __table_args__ = (sa.Index("ix_report_daily_conditions_day", "day"),)


class ReportDailyStates(Base):
    __tablename__ = "report_daily_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    state: Mapped[str | None] = mapped_column(sa.String(2))
    n: Mapped[int]

    __table_args__ = (sa.Index("ix_report_daily_states_day", "day"),)


class ReportDailyBookings(Base):
    """Appointments not cancelled starting on ``day`` (local), per physician: utilisation."""

    __tablename__ = "report_daily_bookings"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    physician_id: Mapped[int]
    n: Mapped[int]

    __table_args__ = (sa.Index("ix_report_daily_bookings_day", "day"),)


class ReportChange(Base):
    """A time stamp whose local day's rollups are stale; written by triggers only.

    kind ``lead``: a lead created at ``at`` changed (or its patient's state, or its appointments);
    kind ``booking``: an appointment starting at ``at`` changed.
    """

    __tablename__ = "report_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(8))
    at: Mapped[datetime]


class ReportRollupState(Base):
    """One row (id 1) once the rollups have been built: for which time zone, and when."""

    __tablename__ = "report_rollup_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    timezone: Mapped[str] = mapped_column(sa.String(64))
    built_at: Mapped[datetime]
    refreshed_at: Mapped[datetime]
