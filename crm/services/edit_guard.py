"""Two admins on one record: an edit form carries a snapshot of the values it showed (its hidden
``loaded`` field), and a save compares that with the record as it is now, so a save someone else
made in between is reported instead of silently overwritten.

The snapshot is the values themselves, not a version number: no column, no migration, and a change
to something the form does not show (a physician's coordinates, set by the geocoder) is no
conflict. Used by the physician, condition, state program and user profile forms.

The comparison runs under a lock held until the commit (``lock_for_edit``), so two admins saving
the same record at the same moment cannot both find it unchanged: the second waits for the first's
commit, then sees its values and is told."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from crm.extensions import db
from crm.sqlite_lock import hold_write_lock


def token(snapshot: dict[str, Any]) -> str:
    """The snapshot as the form carries it. Dates become ISO text, tuples lists."""
    # ensure_ascii=False: text in Cyrillic or CJK stays one character each, not a six-character escape
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def changed_since(current: dict[str, Any], loaded: str | None) -> list[str]:
    """Names of the fields whose value differs from the snapshot ``loaded`` (from ``token`` when
    the form was opened). No snapshot, or an unreadable one: nothing to compare, nothing reported."""
    try:
        before = json.loads(loaded or "")
    except (ValueError, RecursionError):  # nested too deep for the parser: made up, not from our page
        return []
    if not isinstance(before, dict):
        return []
    # Through JSON as the snapshot went, so equal values compare equal; in the snapshot's own order
    # (the form's), which is how the admin is told what changed.
    now = json.loads(json.dumps(current, ensure_ascii=False, default=str))
    return [name for name, value in now.items() if name in before and before[name] != value]


def lock_for_edit(record) -> None:
    """Hold ``record``'s row (PostgreSQL: SELECT ... FOR UPDATE) or, on SQLite, the database's write
    lock until the commit, then expire it, so that what is read next (its snapshot, its
    collections) is what is committed now and nobody else's save can slip in before this one."""
    connection = db.session.connection()
    if connection.dialect.name == "sqlite":
        hold_write_lock(connection)
    else:
        state = sa.inspect(record)
        (key,) = state.mapper.primary_key  # every edited model has a single id column
        (ident,) = state.identity
        db.session.execute(sa.select(key).where(key == ident).with_for_update())
    db.session.expire(record)
