"""``flask crm ...`` commands, one AppGroup per area."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from sqlalchemy.exc import OperationalError, ProgrammingError

NOT_MIGRATED = "the database has no tables yet (or not all of them): run `flask --app wsgi db upgrade` first"
UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE


class CrmGroup(AppGroup):
    """Commands whose database is not there, or not migrated yet, end in one line saying what to
    do, not in a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OperationalError, ProgrammingError) as exc:
            message = database_problem(exc)
            if message is None:
                raise
            raise click.ClickException(message) from exc


def database_problem(exc: OperationalError | ProgrammingError) -> str | None:
    """What to tell the operator about a database error a command hit, or None for one that is
    not about the database's reach or schema (a bug: its traceback is the useful answer)."""
    text = str(exc.orig).strip()
    if "no such table" in text or getattr(exc.orig, "sqlstate", None) == UNDEFINED_TABLE:
        return NOT_MIGRATED
    # SQLite's file cannot be opened; psycopg could not connect (no server, no such database or
    # role: raised before any statement, so with no SQLSTATE, unlike a deadlock or a
    # serialization failure, which are errors of a statement).
    if isinstance(exc, OperationalError) and (
        text.startswith("unable to open database file") or text.startswith("connection failed")
    ):
        return f"cannot open the database DATABASE_URL names: {text.splitlines()[0]}"
    return None


crm_cli = CrmGroup("crm", help="Appointment Desk commands.")


def register_cli(app) -> None:
    from crm.cli import demo, users  # noqa: F401  (modules attach their commands to crm_cli)

    for module in ("crm.cli.sources", "crm.cli.physicians", "crm.cli.matching", "crm.cli.scheduler", "crm.cli.reports"):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    if "crm" not in app.cli.commands:
        app.cli.add_command(crm_cli)


def migration_problem() -> str | None:
    """None when the database has every migration of this code applied; else what to do about it
    (the scheduler refuses to start rather than fail every job run)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from flask import current_app

    from crm.extensions import db

    config = Config()
    config.set_main_option("script_location", current_app.extensions["migrate"].directory)
    script = ScriptDirectory.from_config(config)
    heads = set(script.get_heads())
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current == heads:
        return None
    if not current:
        return NOT_MIGRATED
    known = {rev.revision for rev in script.walk_revisions()}
    if current - known:
        return (
            f"the database is at migration {', '.join(sorted(current - known))}, which this code does not know "
            "(a newer release migrated it): run that release, or downgrade the database with it first"
        )
    return (
        f"the database is at migration {', '.join(sorted(current))}, this code needs {', '.join(sorted(heads))}: "
        "run `flask --app wsgi db upgrade` first"
    )
