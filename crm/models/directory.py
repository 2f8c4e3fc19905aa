"""Conditions, state programs, physicians and their registrations."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.models.base import Base, utcnow
from crm.models.enums import Credential, GeocodePrecision, GeocodeStatus, ProgramType
from crm.models.types import StrEnumType

physician_conditions = sa.Table(
    "physician_conditions",
    Base.metadata,
    sa.Column("physician_id", sa.ForeignKey("physicians.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("condition_id", sa.ForeignKey("conditions.id", ondelete="CASCADE"), primary_key=True),
)

state_program_conditions = sa.Table(
    "state_program_conditions",
    Base.metadata,
    sa.Column("state_program_id", sa.ForeignKey("state_programs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("condition_id", sa.ForeignKey("conditions.id", ondelete="CASCADE"), primary_key=True),
)


class Condition(Base):
    __tablename__ = "conditions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    slug: Mapped[str] = mapped_column(sa.String(80), unique=True)
    # Slugs it had before a rename: their pages redirect here and payloads naming them still map.
    former_slugs: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    synonyms: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    summary: Mapped[str] = mapped_column(sa.String(400), default="")
    body: Mapped[str] = mapped_column(sa.Text, default="")  # Markdown, rendered sanitised
    published: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Condition {self.slug}>"


class StateProgram(Base):
    __tablename__ = "state_programs"

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(2), unique=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    program_type: Mapped[ProgramType] = mapped_column(StrEnumType(ProgramType))
    physician_discretion: Mapped[bool] = mapped_column(default=False)
    telehealth_allowed: Mapped[bool] = mapped_column(default=False)
    minimum_age: Mapped[int] = mapped_column(default=18)
    patient_fee_note: Mapped[str] = mapped_column(sa.String(400), default="")
    registry_url: Mapped[str] = mapped_column(sa.String(300), default="")
    reviewed_on: Mapped[date | None]
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    qualifying_conditions: Mapped[list[Condition]] = relationship(
        secondary=state_program_conditions, order_by=Condition.name
    )

    @property
    def has_medical_program(self) -> bool:
        return self.program_type in (ProgramType.MEDICAL, ProgramType.MEDICAL_AND_ADULT_USE)


class Physician(Base):
    __tablename__ = "physicians"

    id: Mapped[int] = mapped_column(primary_key=True)
    npi: Mapped[str] = mapped_column(sa.String(10), unique=True)
    first_name: Mapped[str] = mapped_column(sa.String(100))
    last_name: Mapped[str] = mapped_column(sa.String(100))
    credential: Mapped[Credential] = mapped_column(StrEnumType(Credential, 4))
    practice_name: Mapped[str] = mapped_column(sa.String(200), default="")
    street: Mapped[str] = mapped_column(sa.String(200), default="")
    city: Mapped[str] = mapped_column(sa.String(100), default="")
    state: Mapped[str] = mapped_column(sa.String(2), index=True)
    zip: Mapped[str] = mapped_column(sa.String(10), default="")
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    geocode_precision: Mapped[GeocodePrecision | None] = mapped_column(StrEnumType(GeocodePrecision))
    geocode_status: Mapped[GeocodeStatus] = mapped_column(StrEnumType(GeocodeStatus), default=GeocodeStatus.PENDING)
    # Retried with backoff by the geocode_retry job while pending (migration 0006).
    geocode_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    geocode_next_at: Mapped[datetime | None] = mapped_column(index=True)
    geocode_error: Mapped[str | None] = mapped_column(sa.String(300))
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    phone: Mapped[str] = mapped_column(sa.String(20), default="")
    email: Mapped[str] = mapped_column(sa.String(254), default="")
    website: Mapped[str] = mapped_column(sa.String(300), default="")
    offers_in_person: Mapped[bool] = mapped_column(default=True)
    offers_telehealth: Mapped[bool] = mapped_column(default=False)
    languages: Mapped[list[str]] = mapped_column(sa.JSON, default=lambda: ["en"])
    accepting_new: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)
    priority: Mapped[int] = mapped_column(default=2)  # 1 preferred, 2 standard, 3 last resort
    weekly_capacity: Mapped[int] = mapped_column(default=20)
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # Empty means the physician treats every condition.
    conditions: Mapped[list[Condition]] = relationship(secondary=physician_conditions, order_by=Condition.name)
    registrations: Mapped[list[Registration]] = relationship(
        back_populates="physician", cascade="all, delete-orphan", order_by="Registration.state"
    )

    __table_args__ = (
        # Bounding-box prefilter for nearest-physician search on both databases.
        sa.Index("ix_physicians_lat_lon", "latitude", "longitude"),
        sa.CheckConstraint("priority BETWEEN 1 AND 3", name="priority_range"),
    )

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}, {self.credential}"


class Registration(Base):
    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    physician_id: Mapped[int] = mapped_column(sa.ForeignKey("physicians.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(sa.String(2))
    number: Mapped[str] = mapped_column(sa.String(60))
    expires_on: Mapped[date]
    expiry_warned_at: Mapped[datetime | None]

    physician: Mapped[Physician] = relationship(back_populates="registrations")

    __table_args__ = (
        sa.UniqueConstraint("physician_id", "state", name="uq_registrations_physician_state"),
        sa.Index("ix_registrations_state_expires_on", "state", "expires_on"),
    )
