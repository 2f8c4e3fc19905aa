"""In-app notifications: one per dedupe key, and who the admins to tell are.

Jobs (SLA, geocoding, mail, registrations) alert people here; a job that runs twice, or two runners
at once, write one notification per key.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Lead, Notification, User
from crm.models.enums import Role


def active_admins() -> list[User]:
    return list(
        db.session.scalars(sa.select(User).where(User.role == Role.ADMIN, User.active.is_(True)).order_by(User.id))
    )


def key_prefixed(column, prefix: str):
    """``column LIKE 'prefix%'`` with ``_`` and ``%`` taken literally (a range would depend on the
    database's collation)."""
    return column.startswith(prefix, autoescape=True)


def notify(
    user: User, kind: str, message: str, *, lead: Lead | None = None, dedupe_key: str | None = None, at=None
) -> int:
    """One in-app notification; a dedupe key already used means it was sent before (returns 0)."""
    if dedupe_key is not None:
        exists = db.session.scalar(sa.select(Notification.id).where(Notification.dedupe_key == dedupe_key))
        if exists:
            return 0
    try:
        with db.session.begin_nested():
            db.session.add(
                Notification(
                    user_id=user.id,
                    kind=kind,
                    message=message[:500],
                    lead_id=lead.id if lead is not None else None,
                    dedupe_key=dedupe_key,
                    created_at=at or datetime.now(UTC),
                )
            )
    except sa.exc.IntegrityError:
        return 0  # a concurrent runner wrote the same key
    return 1
