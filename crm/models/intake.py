"""Webhook sources and the intake inbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.models.base import Base, utcnow
from crm.models.enums import InboxChannel, InboxStatus
from crm.models.types import StrEnumType


class WebhookSource(Base):
    __tablename__ = "webhook_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique ignoring case: index ix_webhook_sources_lower_name on lower(name) (migration 0018).
    name: Mapped[str] = mapped_column(sa.String(120))
    slug: Mapped[str] = mapped_column(sa.String(80), unique=True)
    # Our field name -> dotted path in the source's payload.
    field_mapping: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    active: Mapped[bool] = mapped_column(default=True)
    last_received_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    secrets: Mapped[list[WebhookSecret]] = relationship(
        back_populates="source", cascade="all, delete-orphan", order_by="WebhookSecret.created_at"
    )


class WebhookSecret(Base):
    """A signing secret (``whsec_...``); two may be live while one is rotated out."""

    __tablename__ = "webhook_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_sources.id", ondelete="CASCADE"), index=True)
    secret: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]

    source: Mapped[WebhookSource] = relationship(back_populates="secrets")


class InboxItem(Base):
    """Every submission, stored raw before anything else happens to it."""

    __tablename__ = "inbox_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[InboxChannel] = mapped_column(StrEnumType(InboxChannel))
    source_id: Mapped[int | None] = mapped_column(sa.ForeignKey("webhook_sources.id"))
    source_slug: Mapped[str] = mapped_column(sa.String(80), default="")
    webhook_id: Mapped[str | None] = mapped_column(sa.String(200))
    # "<channel>:<source id>:<webhook id>" on the first delivery only; NULL on
    # duplicates and rejects. Unique, so concurrent duplicates cannot both win.
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(300), unique=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    remote_ip: Mapped[str | None] = mapped_column(sa.String(64))
    headers: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # never the signature
    content_type: Mapped[str] = mapped_column(sa.String(120), default="")
    body: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[InboxStatus] = mapped_column(StrEnumType(InboxStatus), default=InboxStatus.RECEIVED)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    lead_id: Mapped[int | None] = mapped_column(sa.ForeignKey("leads.id"))

    source = relationship("WebhookSource")
    lead = relationship("Lead")

    __table_args__ = (sa.Index("ix_inbox_items_status_next_attempt_at", "status", "next_attempt_at"),)
