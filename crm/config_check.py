"""Settings checked when the app is built, so a bad value stops the start with a message that
names the variable, instead of a 500 on the first page or a job failing quietly later."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from limits import parse_many

from crm import ConfigError
from crm.services.calling_window import make_window, window_from_config, zone_exists
from crm.services.geocoding import get_geocoder
from crm.services.sla import SlaConfig


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError listing every setting the app cannot run with."""
    problems = [problem for check in CHECKS if (problem := check(config))]
    if problems:
        raise ConfigError("Configuration error:\n  " + "\n  ".join(problems))


DATABASE_URL_FORMS = "sqlite:///path/to/file.sqlite3 or postgresql+psycopg://user:password@host:5432/name"


def _scheme(uri: str) -> str:
    """The part before ``://``: what a message may quote of a URL (the rest can hold a password)."""
    return uri.split("://", 1)[0] if "://" in uri else ""


def _database_url(config: Mapping) -> str | None:
    uri = str(config.get("SQLALCHEMY_DATABASE_URI") or "")
    scheme = _scheme(uri)
    try:
        url = sa.engine.make_url(uri)
    except sa.exc.ArgumentError:
        return f"DATABASE_URL: not a database URL; expected {DATABASE_URL_FORMS}"
    except ValueError:  # e.g. a port that is not a number
        return f"DATABASE_URL: not a database URL (is the port a number?); expected {DATABASE_URL_FORMS}"
    try:
        url.get_dialect().import_dbapi()
    except sa.exc.NoSuchModuleError:
        return f"DATABASE_URL: unknown kind of database {scheme!r}; expected {DATABASE_URL_FORMS}"
    except ImportError as exc:
        missing = exc.name or exc
        return f"DATABASE_URL: the driver for {scheme!r} is not installed ({missing}); expected {DATABASE_URL_FORMS}"
    return None


def _rate_limit_storage(config: Mapping) -> str | None:
    from limits.storage import SCHEMES

    uri = str(config.get("RATELIMIT_STORAGE_URI") or "")
    scheme = _scheme(uri)
    storage = SCHEMES.get(scheme) if not scheme.startswith("async+") else None
    if storage is None:
        return (
            f"RATELIMIT_STORAGE_URI: unsupported scheme {scheme!r}; "
            "expected memory:// or redis://host:6379/0 (also rediss://, redis+unix://, redis+sentinel://, "
            "memcached://, mongodb://)"
        )
    # The Redis stores list both clients, redis and valkey: a scheme needs its own one only.
    family = "valkey" if "valkey" in scheme else "redis"
    deps = [
        name for name in storage.DEPENDENCIES if not name.startswith(("redis", "valkey")) or name.startswith(family)
    ]
    missing = sorted({name.split(".")[0] for name in deps if importlib.util.find_spec(name.split(".")[0]) is None})
    if missing:
        return f"RATELIMIT_STORAGE_URI: {scheme}:// needs the Python package(s) {', '.join(missing)}, not installed"
    return None


def _business_hours(config: Mapping) -> str | None:
    sla = SlaConfig.from_config(config)  # with its defaults for empty values, as the SLA clock reads them
    try:
        make_window(sla.hours, sla.days)
    except ValueError as exc:
        return f"BUSINESS_HOURS={config.get('BUSINESS_HOURS')!r} / BUSINESS_DAYS={config.get('BUSINESS_DAYS')!r}: {exc}"
    return None


def _calling_window(config: Mapping) -> str | None:
    try:
        window_from_config(config)
    except ValueError as exc:
        return f"CALLING_WINDOW={config.get('CALLING_WINDOW')!r} / CALLING_DAYS={config.get('CALLING_DAYS')!r}: {exc}"
    return None


def _timezone(config: Mapping) -> str | None:
    name = config.get("BUSINESS_TIMEZONE")
    if not zone_exists(name):
        return f"BUSINESS_TIMEZONE={name!r}: not a time zone name (e.g. America/New_York)"
    return None


def _rate_limits(config: Mapping) -> str | None:
    bad = []
    for key in ("LOGIN_RATE_LIMIT", "INTAKE_RATE_LIMIT", "WEBHOOK_RATE_LIMIT"):
        try:
            parse_many(str(config.get(key)))
        except ValueError:
            bad.append(f"{key}={config.get(key)!r}")
    return f"{', '.join(bad)}: expected a rate such as '10 per minute' or '600/hour'" if bad else None


def _login_lockouts(config: Mapping) -> str | None:
    short, daily = config.get("LOGIN_MAX_FAILURES", 5), config.get("LOGIN_DAILY_MAX_FAILURES", 20)
    if int(daily) < int(short):
        # A day's allowance below the quarter hour's would lock for 24 hours where 15 minutes was meant.
        return f"LOGIN_DAILY_MAX_FAILURES={daily}: must be at least LOGIN_MAX_FAILURES ({short})"
    return None


def _geocoder(config: Mapping) -> str | None:
    try:
        get_geocoder(config)  # builds it; an online service is not called
    except ValueError as exc:
        return f"GEOCODER / GEOCODER_OPTIONS / GEOCODER_TIMEOUT / GEOCODER_MIN_DELAY: {exc}"
    return None


def _log_level(config: Mapping) -> str | None:
    value = config.get("LOG_LEVEL", "INFO")
    if not isinstance(logging.getLevelName(str(value).upper()), int):
        return f"LOG_LEVEL={value!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
    return None


def _mail(config: Mapping) -> str | None:
    if config.get("MAIL_USE_SSL") and config.get("MAIL_USE_TLS"):
        return "MAIL_USE_SSL and MAIL_USE_TLS are both on: SSL (port 465) or STARTTLS (port 587), not both"
    return None


def _next_attempt_hours(config: Mapping) -> str | None:
    from crm.services.followups import parse_attempt_hours

    try:
        parse_attempt_hours(config.get("NEXT_ATTEMPT_HOURS"))
    except ValueError as exc:
        return f"NEXT_ATTEMPT_HOURS={config.get('NEXT_ATTEMPT_HOURS')!r}: {exc}"
    return None


CHECKS: tuple[Callable[[Mapping], str | None], ...] = (
    _database_url,
    _rate_limit_storage,
    _login_lockouts,
    _business_hours,
    _calling_window,
    _next_attempt_hours,
    _timezone,
    _rate_limits,
    _geocoder,
    _log_level,
    _mail,
)
