"""Staff accounts: passwords, sign-in with lockout, creation."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy.exc import IntegrityError

from crm.extensions import db
from crm.models import LoginThrottle, User
from crm.models.enums import Role
from crm.services import audit
from crm.services.contact import clean_name

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field  # the form field the message belongs next to, when there is one


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


def normalise_login_email(email: str) -> str:
    """A staff sign-in email as stored: validated (no DNS look-up), lower-cased, compatibility
    characters folded (NFKC): a full-width "ｍaria@example.com" is maria@example.com, not a second
    account that looks the same in every list."""
    try:
        folded = unicodedata.normalize("NFKC", (email or "").strip())
        return validate_email(folded, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def create_user(email: str, name: str, password: str, role: Role | str = Role.SPECIALIST, **fields) -> User:
    try:
        email = normalise_login_email(email)
    except ValueError as exc:
        raise AccountError(f"Invalid email: {exc}") from exc
    if db.session.scalar(db.select(User.id).where(User.email == email)):
        raise AccountError(f"A user with email {email} already exists.")
    check_password_strength(password)
    user = User(
        email=email,
        name=clean_name(name, refuse_controls=False) or email,  # invisible characters dropped (contact.py)
        role=Role(role),
        password_hash=hash_password(password),
        **fields,
    )
    db.session.add(user)
    try:
        # A plain flush, not a savepoint: on SQLite a SAVEPOINT opened before any write is the
        # transaction itself, and its release would commit the account before its audit row.
        db.session.flush()
    except IntegrityError:
        # The same email created a moment ago (a double click on Create, two admins): the unique
        # index refuses the second, which gets the same answer as above instead of a 500. The
        # caller rolls the transaction back, as for any AccountError.
        raise AccountError(f"A user with email {email} already exists.") from None
    return user


@dataclass
class SignInResult:
    user: User | None
    locked: bool = False
    locked_until: datetime | None = None  # while ``locked``: when the email can sign in again


# The slow count's window and lock: guessing spread out under the short limit is stopped too.
DAILY_WINDOW = timedelta(hours=24)


def login_key(email: str) -> str:
    """The throttle's key for an email: an HMAC, so the table keeps no typed addresses."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, normalise_email(email).encode(), hashlib.sha256).hexdigest()


def _throttle(key: str) -> LoginThrottle:
    """The email's row, locked for this transaction (two workers counting one email take turns)."""
    stmt = sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
    row = db.session.scalar(stmt)
    if row is None:
        try:
            with db.session.begin_nested():
                row = LoginThrottle(key=key, failures=0)
                db.session.add(row)
                db.session.flush()
        except IntegrityError:  # another worker created it meanwhile
            row = db.session.scalar(stmt)
    return row


def lock_of(email: str) -> datetime | None:
    """When the email's lock ends, if it is locked now (the same answer for an unknown email)."""
    until = db.session.scalar(sa.select(LoginThrottle.locked_until).where(LoginThrottle.key == login_key(email)))
    return until if until is not None and until > datetime.now(UTC) else None


def clear_login_failures(email: str) -> None:
    """An admin's password reset or reactivation unlocks at once."""
    db.session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key == login_key(email)))


def _count_failure(
    row: LoginThrottle,
    user: User | None,
    now: datetime,
    max_failures: int,
    lockout: timedelta,
    daily_max_failures: int | None,
) -> bool:
    """One more wrong password for the email of ``row``; True when it locks the email now."""
    if row.window_started_at is None or now - row.window_started_at > lockout:
        row.failures, row.window_started_at = 0, now  # a new window
    row.failures += 1
    if row.day_started_at is None or now - row.day_started_at > DAILY_WINDOW:
        row.day_failures, row.day_started_at = 0, now
    row.day_failures = (row.day_failures or 0) + 1
    locked = row.failures >= max_failures
    if daily_max_failures is not None and row.day_failures >= daily_max_failures:
        locked, lock_for = True, max(DAILY_WINDOW, lockout)
        row.day_failures, row.day_started_at = 0, None
    else:
        lock_for = lockout
    if locked:
        row.locked_until = now + lock_for
        row.failures, row.window_started_at = 0, None
    if user is not None:
        user.failed_logins, user.locked_until = row.failures, row.locked_until
        if locked:
            audit.record("account_locked", "user", user.id, user=user)
    return locked


def sign_in(
    email: str, password: str, *, max_failures: int, lockout: timedelta, daily_max_failures: int | None = None
) -> SignInResult:
    """Check credentials, count failures and lock after too many.

    Failures are counted per email in ``login_throttles`` whether or not an account has that email:
    ``max_failures`` within ``lockout`` of the first one lock the email for ``lockout``, and
    ``daily_max_failures`` within 24 hours of the first lock it for 24 hours, with the same counts,
    windows and locks for an unknown email as for a real account (whose user row mirrors them:
    failed_logins, locked_until). Every refusal costs one argon2 verification. The caller shows
    one message for unknown email and wrong password alike.
    """
    now = datetime.now(UTC)
    user = db.session.scalar(sa.select(User).where(User.email == normalise_email(email)))
    row = _throttle(login_key(email))
    locked_until = max(filter(None, (row.locked_until, user.locked_until if user else None)), default=None)
    if locked_until and locked_until > now:
        verify_password(_DUMMY_HASH, password)  # as slow as any other answer: no tell by timing
        audit.record("login_failed", "user", user.id if user else None, user=user, detail={"reason": "locked"})
        return SignInResult(None, locked=True, locked_until=locked_until)
    # The hash is checked for a deactivated account too: answering it sooner would tell that the
    # email has an account (every refusal costs one argon2 verification).
    password_ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not user.active or not password_ok:
        locked = _count_failure(row, user, now, max_failures, lockout, daily_max_failures)
        audit.record("login_failed", "user", user.id if user else None, user=user, detail={"reason": "bad_credentials"})
        return SignInResult(None, locked=locked, locked_until=row.locked_until if locked else None)
    # The counts are not cleared: they run out with their windows, as an unknown email's do. Were
    # they cleared, the next failure's answer ("invalid" where an unknown email would be "locked")
    # would tell that the email has an account whose owner signs in.
    user.failed_logins = row.failures
    user.locked_until = None
    user.last_login_at = now
    # The session token is not rotated: that would end the user's sessions elsewhere (a desk PC
    # and a laptop). Tokens rotate only where sessions are meant to end: set_password, deactivate
    # and sign-out (crm/auth/routes.py).
    audit.record("login", "user", user.id, user=user)
    return SignInResult(user)


def set_password(user: User, password: str) -> None:
    check_password_strength(password)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    clear_login_failures(user.email)
    user.rotate_session()
    db.session.flush()


class CurrentPasswordWrong(AccountError):
    """A wrong current password on the change-password page: counted like a failed sign-in (the
    caller commits the count); ``locked`` when it locked the account and ended its sessions."""

    def __init__(self, message: str, *, locked: bool):
        super().__init__(message, field="current")
        self.locked = locked


def change_own_password(
    user: User,
    current: str,
    new: str,
    *,
    max_failures: int,
    lockout: timedelta,
    daily_max_failures: int | None = None,
) -> None:
    """A signed-in user replaces their password (the temporary one an admin gave them, say).
    The current password is asked again: a session left open is not enough. Every session of the
    user ends (the caller signs the current one in again); audited as ``change_password``.

    A wrong current password counts against the account as a failed sign-in does, audited
    ``change_password_failed``: someone at an unattended desk could otherwise guess it here without
    end, then change it and sign the owner out. The failure that locks the account ends its sessions,
    the one guessing included."""
    if not verify_password(user.password_hash, current or ""):
        now = datetime.now(UTC)
        locked = _count_failure(_throttle(login_key(user.email)), user, now, max_failures, lockout, daily_max_failures)
        audit.record("change_password_failed", "user", user.id, user=user, detail={"locked": locked})
        if locked:
            user.rotate_session()
            raise CurrentPasswordWrong("Too many wrong passwords: this account is locked.", locked=True)
        raise CurrentPasswordWrong("That is not your current password.", locked=False)
    if new == current:
        raise AccountError("Choose a password different from the current one.")
    set_password(user, new)
    user.must_change_password = False
    audit.record("change_password", "user", user.id, user=user)


def deactivate(user: User) -> None:
    user.active = False
    user.on_shift = False
    user.rotate_session()
    db.session.flush()
