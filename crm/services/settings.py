"""Admin-editable runtime settings (the ``settings`` table), with config defaults."""

from __future__ import annotations

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Setting, User
from crm.services import audit

AUTO_ASSIGN = "auto_assign"


def get_setting(key: str, default=None):
    row = db.session.get(Setting, key)
    return default if row is None else row.value


def set_setting(key: str, value, *, actor: User | None = None) -> Setting:
    row = db.session.get(Setting, key)
    old = None if row is None else row.value
    if row is None:
        row = Setting(key=key, value=value)
        db.session.add(row)
    else:
        row.value = value
    audit.record("change_setting", "setting", key, user=actor, detail={"from": old, "to": value})
    db.session.flush()
    return row


def clear_setting(key: str, *, actor: User | None = None) -> None:
    row = db.session.get(Setting, key)
    if row is not None:
        audit.record("change_setting", "setting", key, user=actor, detail={"from": row.value, "to": None})
        db.session.execute(sa.delete(Setting).where(Setting.key == key))
        db.session.flush()


def auto_assign_enabled(config) -> bool:
    """The admin setting wins when set; otherwise the AUTO_ASSIGN config (on by default)."""
    value = get_setting(AUTO_ASSIGN)
    if value is None:
        return bool(config.get("AUTO_ASSIGN", True))
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
