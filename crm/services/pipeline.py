"""What happens to a lead after intake committed it: enrichment, then routing.

Intake only stores (inbox item, patient, lead) and answers; the ``enrich_new`` scheduler job
picks up every open lead nobody has matched yet (``matched_at IS NULL``) a few seconds later and
runs the steps below. Keeping them out of the request is what lets a burst of deliveries be
stored at full speed (docs/intake.md, "Performance"). Each step runs in its own transaction; a
failure is logged (ids and exception type only, never patient data), rolled back and retried by a
later run with a backoff; the geocode-retry and auto-assignment sweeps are the second line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from crm.extensions import db
from crm.logging_setup import error_text
from crm.models import Lead
from crm.models.enums import OPEN_STATUSES

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=30)

# lead id -> (failed attempts, not before). In memory on purpose: only the scheduler process runs
# this job (its lock guarantees one), a failing lead keeps matched_at NULL, so a restart simply
# tries it again, and its workspace offers "Re-match" meanwhile.
_backoff: dict[int, tuple[int, datetime]] = {}


def _step(name: str, lead_id: int, fn) -> bool:
    try:
        lead = db.session.get(Lead, lead_id)
        if lead is None:
            return True
        fn(lead)
        db.session.commit()
        return True
    except Exception as exc:  # noqa: BLE001 - a failed step is retried by a later run
        db.session.rollback()
        log.warning("pipeline: %s for lead %s failed: %s", name, lead_id, error_text(exc), exc_info=exc)
        return False


def enrich(lead_id: int, now: datetime | None = None) -> bool:
    """Geocode if due (the patient leased first), check eligibility, match. Never raises."""
    from crm.services.enrichment import enrich_lead

    return _step("enrichment", lead_id, lambda lead: enrich_lead(lead, now))


def route(lead_id: int) -> bool:
    """Auto-assign (when enabled and someone is on shift). Never raises."""
    from crm.services.routing import auto_assign

    return _step("auto-assignment", lead_id, auto_assign)


@dataclass
class EnrichSummary:
    enriched: int = 0
    failed: int = 0

    def __str__(self) -> str:
        if not (self.enriched or self.failed):
            return ""  # idle: the job records no run
        return f"{self.enriched} new lead(s) enriched and routed, {self.failed} failed (retried with backoff)"


def unmatched_lead_ids(limit: int) -> list[int]:
    """Open leads intake stored that were never matched, oldest first (partial index ix_leads_unmatched)."""
    return list(
        db.session.scalars(
            sa.select(Lead.id)
            .where(Lead.matched_at.is_(None), Lead.status.in_([s.value for s in OPEN_STATUSES]))
            .order_by(Lead.id)
            .limit(limit)
        )
    )


def enrich_new_leads(now: datetime | None = None, limit: int = 200) -> EnrichSummary:
    """The ``enrich_new`` job: enrich and route leads intake stored since the last run."""
    now = now or datetime.now(UTC)
    summary = EnrichSummary()
    fetch = limit + len(_backoff)
    ids = unmatched_lead_ids(fetch)
    if len(ids) < fetch:  # every unmatched lead is in ids: forget those matched meanwhile
        for gone in set(_backoff) - set(ids):
            del _backoff[gone]
    due = []
    for lead_id in ids:
        failures, not_before = _backoff.get(lead_id, (0, now))
        if not_before <= now:
            due.append((lead_id, failures))
        if len(due) >= limit:
            break
    # Routing first: with an online geocoder each enrichment may wait on the network (and on a
    # rate limit), and nobody should wait for that to get a lead to call.
    for lead_id, _failures in due:
        route(lead_id)
    for lead_id, failures in due:
        if enrich(lead_id, now):
            _backoff.pop(lead_id, None)
            summary.enriched += 1
        else:
            failures += 1
            _backoff[lead_id] = (failures, now + min(RETRY_BASE * 2 ** (failures - 1), RETRY_MAX))
            summary.failed += 1
    return summary
