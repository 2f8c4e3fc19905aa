"""Settings checked when the app is built, so a bad value stops the start with a message that
names the variable, instead of a 500 on the first page or a job failing quietly later."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from limits import parse_many

from crm import ConfigError
from crm.services.calling_window import DEFAULT_DAYS, DEFAULT_WINDOW, make_window, zone_exists
from crm.services.geocoding import get_geocoder


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError listing every setting the app cannot run with."""
    problems = [problem for check in CHECKS if (problem := check(config))]
    if problems:
        raise ConfigError("Configuration error:\n  " + "\n  ".join(problems))


def _window(hours_key: str, days_key: str, hours_default: str, days_default: str) -> Callable[[Mapping], str | None]:
    def check(config: Mapping) -> str | None:
        hours, days = config.get(hours_key), config.get(days_key)
        try:
            make_window(hours or hours_default, days or days_default)  # empty: the default, as in use
        except ValueError as exc:
            return f"{hours_key}={hours!r} / {days_key}={days!r}: {exc}"
        return None

    return check


def _timezone(config: Mapping) -> str | None:
    name = config.get("BUSINESS_TIMEZONE")
    if not zone_exists(name):
        return f"BUSINESS_TIMEZONE={name!r}: not a time zone name (e.g. America/New_York)"
    return None


def _rate_limits(config: Mapping) -> str | None:
    for key in ("LOGIN_RATE_LIMIT", "INTAKE_RATE_LIMIT", "WEBHOOK_RATE_LIMIT"):
        value = config.get(key)
        try:
            parse_many(str(value))
        except ValueError:
            return f"{key}={value!r}: expected a rate such as '10 per minute' or '600/hour'"
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


CHECKS: tuple[Callable[[Mapping], str | None], ...] = (
    _window("BUSINESS_HOURS", "BUSINESS_DAYS", "08:00-20:00", "mon,tue,wed,thu,fri"),
    _window("CALLING_WINDOW", "CALLING_DAYS", DEFAULT_WINDOW, DEFAULT_DAYS),
    _timezone,
    _rate_limits,
    _geocoder,
    _log_level,
    _mail,
)
