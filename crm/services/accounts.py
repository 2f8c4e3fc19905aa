"""Staff accounts: passwords, sign-in with lockout, creation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email

from crm.extensions import db
from crm.models import User
from crm.models.enums import Role
from crm.services import audit

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def check_password_strength(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.")


def create_user(email: str, name: str, password: str, role: Role | str = Role.SPECIALIST, **fields) -> User:
    try:
        email = validate_email(email, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise AccountError(f"Invalid email: {exc}") from exc
    if db.session.scalar(db.select(User.id).where(User.email == email)):
        raise AccountError(f"A user with email {email} already exists.")
    check_password_strength(password)
    user = User(
        email=email, name=name.strip() or email, role=Role(role), password_hash=hash_password(password), **fields
    )
    db.session.add(user)
    db.session.flush()
    return user


@dataclass
class SignInResult:
    user: User | None
    locked: bool = False


def sign_in(email: str, password: str, *, max_failures: int, lockout: timedelta) -> SignInResult:
    """Check credentials, count failures and lock the account after too many.

    The caller shows one message for unknown email and wrong password alike.
    """
    now = datetime.now(UTC)
    user = db.session.scalar(db.select(User).where(User.email == normalise_email(email)))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        audit.record("login_failed", "user", None, detail={"reason": "bad_credentials"})
        return SignInResult(None)
    if user.locked_until and user.locked_until > now:
        verify_password(_DUMMY_HASH, password)  # as slow as any other answer: no tell by timing
        audit.record("login_failed", "user", user.id, user=user, detail={"reason": "locked"})
        return SignInResult(None, locked=True)
    # The hash is checked for a deactivated account too: answering it sooner would tell that the
    # email has an account (every refusal costs one argon2 verification).
    password_ok = verify_password(user.password_hash, password)
    if not user.active or not password_ok:
        user.failed_logins += 1
        locked = user.failed_logins >= max_failures
        if locked:
            user.locked_until = now + lockout
            user.failed_logins = 0
            audit.record("account_locked", "user", user.id, user=user)
        audit.record("login_failed", "user", user.id, user=user, detail={"reason": "bad_credentials"})
        return SignInResult(None, locked=locked)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    user.rotate_session()  # a fresh session id for every sign-in
    audit.record("login", "user", user.id, user=user)
    return SignInResult(user)


def set_password(user: User, password: str) -> None:
    check_password_strength(password)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.rotate_session()
    db.session.flush()


def deactivate(user: User) -> None:
    user.active = False
    user.on_shift = False
    user.rotate_session()
    db.session.flush()
