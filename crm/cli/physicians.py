"""flask crm physicians import FILE [--dry-run] / export FILE"""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from crm.cli import crm_cli
from crm.extensions import db
from crm.services import audit, physician_csv

physicians_cli = AppGroup("physicians", help="Physician directory: CSV import and export (SPEC 9 format).")
crm_cli.add_command(physicians_cli)


@physicians_cli.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check every line and report what would change; write nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Also list every line that creates or updates a physician.")
def import_physicians(file, dry_run: bool, verbose: bool) -> None:
    """Create or update physicians (matched by NPI) from a CSV file; '-' reads standard input."""
    data = file.read()
    report = physician_csv.plan_import(data)
    if report.file_error:
        click.echo(f"Error: {report.file_error}", err=True)
        sys.exit(1)
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)
    if not dry_run:
        with click.progressbar(length=len(report.changes), label="Importing", file=sys.stderr) as bar:
            physician_csv.apply_import(report, progress=bar.update, detail={"via": "cli"})
        db.session.commit()
    if verbose:
        for line in report.changes:
            what = "new physician" if line.action == "create" else ", ".join(line.changes)
            what += f"; {line.geocode}" if line.geocode else ""
            click.echo(f"line {line.line}: {line.action} {line.npi} {line.name} ({what})")
    for line in report.changes:
        if line.warning:
            click.echo(f"line {line.line}: {line.npi} {line.name}: {line.warning}", err=True)
    for line in report.errors:
        click.echo(f"line {line.line}: {line.message}", err=True)
    click.echo(report.summary())
    if report.errors:
        sys.exit(1)


@physicians_cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def export_physicians(file: str) -> None:
    """Write every physician (active or not) to FILE in the import format; '-' writes to standard output."""
    text, count = physician_csv.export_csv()
    audit.record("export", "physician", None, detail={"rows": count, "via": "cli"})
    db.session.commit()
    if file == "-":
        click.echo(text, nl=False)
        click.echo(f"Exported {count} physicians.", err=True)
        return
    try:
        with open(file, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        click.echo(f"Error: cannot write {file}: {exc.strerror}", err=True)
        sys.exit(1)
    click.echo(f"Exported {count} physicians to {file}.")
