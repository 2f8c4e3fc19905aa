"""Appointment Desk: the staff CRM behind "Request an appointment"."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.utils import ImportStringError


class ConfigError(ValueError):
    """A setting the app cannot run with; the message names the variable (config.py,
    crm/config_check.py)."""


def create_app(config: object | str | None = None, **overrides) -> Flask:
    """Build the app. Starts no scheduler and runs no migrations (see README)."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static", instance_relative_config=False)
    try:
        app.config.from_object(config or "config.Config")
    except ImportStringError as exc:
        # APP_CONFIG names the class (wsgi.py, crm/devserver.py): a typo there is a setting, not a
        # bug; a package the named module imports and cannot find is one (its traceback stays).
        missing = getattr(exc.exception, "name", None)
        if isinstance(exc.exception, ModuleNotFoundError) and missing not in _module_prefixes(str(config)):
            raise
        raise ConfigError(
            f"APP_CONFIG={config!r}: no such configuration; expected config.Config (production) "
            "or config.DevelopmentConfig"
        ) from None
    app.config.update(overrides)
    from crm.config_check import check_config

    check_config(app.config)
    from crm.intake.webhook import WebhookDoor

    # The intake webhook is answered in front of Flask's request handling, and behind ProxyFix.
    app.wsgi_app = WebhookDoor(app, app.wsgi_app)
    proxies = int(app.config.get("TRUST_PROXY") or 0)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)

    from crm import logging_setup

    logging_setup.configure(app)

    from crm.extensions import bootstrap, csrf, db, limiter, login_manager, mail, migrate

    _add_intake_engine(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"), render_as_batch=True)
    from crm.errors import refuse_json_bodies

    app.before_request(refuse_json_bodies)  # before the CSRF check, which reads a form from the body
    csrf.init_app(app)
    limiter.init_app(app)
    mail.init_app(app)
    bootstrap.init_app(app)
    login_manager.init_app(app)

    from crm import errors, security, templating

    security.init_app(app)
    templating.init_app(app)
    errors.init_app(app)

    from crm.admin.routes import bp as admin_bp
    from crm.auth.routes import bp as auth_bp
    from crm.leads.routes import bp as leads_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(leads_bp)
    app.register_blueprint(admin_bp)

    from crm.directory.routes import bp as directory_bp

    app.register_blueprint(directory_bp)

    from crm.intake.routes import bp as intake_bp

    app.register_blueprint(intake_bp)

    from crm.reports.routes import bp as reports_bp

    app.register_blueprint(reports_bp)

    from crm.cli import register_cli

    register_cli(app)
    return app


def _module_prefixes(dotted: str) -> set[str]:
    parts = dotted.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


INTAKE_BIND = "intake"


def _add_intake_engine(app: Flask) -> None:
    """PostgreSQL with INTAKE_ONE_CALL: a second engine (``db.engines["intake"]``) for intake's
    one-call path, like the main one but without the pool's ping on checkout. That ping was a
    round trip of its own on every delivery; the one call does not need it, because a failed
    call falls back to the ordinary path on a pinged connection (crm/services/intake.py)."""
    uri = str(app.config.get("SQLALCHEMY_DATABASE_URI") or "")
    if not (app.config.get("INTAKE_ONE_CALL") and uri.startswith("postgresql+psycopg:")):
        return  # SQLite, or a driver other than psycopg 3 (crm.prepared.TempFunction needs it)
    options = {**app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}), "url": uri, "pool_pre_ping": False}
    options.setdefault("pool_recycle", 1800)  # unpinged: do not keep a connection a firewall may have cut
    options["isolation_level"] = "AUTOCOMMIT"  # its calls are their own transactions
    app.config["SQLALCHEMY_BINDS"] = {INTAKE_BIND: options, **(app.config.get("SQLALCHEMY_BINDS") or {})}
