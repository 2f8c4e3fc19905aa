"""Counts shown in the navigation on every staff page.

Each count is bounded (``NAV_CAP``): the partial indexes answer them from a few
index pages, and a pool of 50,000 waiting leads shows as "99+" instead of
costing a full count on every page view. All four come back in one query.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Lead, Notification, User
from crm.services.leads_query import OPEN

NAV_CAP = 99


def _capped(stmt: sa.Select, cap: int = NAV_CAP):
    """``count(*)`` over at most ``cap + 1`` rows, as a scalar subquery."""
    return sa.select(sa.func.count()).select_from(stmt.limit(cap + 1).subquery()).scalar_subquery()


def label(n: int, cap: int = NAV_CAP) -> int | str:
    """The number itself (0 stays falsy for the templates), or "99+" past the cap."""
    return f"{cap}+" if n > cap else n


def nav_counts(user: User, now: datetime | None = None) -> dict[str, int | str]:
    """The four badges in one round trip; each is an index range of at most 100 entries."""
    now = now or datetime.now(UTC)
    row = db.session.execute(
        sa.select(
            # Each ORDER BY follows its partial index, so PostgreSQL reads at most 100 entries in
            # order instead of building a bitmap of the whole range before the LIMIT applies.
            _capped(
                sa.select(Lead.id)
                .where(Lead.assignee_id.is_(None), OPEN)
                .order_by(Lead.priority.desc(), Lead.created_at, Lead.id)
            ),
            _capped(
                sa.select(Lead.id)
                .where(Lead.assignee_id == user.id, OPEN)
                .order_by(Lead.next_follow_up_at, Lead.created_at, Lead.id)
            ),
            _capped(
                sa.select(Lead.id)
                .where(Lead.assignee_id == user.id, Lead.next_follow_up_at <= now, OPEN)
                .order_by(Lead.next_follow_up_at)
            ),
            _capped(sa.select(Notification.id).where(Notification.user_id == user.id, Notification.read_at.is_(None))),
        )
    ).one()
    unassigned, mine, due, unread = (int(v or 0) for v in row)
    return {
        "unassigned": label(unassigned),
        "mine": label(mine),
        "due": label(due),
        "notifications": label(unread),
        "due_n": due,
        "unassigned_n": unassigned,
        "notifications_n": unread,
    }
