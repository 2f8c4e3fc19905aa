"""Counts shown in the navigation on every staff page.

Each count is bounded (``NAV_CAP``): the partial indexes answer them from a few
index pages, and a pool of 50,000 waiting leads shows as "999+" instead of
costing a full count on every page view.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Lead, Notification, User
from crm.services.leads_query import OPEN

NAV_CAP = 999


def _capped(stmt: sa.Select, cap: int = NAV_CAP) -> int:
    inner = stmt.limit(cap + 1).subquery()
    return db.session.scalar(sa.select(sa.func.count()).select_from(inner)) or 0


def label(n: int, cap: int = NAV_CAP) -> int | str:
    """The number itself (0 stays falsy for the templates), or "999+" past the cap."""
    return f"{cap}+" if n > cap else n


def nav_counts(user: User, now: datetime | None = None) -> dict[str, int | str]:
    now = now or datetime.now(UTC)
    unassigned = _capped(sa.select(Lead.id).where(Lead.assignee_id.is_(None), OPEN))
    mine = _capped(sa.select(Lead.id).where(Lead.assignee_id == user.id, OPEN))
    due = _capped(sa.select(Lead.id).where(Lead.assignee_id == user.id, Lead.next_follow_up_at <= now, OPEN))
    unread = _capped(sa.select(Notification.id).where(Notification.user_id == user.id, Notification.read_at.is_(None)))
    return {
        "unassigned": label(unassigned),
        "mine": label(mine),
        "due": label(due),
        "notifications": label(unread),
        "due_n": due,
        "unassigned_n": unassigned,
        "notifications_n": unread,
    }
