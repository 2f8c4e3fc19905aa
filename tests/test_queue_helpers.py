"""Builders shared by the queue/workspace tests (no tests here; imported by tests/test_*.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crm.models import Lead
from crm.models.enums import LeadStatus
from tests.factories import LeadFactory, PatientFactory, PhysicianFactory

# A Wednesday, 14:00 UTC = 09:00 EST in New York: inside business hours and, just, the New York
# calling window (07:00 in Phoenix and 06:00 in Los Angeles are outside theirs).
WED = datetime(2026, 11, 18, 14, 0, tzinfo=UTC)


def make_lead(db, *, status=LeadStatus.NEW, assignee=None, created_at=None, commit=True, **patient) -> Lead:
    lead = LeadFactory(
        patient=PatientFactory(**patient),
        status=status,
        assignee_id=assignee.id if assignee is not None else None,
        assigned_at=(created_at or datetime.now(UTC)) if assignee is not None else None,
        created_at=created_at or datetime.now(UTC) - timedelta(minutes=1),
    )
    if commit:
        db.session.commit()
    return lead


def match_result(*physicians, mode="in_person") -> dict:
    """The SPEC 6 shape that booking reads (``candidates`` and ``excluded``)."""
    return {
        "candidates": [
            {
                "physician_id": p.id,
                "npi": p.npi,
                "name": p.full_name,
                "distance_miles": None if mode == "telehealth" else 3.2 + i,
                "mode": mode,
                "priority": p.priority,
            }
            for i, p in enumerate(physicians)
        ],
        "excluded": [],
    }


def matched_lead(db, *, status=LeadStatus.CONTACTED, assignee=None, physicians=1, **patient):
    """A lead with ``physicians`` matched in-person candidates; returns (lead, [physicians])."""
    docs = [PhysicianFactory() for _ in range(physicians)]
    db.session.flush()
    lead = make_lead(db, status=status, assignee=assignee, commit=False, **patient)
    lead.match_result = match_result(*docs)
    db.session.commit()
    return lead, docs


def form_post(client, url: str, lead: Lead, **data):
    """POST a workspace form carrying the lead's current version."""
    data.setdefault("version", str(lead.version))
    return client.post(url, data=data)
