"""flask crm match LEAD_ID [--json] / flask crm geocode --pending [--physicians]"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click
import sqlalchemy as sa
from flask import current_app

from crm.cli import crm_cli
from crm.extensions import db
from crm.models import Lead, Physician
from crm.models.enums import GeocodeStatus
from crm.services import audit


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@crm_cli.command("match")
@click.argument("lead_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the SPEC 6 JSON instead of a readable list.")
@click.option("--no-store", is_flag=True, help="Compute only; leave the lead's stored match as it is.")
@click.option("--bruteforce", is_flag=True, help="Scan every physician instead of using the index (a check).")
def match_command(lead_id: int, as_json: bool, no_store: bool, bruteforce: bool) -> None:
    """Check eligibility and match physicians for one lead (stored on the lead unless --no-store)."""
    from crm.services.enrichment import store_match
    from crm.services.matching import match_lead
    from crm.services.timeline import add_event

    lead = db.session.get(Lead, lead_id)
    if lead is None:
        _fail(f"there is no lead #{lead_id}.")
    now = datetime.now(UTC)
    result = match_lead(lead, now, bruteforce=bruteforce)
    if not no_store:
        store_match(lead, result, now)
        add_event(lead, "matched", {"trigger": "command", "radius_miles": result["rules"]["radius_miles"]}, at=now)
    audit.record("view_lead", "lead", lead.id, detail={"via": "cli", "what": "match"})
    db.session.commit()
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    el = result["eligibility"]
    click.echo(f"Lead #{lead.id}: {el['summary']}")
    for reason in el.get("reasons", []):
        click.echo(f"  - {reason}")
    origin = result["origin"]
    if origin["latitude"] is None:
        click.echo("No usable location yet: telehealth list only.")
    else:
        click.echo(f"Search radius: {result['rules']['radius_miles']} miles ({origin['precision']} precision).")
    for c in result["candidates"]:
        dist = "" if c["distance_miles"] is None else f", {c['distance_miles']:.1f} mi"
        click.echo(f"  {c['mode']:<10} #{c['rank']:<2} {c['name']} (NPI {c['npi']}{dist}, priority {c['priority']})")
    if not result["candidates"]:
        click.echo("  No eligible physician.")
    for x in result["excluded"]:
        click.echo(f"  excluded: {x['name']} (NPI {x['npi']}): {x['reason']}")
    click.echo(
        f"{sum(c['mode'] == 'in_person' for c in result['candidates'])} in person, "
        f"{sum(c['mode'] == 'telehealth' for c in result['candidates'])} telehealth, "
        f"{len(result['excluded'])} excluded nearby."
    )


@crm_cli.command("geocode")
@click.option("--pending", is_flag=True, help="Locate patients waiting for a geocode and re-match their leads.")
@click.option("--due-only", is_flag=True, help="With --pending: respect the retry backoff (as the job does).")
@click.option("--physicians", is_flag=True, help="Locate active physicians that have no coordinates yet.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
def geocode_command(pending: bool, due_only: bool, physicians: bool, limit: int) -> None:
    """Work through the geocoding backlog with the configured geocoder (GEOCODER)."""
    from crm.services.enrichment import RetrySummary, due_patients, geocode_backlog_status, retry_patient
    from crm.services.geocoding import geocode_physician, get_geocoder
    from crm.services.geocoding import unavailable as geocoder_unavailable

    if due_only and not pending:
        raise click.UsageError("--due-only goes with --pending (it is the patients' retry backoff).")
    if not (pending or physicians):
        status = geocode_backlog_status()
        click.echo(
            f"Patients: {status['pending']} pending, {status['failed']} failed after {status['max_attempts']} "
            f"attempts, {status['ok']} located. Use --pending or --physicians to work the backlog."
        )
        return
    try:
        geo = get_geocoder(current_app.config)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(f"Geocoder: {geo.name}", err=True)
    if pending:
        now = datetime.now(UTC)
        todo = due_patients(now, limit, ignore_backoff=not due_only)
        summary = RetrySummary()
        with click.progressbar(todo, label="Locating patients", file=sys.stderr) as bar:
            for patient_id, seen_next_at in bar:
                retry_patient(patient_id, seen_next_at, now, current_app.config, summary)
        click.echo(f"Patients: {summary}.")
        if summary.errors:
            click.echo(f"{len(summary.errors)} error(s): {', '.join(sorted(set(summary.errors)))}", err=True)
            sys.exit(1)
        if summary.claimed and summary.unavailable == summary.claimed:
            _geocoder_down(geo.name, summary.claimed, "patient")
    if physicians:
        ids = db.session.scalars(
            sa.select(Physician.id)
            .where(Physician.active.is_(True), Physician.geocode_status != GeocodeStatus.OK)
            .order_by(Physician.id)
            .limit(limit)
        ).all()
        located = down = 0
        with click.progressbar(ids, label="Locating physicians", file=sys.stderr) as bar:
            for i, pid in enumerate(bar, start=1):
                doc = db.session.get(Physician, pid)
                found = bool(geocode_physician(doc, current_app.config))
                located += found
                down += not found and geocoder_unavailable(doc.geocode_error)
                if i % 100 == 0:
                    db.session.commit()
        db.session.commit()
        click.echo(f"Physicians: {len(ids)} tried, {located} located, {len(ids) - located} not found or pending.")
        if ids and down == len(ids):
            _geocoder_down(geo.name, len(ids), "physician")


def _geocoder_down(name: str, tried: int, what: str) -> None:
    """Every address tried met a geocoder that did not answer: an outage or a bad setting (API key,
    GEOCODER_OPTIONS), not a backlog worked through, so the exit status says it failed."""
    click.echo(
        f"Error: the geocoder ({name}) did not answer for any of the {tried} {what}(s) tried: check GEOCODER, "
        "GEOCODER_OPTIONS and the network. They stay pending and are retried with backoff.",
        err=True,
    )
    sys.exit(1)
