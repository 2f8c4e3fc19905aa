"""``flask crm ...`` commands, one AppGroup per area."""

from __future__ import annotations

from flask.cli import AppGroup

crm_cli = AppGroup("crm", help="Appointment Desk commands.")


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
