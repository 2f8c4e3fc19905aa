"""Patients, leads and everything that happens to a lead."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.models.base import Base, utcnow
from crm.models.directory import Condition, Physician
from crm.models.enums import (
    LIVE_APPOINTMENT,
    AppointmentStatus,
    ContactMethod,
    ContactTime,
    EventKind,
    FollowUpKind,
    GeocodePrecision,
    GeocodeStatus,
    LeadSourceKind,
    LeadStatus,
    LostReason,
    PreferredMode,
    VisitMode,
)
from crm.models.types import StrEnumType
from crm.models.users import User


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(sa.String(100))
    last_name: Mapped[str] = mapped_column(sa.String(100))
    email: Mapped[str | None] = mapped_column(sa.String(254), index=True)  # normalised
    phone: Mapped[str | None] = mapped_column(sa.String(20), index=True)  # E.164
    date_of_birth: Mapped[date | None]
    age_confirmed: Mapped[bool] = mapped_column(default=False)
    street: Mapped[str] = mapped_column(sa.String(200), default="")
    city: Mapped[str] = mapped_column(sa.String(100), default="")
    state: Mapped[str | None] = mapped_column(sa.String(2), index=True)
    zip: Mapped[str] = mapped_column(sa.String(10), default="")
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    geocode_precision: Mapped[GeocodePrecision | None] = mapped_column(StrEnumType(GeocodePrecision))
    geocode_status: Mapped[GeocodeStatus] = mapped_column(StrEnumType(GeocodeStatus), default=GeocodeStatus.PENDING)
    geocode_attempts: Mapped[int] = mapped_column(default=0)
    geocode_next_at: Mapped[datetime | None] = mapped_column(index=True)
    geocode_error: Mapped[str | None] = mapped_column(sa.String(300))
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    preferred_contact_method: Mapped[ContactMethod] = mapped_column(
        StrEnumType(ContactMethod), default=ContactMethod.PHONE
    )
    preferred_contact_time: Mapped[ContactTime] = mapped_column(StrEnumType(ContactTime), default=ContactTime.ANY)
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    consent_text: Mapped[str | None] = mapped_column(sa.Text)
    consent_at: Mapped[datetime | None]
    consent_ip: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    leads: Mapped[list[Lead]] = relationship(back_populates="patient", order_by="Lead.created_at.desc()")

    # Name searches use lower(last_name), lower(first_name): indexes ix_patients_lower_last_name
    # and ix_patients_lower_first_name (migration 0002); a plain (last_name, first_name) index
    # served no query and cost every new patient (dropped in 0008). A search by the last digits of a
    # phone number uses ix_patients_phone_last4 on the number's last four characters (migration 0019).

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))  # ix_leads_patient_condition
    condition_id: Mapped[int | None] = mapped_column(sa.ForeignKey("conditions.id"), index=True)
    condition_text: Mapped[str] = mapped_column(sa.String(200), default="")  # what the patient typed
    message: Mapped[str] = mapped_column(sa.Text, default="")
    preferred_mode: Mapped[PreferredMode] = mapped_column(StrEnumType(PreferredMode), default=PreferredMode.EITHER)
    source_kind: Mapped[LeadSourceKind] = mapped_column(StrEnumType(LeadSourceKind), default=LeadSourceKind.FORM)
    webhook_source_id: Mapped[int | None] = mapped_column(sa.ForeignKey("webhook_sources.id"), index=True)
    landing_page_url: Mapped[str] = mapped_column(sa.String(500), default="")
    utm_source: Mapped[str] = mapped_column(sa.String(100), default="")
    utm_medium: Mapped[str] = mapped_column(sa.String(100), default="")
    utm_campaign: Mapped[str] = mapped_column(sa.String(100), default="")
    utm_term: Mapped[str] = mapped_column(sa.String(100), default="")
    utm_content: Mapped[str] = mapped_column(sa.String(100), default="")
    status: Mapped[LeadStatus] = mapped_column(StrEnumType(LeadStatus), default=LeadStatus.NEW)
    lost_reason: Mapped[LostReason | None] = mapped_column(StrEnumType(LostReason))
    assignee_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    assigned_at: Mapped[datetime | None]
    first_contact_at: Mapped[datetime | None]
    # When the patient was first reached (set once, by the first move to contacted, booked or
    # completed): the funnel's "contacted" stage, which a later status (lost, reopened) must not undo.
    reached_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    next_follow_up_at: Mapped[datetime | None]
    sla_due_at: Mapped[datetime | None]
    sla_breached_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    eligibility: Mapped[dict | None] = mapped_column(sa.JSON)
    match_result: Mapped[dict | None] = mapped_column(sa.JSON)
    matched_at: Mapped[datetime | None]
    priority: Mapped[int] = mapped_column(default=0)  # higher is more urgent
    # Made by an admin's "Send test delivery" (crm/services/sources.py mark_test_lead): never in a
    # report, nor in the queue once closed. Server default only, so intake's INSERTs stay as they are.
    is_test: Mapped[bool] = mapped_column(server_default=sa.false())
    closed_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # ix_leads_report starts with it
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="leads")
    condition: Mapped[Condition | None] = relationship()
    assignee: Mapped[User | None] = relationship()
    webhook_source: Mapped[WebhookSource | None] = relationship()  # noqa: F821
    events: Mapped[list[LeadEvent]] = relationship(back_populates="lead", order_by="LeadEvent.id")
    follow_ups: Mapped[list[FollowUp]] = relationship(back_populates="lead", order_by="FollowUp.due_at")
    appointments: Mapped[list[Appointment]] = relationship(back_populates="lead", order_by="Appointment.starts_at")

    # Optimistic locking: an UPDATE carrying a stale version matches no row and
    # SQLAlchemy raises StaleDataError instead of overwriting someone else's save.
    __mapper_args__ = {"version_id_col": version}

    __table_args__ = (
        sa.Index("ix_leads_queue", "status", "assignee_id", "created_at"),
        sa.Index("ix_leads_assignee_status", "assignee_id", "status", "next_follow_up_at"),
        sa.Index("ix_leads_patient_condition", "patient_id", "condition_id", "status"),
    )

    @property
    def is_open(self) -> bool:
        return self.status in (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED, LeadStatus.BOOKED)

    @property
    def booked_appointment(self) -> Appointment | None:
        live = self.live_appointments
        return live[-1] if live else None

    @property
    def live_appointments(self) -> list[Appointment]:
        return [a for a in self.appointments if a.status in LIVE_APPOINTMENT]


class LeadEvent(Base):
    """Append-only timeline of a lead; actor_id NULL means the system did it."""

    __tablename__ = "lead_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    kind: Mapped[EventKind] = mapped_column(StrEnumType(EventKind))
    data: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lead: Mapped[Lead] = relationship(back_populates="events")
    actor: Mapped[User | None] = relationship()

    __table_args__ = (sa.Index("ix_lead_events_lead_id_created_at", "lead_id", "created_at"),)


class FollowUp(Base):
    __tablename__ = "follow_ups"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    due_at: Mapped[datetime]
    kind: Mapped[FollowUpKind] = mapped_column(StrEnumType(FollowUpKind), default=FollowUpKind.CALL)
    note: Mapped[str] = mapped_column(sa.String(500), default="")
    done_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(sa.String(200))
    reminded_at: Mapped[datetime | None]
    # Planned by the system as the lead's default next step (followups.ensure_next_step): the first
    # follow-up a specialist plans by hand, or the next call logged, replaces it.
    automatic: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lead: Mapped[Lead] = relationship(back_populates="follow_ups")
    owner: Mapped[User | None] = relationship()

    __table_args__ = (sa.Index("ix_follow_ups_owner_open_due", "owner_id", "done_at", "due_at"),)


class Appointment(Base):
    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    physician_id: Mapped[int] = mapped_column(sa.ForeignKey("physicians.id"))
    starts_at: Mapped[datetime]
    duration_minutes: Mapped[int] = mapped_column(default=30)
    mode: Mapped[VisitMode] = mapped_column(StrEnumType(VisitMode))
    status: Mapped[AppointmentStatus] = mapped_column(StrEnumType(AppointmentStatus), default=AppointmentStatus.BOOKED)
    notes: Mapped[str] = mapped_column(sa.String(500), default="")
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    confirmation_sent_at: Mapped[datetime | None]
    reminder_sent_at: Mapped[datetime | None]
    outcome_at: Mapped[datetime | None]
    # The iCalendar SEQUENCE of the last invite sent: a move or a cancellation goes one higher.
    ics_sequence: Mapped[int] = mapped_column(default=0, server_default="0")
    # The visit passed without an outcome and the visit_outcomes job asked for it (once), with the
    # follow-up it planned; no FK constraint (migration 0020). Index ix_appointments_outcome_due.
    outcome_asked_at: Mapped[datetime | None]
    outcome_follow_up_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lead: Mapped[Lead] = relationship(back_populates="appointments")
    physician: Mapped[Physician] = relationship()
    created_by: Mapped[User | None] = relationship()

    __table_args__ = (sa.Index("ix_appointments_physician_starts_at", "physician_id", "starts_at"),)
