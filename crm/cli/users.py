"""flask crm user create EMAIL --role admin|specialist"""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from crm.cli import crm_cli
from crm.extensions import db
from crm.models.enums import Role
from crm.services import accounts, audit

user_cli = AppGroup("user", help="Staff accounts.")
crm_cli.add_command(user_cli)


@user_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.SPECIALIST.value, show_default=True)
@click.option("--name", default="", help="Display name (defaults to the email).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of prompting.")
def create_user(email: str, role: str, name: str, password_stdin: bool) -> None:
    """Create a staff user; the password is prompted (or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = accounts.create_user(email, name or email.split("@")[0], password, role)
        audit.record("create_user", "user", user.id, detail={"role": role, "via": "cli"})
        db.session.commit()
    except accounts.AccountError as exc:
        db.session.rollback()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"Created {user.role} {user.email} (id {user.id}).")
