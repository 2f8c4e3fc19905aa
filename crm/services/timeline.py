"""The lead timeline: every change to a lead is an append-only LeadEvent."""

from __future__ import annotations

from datetime import datetime

from crm.extensions import db
from crm.models import Lead, LeadEvent, User
from crm.models.base import utcnow
from crm.models.enums import EventKind


def add_event(
    lead: Lead,
    kind: EventKind | str,
    data: dict | None = None,
    *,
    actor: User | None = None,
    at: datetime | None = None,
) -> LeadEvent:
    """Append an event; ``actor`` None means the system did it."""
    if lead.id is None:
        db.session.flush()
    event = LeadEvent(
        lead_id=lead.id,
        actor_id=actor.id if actor is not None else None,
        kind=EventKind(kind),
        data=data or {},
        created_at=at or utcnow(),
    )
    db.session.add(event)
    db.session.flush()
    return event
