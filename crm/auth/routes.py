from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from limits import parse
from limits.errors import StorageError

from crm.auth.forms import ChangePasswordForm, LoginForm, PostForm
from crm.extensions import db, limiter
from crm.security import mark_activity, referrer_path, safe_next
from crm.services import accounts, audit

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

BAD_CREDENTIALS = "Invalid email or password."
LOCKED = "Too many failed sign-in attempts. This account is locked for {duration}; try again later."


def _lock_policy() -> dict:
    """How many wrong passwords lock an account, and for how long: one rule for the sign-in page and
    the change-password page."""
    cfg = current_app.config
    return {
        "max_failures": cfg["LOGIN_MAX_FAILURES"],
        "lockout": cfg["LOGIN_LOCKOUT"],
        "daily_max_failures": cfg["LOGIN_DAILY_MAX_FAILURES"],
    }


def _lock_left(lockout: timedelta, until: datetime | None = None) -> timedelta:
    """What is left of the lock when its end is known (the 24-hour lock), else the short lock's length."""
    return until - datetime.now(UTC) if until is not None else lockout


def _lock_message(left: timedelta) -> str:
    minutes = max(math.ceil(left.total_seconds() / 60), 1)
    if minutes <= 120:
        return LOCKED.format(duration=f"{minutes} minute{'s' if minutes != 1 else ''}")
    hours = math.ceil(minutes / 60)
    return LOCKED.format(duration=f"{hours} hours")


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _email_throttle():
    """Failures per email, counted whether or not the account exists (no enumeration)."""
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return None
    cfg = current_app.config
    minutes = int(cfg["LOGIN_LOCKOUT"].total_seconds() // 60)
    return parse(f"{cfg['LOGIN_MAX_FAILURES']} per {minutes} minutes")


# The per-email throttle talks to the limiter's store directly, outside Flask-Limiter's own
# fallback. Should the store fail in the middle of a request, the attempt goes on: the account
# lockout (in the database) still counts it.
def _email_allowed(throttle, email_key: str) -> bool:
    try:
        return limiter.limiter.test(throttle, "login-email", email_key)
    except StorageError:
        log.warning("login: the rate limit store failed; the per-email throttle is skipped once")
        return True


def _count_email_failure(throttle, email_key: str) -> None:
    try:
        limiter.limiter.hit(throttle, "login-email", email_key)
    except StorageError:
        log.warning("login: the rate limit store failed; a failed sign-in went uncounted by the throttle")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("leads.queue"))
    form = LoginForm(next=request.args.get("next", ""))
    cfg = current_app.config
    if form.validate_on_submit():
        email_key = accounts.normalise_email(form.email.data)
        throttle = _email_throttle()
        if throttle is not None and not _email_allowed(throttle, email_key):
            audit.record("login_failed", "user", None, detail={"reason": "throttled"})
            db.session.commit()
            left = _lock_left(cfg["LOGIN_LOCKOUT"], accounts.lock_of(form.email.data))
            flash(_lock_message(left), "danger")
            retry = max(int(left.total_seconds()), 1)
            return render_template("auth/login.html", form=form), 429, {"Retry-After": str(retry)}
        result = accounts.sign_in(form.email.data, form.password.data, **_lock_policy())
        if result.user is None:
            used_up = False
            if throttle is not None:
                _count_email_failure(throttle, email_key)
                # The failure that uses up the email's allowance says "locked" whether or not an
                # account exists: a real one is locked on that same failure (LOGIN_MAX_FAILURES).
                used_up = not _email_allowed(throttle, email_key)
            db.session.commit()
            if result.locked or used_up:
                flash(_lock_message(_lock_left(cfg["LOGIN_LOCKOUT"], result.locked_until)), "danger")
            else:
                flash(BAD_CREDENTIALS, "danger")
            return render_template("auth/login.html", form=form), 200
        session.clear()  # drop anything from before sign-in (fixation)
        login_user(result.user)
        mark_activity()
        db.session.commit()
        return redirect(safe_next(form.next.data))
    return render_template("auth/login.html", form=form)


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
@limiter.limit(_login_limit, methods=["POST"])  # the current password is guessable here too
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        cfg = current_app.config
        try:
            accounts.change_own_password(user, form.current.data, form.password.data, **_lock_policy())
        except accounts.CurrentPasswordWrong as exc:
            db.session.commit()  # the failure counts, as a failed sign-in does
            if exc.locked:
                logout_user()
                session.clear()
                flash(_lock_message(_lock_left(cfg["LOGIN_LOCKOUT"], user.locked_until)), "danger")
                return redirect(url_for("auth.login"))
            form.current.errors = [str(exc)]
        except accounts.AccountError as exc:
            db.session.rollback()
            (form.current if exc.field == "current" else form.password).errors = [str(exc)]
        else:
            db.session.commit()
            login_user(user)  # the new session token: this session goes on, every other one has ended
            flash("Your password is changed. Any other place you were signed in is signed out.", "success")
            return redirect(safe_next(request.args.get("next")))
    return render_template("auth/password.html", form=form, required=current_user.must_change_password)


@bp.post("/logout")
@login_required
def logout():
    form = PostForm()
    if not form.validate_on_submit():
        flash("Your session form expired; please try again.", "warning")
        return redirect(safe_next(referrer_path()))
    user = current_user._get_current_object()
    audit.record("logout", "user", user.id, user=user)
    ended_shift = user.on_shift
    if ended_shift:
        # Signed out everywhere (below), so nobody is at the desk: leads dealt from now on would wait
        # for a specialist who is gone while their speed-to-lead clock runs.
        user.on_shift = False
        audit.record("shift_end", "user", user.id, user=user, detail={"by": "sign_out"})
    # The old cookie (or a copy of it) no longer loads anyone. Sessions live in the signed cookie,
    # so the server cannot end this one alone: the user's sessions in other browsers end too
    # (docs/admin.md, "Sessions").
    user.rotate_session()
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out" + (" and your shift has ended." if ended_shift else "."), "info")
    return redirect(url_for("auth.login"))


@bp.post("/shift")
@login_required
def toggle_shift():
    form = PostForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        user.on_shift = not user.on_shift
        audit.record("shift_start" if user.on_shift else "shift_end", "user", user.id)
        db.session.commit()
        flash("Shift started: new leads can be assigned to you." if user.on_shift else "Shift ended.", "info")
    return redirect(safe_next(request.form.get("next"), referrer_path()))


@bp.post("/session/keepalive")
def keepalive():
    """Typing and clicking inside a page are activity the server does not see: static/app.js
    reports them here (at most about once a minute), so a specialist writing a long note is not
    signed out as idle. Reaching this view is what refreshes the session (crm/security.py)."""
    if not current_user.is_authenticated:
        abort(401)
    return "", 204
