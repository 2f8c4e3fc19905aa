"""flask crm demo / flask crm seed"""

from __future__ import annotations

import sys

import click
from flask import current_app

from crm.cli import crm_cli
from crm.extensions import db
from crm.seed.reference import load_reference_data
from crm.services.demo import demo_logins, demo_steps, load_demo


@crm_cli.command("seed")
def seed() -> None:
    """Load state programs and conditions (never overwrites admin edits)."""
    report = load_reference_data()
    db.session.commit()
    click.echo(
        f"Reference data: {report['state_programs']} state programs and {report['conditions']} conditions added."
    )


@crm_cli.command("demo")
@click.option("--physicians", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--leads", default=60, show_default=True, type=click.IntRange(min=0))
@click.option("--force", is_flag=True, help="Load it outside a development or test configuration too.")
def demo(physicians: int, leads: int, force: bool) -> None:
    """Load demo users, physicians, a webhook source and leads (once; safe to run again)."""
    # Not app.debug: the flask command sets that from FLASK_DEBUG, whatever the configuration says.
    if not (current_app.config.get("DEMO_DATA_ALLOWED") or force):
        # Its logins and webhook secret are published in the README: not for a real desk.
        raise click.ClickException(
            "the demo's logins and webhook secret are public; this is not a development configuration "
            "(APP_CONFIG=config.DevelopmentConfig). Add --force to load it anyway."
        )
    steps = demo_steps(physicians, leads)
    with click.progressbar(length=steps, label="Loading demo data", file=sys.stderr) as bar:
        report = load_demo(bar.update, physicians=physicians, leads=leads)
        db.session.commit()
    if report.get("skipped"):
        click.echo("Demo data already loaded; nothing to do.")
    else:
        click.echo(f"Demo data: {report['users']} users, {report['physicians']} physicians, {report['leads']} leads.")
    click.echo("Demo logins:")
    for email, password, role in demo_logins():
        click.echo(f"  {role:<10} {email:<22} {password}")
