"""The workspace's "Re-match" button: recompute eligibility and the physician match on demand.

Added to the leads blueprint (imported at the bottom of crm/leads/routes.py). Any signed-in
staff member (specialist or admin) may re-match; the form carries only a CSRF token.
"""

from __future__ import annotations

from flask import abort, flash, jsonify, redirect, url_for
from flask_login import current_user, login_required

from crm.auth.forms import PostForm
from crm.errors import wants_json
from crm.extensions import db
from crm.leads.routes import bp
from crm.models import Lead
from crm.services.enrichment import rematch_lead


def describe(result: dict) -> str:
    cands = result["candidates"]
    in_person = sum(1 for c in cands if c["mode"] == "in_person")
    telehealth = sum(1 for c in cands if c["mode"] == "telehealth")
    radius = result["rules"]["radius_miles"]
    where = f"within {radius} miles" if radius else "(no usable location yet)"
    return (
        f"Re-matched: {in_person} in person {where}, {telehealth} by telehealth, "
        f"{len(result['excluded'])} excluded nearby."
    )


@bp.post("/leads/<int:lead_id>/rematch")
@login_required
def rematch(lead_id: int):
    lead = db.session.get(Lead, lead_id)
    if lead is None:
        abort(404)
    form = PostForm()
    if not form.validate_on_submit():
        message = "The form expired; press Re-match again."
        if wants_json():
            return jsonify({"error": message}), 400
        flash(message, "warning")
        return redirect(url_for("leads.detail", lead_id=lead.id) + "#match")
    result = rematch_lead(lead, current_user._get_current_object())
    db.session.commit()
    if wants_json():
        return jsonify(
            {
                "ok": True,
                "lead_id": lead.id,
                "candidates": len(result["candidates"]),
                "excluded": len(result["excluded"]),
            }
        )
    flash(describe(result), "success")
    return redirect(url_for("leads.detail", lead_id=lead.id) + "#match")
