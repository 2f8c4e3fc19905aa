"""flask crm reports refresh [--all]"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import AppGroup

from crm.cli import crm_cli
from crm.extensions import db

reports_cli = AppGroup("reports", help="The /reports rollups.")
crm_cli.add_command(reports_cli)


@reports_cli.command("refresh")
@click.option("--all", "rebuild_all", is_flag=True, help="Rebuild every day, not only the days that changed.")
def refresh_command(rebuild_all: bool) -> None:
    """Bring the report rollups up to date (the report_rollups job does this every minute)."""
    from crm.services.report_rollups import refresh_report_rollups

    tz = current_app.config.get("BUSINESS_TIMEZONE") or "America/New_York"
    started = time.perf_counter()
    result = refresh_report_rollups(db.session, datetime.now(UTC), tz, full=rebuild_all)
    db.session.commit()
    click.echo(f"{result} in {time.perf_counter() - started:.1f} s ({tz} days).")
