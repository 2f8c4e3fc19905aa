"""Admin changes to staff accounts: role, activation, password reset, shift, capacity.

The one rule no admin may break: there is always at least one active admin, so
neither a demotion nor a deactivation may remove the last one. And no admin changes
their own role or deactivates themselves: another admin does. Functions flush
and audit; the request commits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, available_timezones

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.models import Lead, User
from crm.models.enums import OPEN_STATUSES, Role
from crm.services import accounts, audit, routing
from crm.services.contact import clean_name
from crm.services.directory import clean_languages
from crm.sqlite_lock import hold_write_lock


class UserAdminError(ValueError):
    pass


def active_admin_count(exclude: User | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(User).where(User.role == Role.ADMIN, User.active.is_(True))
    if exclude is not None:
        stmt = stmt.where(User.id != exclude.id)
    return db.session.scalar(stmt) or 0


def _is_last_admin(user: User) -> bool:
    # The active admins' rows are locked (PostgreSQL; on SQLite the database's write lock) until the
    # change commits, and the user read again under it: two admins demoting or deactivating each
    # other at once cannot both pass the check and leave none.
    hold_write_lock(db.session.connection())
    db.session.refresh(user)
    if user.role != Role.ADMIN or not user.active:
        return False
    admins = db.session.scalars(
        sa.select(User.id).where(User.role == Role.ADMIN, User.active.is_(True)).with_for_update()
    ).all()
    return not [i for i in admins if i != user.id]


def _clean_name(name: str | None) -> str:
    try:
        return clean_name(name)  # invisible characters dropped; a control character refused
    except ValueError as exc:
        raise UserAdminError(str(exc)) from None


def _refuse_own_account(user: User, by: User | None, what: str) -> None:
    # One click on your own page would lock you out of admin (no undo but another admin): a second
    # admin does it, so there is a second pair of eyes. The CLI (by=None) is not an admin's click.
    if by is not None and by.id == user.id:
        raise UserAdminError(f"You cannot {what}: ask another admin to do it.")


def change_role(user: User, role: Role | str, *, by: User | None = None) -> bool:
    role = Role(role)
    if user.role == role:
        return False
    if role != Role.ADMIN and _is_last_admin(user):
        raise UserAdminError(f"{user.name} is the last active admin: make someone else an admin first.")
    _refuse_own_account(user, by, "change your own role")
    old = user.role
    user.role = role
    db.session.flush()
    audit.record("change_role", "user", user.id, user=by, detail={"from": str(old), "to": str(role)})
    return True


def deactivate(user: User, *, by: User | None = None, hand_to: User | None = None) -> int | None:
    """Deactivate, end every live session of the user (their session token rotates) and give
    their open leads back to the pool, or to ``hand_to`` (an admin's choice: a colleague who
    takes over their booked patients and follow-ups, rather than nobody).

    Returns how many leads went back or over; None when the user was inactive already.
    """
    if not user.active:
        return None
    if _is_last_admin(user):
        raise UserAdminError(f"{user.name} is the last active admin and cannot be deactivated.")
    _refuse_own_account(user, by, "deactivate your own account")
    if hand_to is not None and (hand_to.id == user.id or not hand_to.active):
        raise UserAdminError("Hand their leads to someone else who is active, or back to the pool.")
    if hand_to is not None and by is None:
        raise UserAdminError("Only an admin can hand someone's leads to a colleague.")
    accounts.deactivate(user)
    if hand_to is not None:
        moved = _hand_open_leads(user, hand_to, actor=by)
        detail = {"leads_handed": moved, "to": hand_to.id}
    else:
        # Without an admin (a script), the leads' events name the user as giving them back.
        moved = _return_open_leads(user, actor=by or user)
        detail = {"leads_returned": moved}
    audit.record("deactivate_user", "user", user.id, user=by, detail=detail)
    return moved


def _held_open(user: User):
    return Lead.assignee_id == user.id, Lead.status.in_([s.value for s in OPEN_STATUSES])


def open_lead_count(user: User) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Lead).where(*_held_open(user))) or 0


def _move_open_leads(user: User, move) -> int:
    """``move(lead, now)`` for every open lead of ``user`` (booked ones too), follow-ups loaded."""
    leads = db.session.scalars(
        sa.select(Lead).where(*_held_open(user)).options(selectinload(Lead.follow_ups)).order_by(Lead.id)
    ).all()
    now = datetime.now(UTC)
    for lead in leads:
        move(lead, now)
    db.session.flush()
    return len(leads)


def _hand_open_leads(user: User, to: User, *, actor: User) -> int:
    """Every open lead of ``user`` to ``to``, follow-ups with them."""
    return _move_open_leads(user, lambda lead, now: routing.assign(lead, to, actor=actor, now=now))


def _return_open_leads(user: User, *, actor: User) -> int:
    """Unassign every open lead of ``user``, with its event and follow-ups.

    Someone who cannot sign in must not hold leads: the stale sweep leaves leads with a future
    follow-up and booked leads alone, so they would wait for nobody."""
    reason = f"{user.name} was deactivated"
    return _move_open_leads(user, lambda lead, now: routing.unassign(lead, actor=actor, now=now, reason=reason))


def reactivate(user: User, *, by: User | None = None) -> bool:
    if user.active:
        return False
    user.active = True
    user.failed_logins = 0
    user.locked_until = None
    accounts.clear_login_failures(user.email)
    db.session.flush()
    audit.record("reactivate_user", "user", user.id, user=by)
    return True


def unlock(user: User, *, by: User | None = None) -> bool:
    """Lift a sign-in lock (and forget the email's failure counts) without touching the password:
    the user locked themselves out. False when there was no lock."""
    mirrored = user.locked_until is not None and user.locked_until > datetime.now(UTC)
    if not mirrored and accounts.lock_of(user.email) is None:
        return False
    user.locked_until = None
    user.failed_logins = 0
    accounts.clear_login_failures(user.email)
    db.session.flush()
    audit.record("unlock_user", "user", user.id, user=by)
    return True


def reset_password(
    user: User, password: str, *, by: User | None = None, temporary: bool | None = None, via: str | None = None
) -> None:
    """Set a new password (the admin tells the user); existing sessions end, and the user
    chooses their own at the next sign-in (``temporary``, by default). ``via`` ("cli") is noted in
    the audit entry. An admin's own password is changed on their account page instead."""
    if by is not None and by.id == user.id:
        # Here it would be set without the current password, end this session too and flag the
        # admin's own choice as temporary; /account/password asks for the current one.
        raise UserAdminError(
            "You cannot reset your own password here: change it on your account page "
            "(your name at the top right, /account/password), which asks for your current password."
        )
    try:
        accounts.set_password(user, password)
    except accounts.AccountError as exc:
        raise UserAdminError(str(exc)) from exc
    if temporary is None:
        temporary = True  # the admin (or whoever ran the command without saying) knows it
    user.must_change_password = temporary
    audit.record(
        "reset_password", "user", user.id, user=by, detail={"via": via, "temporary": temporary} if via else None
    )
    # Signed out everywhere until they sign in again: off shift, so no lead is routed to them meanwhile.
    set_shift(user, False, by=by)


def clean_timezone(value: str) -> str:
    value = (value or "").strip()
    # Only zone names people mean ("America/Chicago", "UTC"), not the tz database's file
    # aliases such as "localtime" or "posixrules" (the server's own setting, whatever it is).
    if (
        value not in available_timezones()
        or ("/" not in value and value != "UTC")
        or value.startswith(("posix/", "right/"))
    ):
        raise UserAdminError(f"Unknown time zone {value!r}: use a name like America/New_York.")
    ZoneInfo(value)
    return value


def profile_snapshot(user: User) -> dict:
    """What the admin's profile form shows (crm/services/edit_guard.py)."""
    return {
        "name": user.name,
        "email": user.email,
        "capacity": user.capacity,
        "languages": list(user.languages or []),
        "timezone": user.timezone,
    }


def update_profile(
    user: User,
    *,
    name: str,
    capacity: int,
    languages: str | list[str],
    timezone: str,
    email: str | None = None,
    on_shift: bool | None = None,
    by: User | None = None,
) -> list[str]:
    """Update the everyday settings; returns the names of the fields that changed.

    ``email=None`` leaves the sign-in email alone; ``on_shift=None`` leaves the shift alone (the
    admin page changes it with ``set_shift``)."""
    name = _clean_name(name)
    if not name:
        raise UserAdminError("Enter a name.")
    if email is not None:
        email = _clean_new_email(email, user)
    if not 0 <= int(capacity) <= 500:
        raise UserAdminError("Capacity must be between 0 and 500 open leads.")
    try:
        langs = clean_languages(languages)
    except ValueError as exc:
        raise UserAdminError(str(exc)) from exc
    new = {
        "name": name,
        "capacity": int(capacity),
        "languages": langs,
        "timezone": clean_timezone(timezone),
    }
    if on_shift is not None:
        new["on_shift"] = bool(on_shift) and user.active
    if email is not None:
        new["email"] = email
    changed = [k for k, v in new.items() if getattr(user, k) != v]
    detail: dict = {"fields": changed}
    if "email" in changed:
        detail["email"] = [user.email, email]  # which address signed in before (a colleague's, not a patient's)
    for k in changed:
        setattr(user, k, new[k])
    if changed:
        db.session.flush()
        audit.record("update_user", "user", user.id, user=by, detail=detail)
    return changed


def _clean_new_email(email: str, user: User) -> str:
    """A sign-in email corrected by an admin (a typo at creation): valid, lower-cased, nobody else's."""
    try:
        email = accounts.normalise_login_email(email)
    except ValueError as exc:
        raise UserAdminError(f"Invalid email: {exc}") from exc
    taken = db.session.scalar(sa.select(User.id).where(User.email == email, User.id != user.id))
    if taken:
        raise UserAdminError(f"Another user signs in with that email ({email}).")
    return email


def set_shift(user: User, on_shift: bool, *, by: User | None = None) -> bool:
    on_shift = bool(on_shift) and user.active
    if user.on_shift == on_shift:
        return False
    if on_shift and user.must_change_password and (by is None or by.id != user.id):
        # Leads would be dealt to someone who cannot work them yet (the admin's password still stands).
        raise UserAdminError(
            f"{user.name} has not signed in with their own password yet: they start their shift "
            "themselves once they have."
        )
    user.on_shift = on_shift
    db.session.flush()
    audit.record("shift_on" if on_shift else "shift_off", "user", user.id, user=by, detail={"by_admin": True})
    return True


def new_user_problems(email: str, timezone: str) -> dict[str, str]:
    """What ``create_user`` would refuse about the email (invalid, taken) and the time zone, by form
    field: the new-user page reports them in the same round as the form's own errors, so the
    admin does not fix one thing per submit (and retype the password each time)."""
    problems = {}
    try:
        email = accounts.normalise_login_email(email)
    except ValueError as exc:
        problems["email"] = f"Invalid email: {exc}"
    else:
        if db.session.scalar(sa.select(User.id).where(User.email == email)):
            problems["email"] = f"A user with email {email} already exists."
    try:
        clean_timezone(timezone)
    except UserAdminError as exc:
        problems["timezone"] = str(exc)
    return problems


def create_user(
    email: str,
    name: str,
    password: str,
    role: Role | str,
    *,
    capacity: int = 40,
    languages: str | list[str] = "en",
    timezone: str = "America/New_York",
    by: User | None = None,
) -> User:
    try:
        langs = clean_languages(languages)
    except ValueError as exc:
        raise UserAdminError(str(exc)) from exc
    name = _clean_name(name)
    if not name:
        raise UserAdminError("Enter a name.")
    try:
        user = accounts.create_user(
            email, name, password, role, capacity=int(capacity), languages=langs, timezone=clean_timezone(timezone)
        )
    except accounts.AccountError as exc:
        raise UserAdminError(str(exc)) from exc
    user.must_change_password = True  # the admin chose it: the user replaces it at first sign-in
    audit.record("create_user", "user", user.id, user=by, detail={"role": str(user.role)})
    return user
