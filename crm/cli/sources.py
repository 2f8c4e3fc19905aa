"""flask crm sources add NAME [--secret whsec_...] | rotate SLUG | list"""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup

from crm.cli import crm_cli
from crm.extensions import db
from crm.models.base import utcnow
from crm.services import audit
from crm.services import sources as source_service

sources_cli = AppGroup("sources", help="Webhook sources and their signing secrets.")
crm_cli.add_command(sources_cli)


def _fail(message: str) -> None:
    db.session.rollback()
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@sources_cli.command("add")
@click.argument("name")
@click.option("--secret", default=None, help="Use this whsec_... secret instead of generating one.")
@click.option("--slug", default=None, help="URL slug (default: made from the name).")
def add_source(name: str, secret: str | None, slug: str | None) -> None:
    """Create a webhook source; prints its slug and signing secret (shown once)."""
    try:
        source, secret_value = source_service.create_source(name, secret=secret, slug=slug)
    except source_service.SourceError as exc:
        _fail(str(exc))
    audit.record("create_source", "webhook_source", source.id, detail={"slug": source.slug, "via": "cli"})
    db.session.commit()
    click.echo(f"slug: {source.slug}")
    click.echo(f"secret: {secret_value}")
    base = (current_app.config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    click.echo(f"url: {base}/webhooks/intake/{source.slug}")  # the whole address once PUBLIC_BASE_URL is set
    if not base:
        click.echo(
            "note: the url is relative: put this desk's public address in front of it "
            "(set PUBLIC_BASE_URL, e.g. https://desk.example.org, and it is printed whole)"
        )


@sources_cli.command("rotate")
@click.argument("slug")
@click.option("--end-old-now", is_flag=True, help="Refuse the old secret at once (it leaked) instead of after 24 h.")
def rotate(slug: str, end_old_now: bool) -> None:
    """Add a new secret; the old one keeps working for 24 hours. Prints the new secret."""
    from datetime import timedelta

    source = source_service.get_source(slug)
    if source is None:
        _fail(f"no webhook source with slug {slug!r}")
    try:
        grace = timedelta(0) if end_old_now else source_service.ROTATION_GRACE
        secret_value = source_service.rotate_secret(source, grace=grace)
    except source_service.SourceError as exc:
        _fail(str(exc))
    audit.record("rotate_secret", "webhook_source", source.id, detail={"via": "cli", "old_ended": end_old_now})
    db.session.commit()
    # The secrets still live besides the new one: the one just retired expires last (secrets of
    # earlier rotations may still be live, expiring sooner, or long expired).
    retired = [s for s in source_service.active_secrets(source, utcnow()) if s.secret != secret_value]
    ends = max((s.expires_at for s in retired if s.expires_at), default=None)
    click.echo(f"secret: {secret_value}")
    if ends:
        click.echo(f"The previous secret stays valid until {ends:%Y-%m-%d %H:%M} UTC.")
    else:
        click.echo("The previous secret no longer signs deliveries.")


@sources_cli.command("list")
def list_sources() -> None:
    """Sources with their live secret count and last delivery."""
    from crm.models import WebhookSource

    now = utcnow()
    every = db.session.scalars(db.select(WebhookSource).order_by(WebhookSource.slug)).all()
    if not every:
        click.echo("No webhook sources yet: flask crm sources add NAME")
    for source in every:
        live = len(source_service.active_secrets(source, now))
        last = f"{source.last_received_at:%Y-%m-%d %H:%M}" if source.last_received_at else "never"
        state = "active" if source.active else "inactive"
        click.echo(f"{source.slug}\t{source.name}\t{state}\t{live} live secret(s)\tlast delivery {last}")
