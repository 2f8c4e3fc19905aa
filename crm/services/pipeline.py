"""What happens to a lead after intake committed it: enrichment, then routing.

Called after the patient and lead are committed, so nothing here can lose or
delay a submission. Each step runs in its own transaction; a failure is logged
(ids and exception type only, never patient data), rolled back and left to the
scheduler's sweeps (geocode retry, auto-assignment).
"""

from __future__ import annotations

import logging

from flask import current_app

from crm.extensions import db
from crm.models import Lead

log = logging.getLogger(__name__)


def _step(name: str, lead_id: int, fn) -> None:
    try:
        lead = db.session.get(Lead, lead_id)
        if lead is None:
            return
        fn(lead)
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - a failed step waits for its scheduler job
        db.session.rollback()
        log.warning("pipeline: %s for lead %s failed (%s); the scheduler will retry", name, lead_id, type(exc).__name__)


def after_intake(lead_id: int) -> None:
    """Geocode + match inline when the geocoder is offline, then auto-assign; never raises."""
    if str(current_app.config.get("GEOCODER", "offline")).lower() == "offline":
        try:
            from crm.services.enrichment import enrich_lead
        except ImportError:
            enrich_lead = None
        if enrich_lead is not None:
            _step("enrichment", lead_id, enrich_lead)
    try:
        from crm.services.routing import auto_assign
    except ImportError:
        auto_assign = None
    if auto_assign is not None:
        _step("auto-assignment", lead_id, auto_assign)
