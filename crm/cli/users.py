"""flask crm user create EMAIL --role admin|specialist / unlock EMAIL / set-password EMAIL"""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from crm.cli import crm_cli
from crm.extensions import db
from crm.models import User
from crm.models.enums import Role
from crm.services import accounts, audit, users_admin

user_cli = AppGroup("user", help="Staff accounts.")
crm_cli.add_command(user_cli)


@user_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.SPECIALIST.value, show_default=True)
@click.option("--name", default="", help="Display name (defaults to the email).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of prompting.")
def create_user(email: str, role: str, name: str, password_stdin: bool) -> None:
    """Create a staff user; the password is prompted (or read from stdin)."""
    password = _read_password(password_stdin, "Password")
    try:
        user = accounts.create_user(email, name or email.split("@")[0], password, role)
        audit.record("create_user", "user", user.id, detail={"role": role, "via": "cli"})
        db.session.commit()
    except accounts.AccountError as exc:
        db.session.rollback()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"Created {user.role} {user.email} (id {user.id}).")


def _read_password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True)


def _user_or_exit(email: str) -> User:
    found = db.session.scalar(db.select(User).where(User.email == accounts.normalise_email(email)))
    if found is None:
        click.echo(f"Error: no user has the email {email}.", err=True)
        sys.exit(1)
    return found


@user_cli.command("unlock")
@click.argument("email")
def unlock_user(email: str) -> None:
    """Lift a sign-in lock (every admin locked out, say); the password stays as it is."""
    user = _user_or_exit(email)
    if not users_admin.unlock(user):
        click.echo(f"{user.email} is not locked.")
        return
    db.session.commit()
    click.echo(f"Unlocked {user.email}.")


@user_cli.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of prompting.")
@click.option("--temporary", is_flag=True, help="The user must choose their own at the next sign-in.")
def set_user_password(email: str, password_stdin: bool, temporary: bool) -> None:
    """Set a user's password (it unlocks the account, ends their sessions and takes them off shift)."""
    user = _user_or_exit(email)
    password = _read_password(password_stdin, "New password")
    try:
        users_admin.reset_password(user, password, temporary=temporary, via="cli")
    except users_admin.UserAdminError as exc:
        db.session.rollback()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    db.session.commit()
    click.echo(f"New password set for {user.email}; their sessions have ended and they are off shift.")
