"""Staff users and the audit trail."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.models.base import Base, utcnow
from crm.models.enums import Role
from crm.models.types import StrEnumType


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


class User(UserMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    role: Mapped[Role] = mapped_column(StrEnumType(Role), default=Role.SPECIALIST)
    active: Mapped[bool] = mapped_column(default=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    capacity: Mapped[int] = mapped_column(default=40)
    on_shift: Mapped[bool] = mapped_column(default=False)
    languages: Mapped[list[str]] = mapped_column(sa.JSON, default=lambda: ["en"])
    timezone: Mapped[str] = mapped_column(sa.String(64), default="America/New_York")
    last_login_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    last_assigned_at: Mapped[datetime | None]
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    # Set when an admin creates the account or resets its password (the admin knows that one);
    # until the user chooses their own, every page but the change page sends them there.
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # Rotated at a password change or reset, sign-out and deactivation (not at sign-in: one person
    # may work on two machines): a session cookie carrying an old token no longer loads the user.
    session_token: Mapped[str] = mapped_column(sa.String(64), unique=True, default=new_session_token)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def get_id(self) -> str:
        return self.session_token

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def rotate_session(self) -> None:
        self.session_token = new_session_token()

    def __repr__(self) -> str:
        return f"<User {self.id} {self.role}>"


class LoginThrottle(Base):
    """Failed sign-ins per email, whether or not an account has that email (crm/services/accounts.py):
    the same count, window and lock for both, so no answer tells which emails have accounts. The key
    is an HMAC of the normalised email, so the table does not keep what strangers typed."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    # A second, slower count: failures within 24 h of the first, so that guessing just under the
    # short window's limit is stopped too (LOGIN_DAILY_MAX_FAILURES).
    day_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    day_started_at: Mapped[datetime | None]


class AuditLog(Base):
    """Append-only: who did or saw what, from where."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(40), index=True)
    object_type: Mapped[str | None] = mapped_column(sa.String(40))
    object_id: Mapped[str | None] = mapped_column(sa.String(64))
    ip: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[dict | None] = mapped_column(sa.JSON)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    user: Mapped[User | None] = relationship()

    __table_args__ = (sa.Index("ix_audit_log_object", "object_type", "object_id"),)
