"""Settings checked when the app is built, so a bad value stops the start with a message that
names the variable, instead of a 500 on the first page or a job failing quietly later."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

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


CHECKS: tuple[Callable[[Mapping], str | None], ...] = (
    _business_hours,
    _calling_window,
    _timezone,
    _rate_limits,
    _geocoder,
    _log_level,
    _mail,
)
