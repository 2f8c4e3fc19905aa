"""Jinja filters and the values every page needs (navigation counts, shift state)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import request
from flask_login import current_user

from crm.auth.forms import PostForm
from crm.security import return_url
from crm.services.contact import format_phone


def to_zone(value: datetime | None, tz: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(ZoneInfo(tz or "UTC"))
    except (KeyError, ValueError):
        return value.astimezone(UTC)


def format_dt(value: datetime | None, tz: str | None = None, fmt: str = "%b %d, %Y %I:%M %p %Z") -> str:
    local = to_zone(value, tz or _user_tz())
    return local.strftime(fmt) if local else ""


def _user_tz() -> str:
    if current_user and getattr(current_user, "is_authenticated", False):
        return current_user.timezone
    return "America/New_York"


def age(value: datetime | None, now: datetime | None = None) -> str:
    """Short human age: 45s, 12m, 3h 5m, 2d 4h."""
    if value is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    if seconds < 0:
        return "in " + age(now or datetime.now(UTC), value)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def post_form() -> PostForm:
    """A form for its CSRF token only (nav buttons, POST-only buttons in pages).

    It never reads the request body: on the error page for a too-large upload (413) reading it
    again would raise inside the error handler and turn the page into a 500."""
    return PostForm(formdata=None)


# Words a stored value spells in lower case that people write otherwise.
_WORDS = {"cbd": "CBD", "sms": "SMS", "npi": "NPI", "utm": "UTM", "ip": "IP", "url": "URL"}


def humanize(value: str | None) -> str:
    """``cbd_only`` → "CBD only", ``follow_up_due`` → "Follow-up due"."""
    text = (value or "").replace("_", " ").replace("follow up", "follow-up")
    text = " ".join(_WORDS.get(word, word) for word in text.split(" "))
    return text[:1].upper() + text[1:]


def init_app(app) -> None:
    app.jinja_env.filters["dt"] = format_dt
    app.jinja_env.filters["age"] = age
    app.jinja_env.filters["humanize"] = humanize
    app.jinja_env.filters["to_zone"] = to_zone
    app.jinja_env.filters["phone"] = format_phone
    app.jinja_env.globals["return_url"] = return_url

    @app.context_processor
    def inject_globals():
        values = {"post_form": post_form, "now_utc": datetime.now(UTC), "view_functions": app.view_functions}
        if current_user and getattr(current_user, "is_authenticated", False) and not request.path.startswith("/static"):
            from crm.services.queue_counts import nav_counts

            values["nav_counts"] = nav_counts(current_user)
        return values
