"""Settings, caches, outbox, notifications and job bookkeeping."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow
from crm.models.enums import GeocodePrecision, OutboxStatus
from crm.models.types import StrEnumType


class Setting(Base):
    """Admin-editable runtime settings (e.g. auto-assignment on/off)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    value: Mapped[dict | list | str | int | bool | None] = mapped_column(sa.JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GeocodeCache(Base):
    __tablename__ = "geocode_cache"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(40))
    query_key: Mapped[str] = mapped_column(sa.String(400))  # normalised address
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    precision: Mapped[GeocodePrecision | None] = mapped_column(StrEnumType(GeocodePrecision))
    state: Mapped[str | None] = mapped_column(sa.String(2))
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("provider", "query_key", name="uq_geocode_cache_provider_query_key"),)


class OutboxEmail(Base):
    """Mail is written here first and sent by a job (or only stored without SMTP)."""

    __tablename__ = "outbox_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(40))
    to_addr: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(200))
    body_text: Mapped[str] = mapped_column(sa.Text)
    ics: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[OutboxStatus] = mapped_column(StrEnumType(OutboxStatus), default=OutboxStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    # queued: not before this (the backoff after a failed try); sending: the claim's lease ends here
    next_attempt_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    lead_id: Mapped[int | None] = mapped_column(sa.ForeignKey("leads.id"), index=True)
    # The visit an appointment email is about: checked before each try (crm/services/mailer.py).
    appointment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("appointments.id"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (sa.Index("ix_outbox_emails_status_created_at", "status", "created_at"),)


class Notification(Base):
    """In-app message to one user: follow-up reminders, SLA escalations, expiry warnings."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(sa.String(40))
    message: Mapped[str] = mapped_column(sa.String(500))
    lead_id: Mapped[int | None] = mapped_column(sa.ForeignKey("leads.id"))
    # Same key twice is one notification: jobs may run again without spamming.
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]

    __table_args__ = (sa.Index("ix_notifications_user_id_read_at", "user_id", "read_at"),)


class JobRun(Base):
    """One row per scheduled job run: what it did, for admins and for debugging."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(60), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    ok: Mapped[bool] = mapped_column(default=True)
    summary: Mapped[str] = mapped_column(sa.Text, default="")
