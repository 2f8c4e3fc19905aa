"""Session handling and response headers (SPEC 12)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import wraps
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

from flask import abort, flash, g, redirect, request, session, url_for
from flask_login import current_user, logout_user

from crm.errors import PUBLIC_FORM_ENDPOINTS
from crm.extensions import db, login_manager

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)

# Static files and machine endpoints never carry a login: no user is loaded and no session is
# touched for them.
SESSIONLESS_ENDPOINTS = frozenset({"static", "bootstrap.static", "intake.healthz"})
# What a user whose password an admin set may still do before choosing their own.
OWN_PASSWORD_ENDPOINTS = frozenset({"auth.change_password", "auth.logout", "auth.keepalive"})


def is_safe_next(target: str | None) -> bool:
    """Only same-host, relative redirects: a path starting with one "/", no scheme, no host.

    Browsers read a backslash as "/" and drop tabs and newlines anywhere in a URL (and spaces
    or control characters at its ends), so ``/\\evil.com`` and ``/<tab>/evil.com`` would become
    ``//evil.com``, another host: any backslash, whitespace or control character refuses the
    target outright."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return False
    if "\\" in target or any(ch.isspace() or not ch.isprintable() for ch in target):
        return False
    try:
        ref = urlsplit(request.host_url)
        test = urlsplit(urljoin(request.host_url, target))
    except ValueError:  # a Host header urlsplit cannot read ("[::1"): nothing is safe to go to
        return False
    return test.scheme in ("http", "https") and test.netloc == ref.netloc


def safe_next(target: str | None, default: str | None = None) -> str:
    """Where to send the user: ``target`` when it is a path on this site, else ``default`` (the
    queue). Every redirect or link back built from something the request carries (a ``next``
    parameter, the Referer, the page's own address) goes through here."""
    return target if is_safe_next(target) else (default or url_for("leads.queue"))


# Query parameters that may hold what identifies a patient (the queue's search: a name, an email, a
# phone number): never carried into a way-back address, which the sign-in page shows in the address
# bar and the browser keeps in its history on a screen nobody is watching.
PRIVATE_PARAMS = frozenset({"q"})


def _without_private(query: str) -> str:
    if not query:
        return ""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in PRIVATE_PARAMS]
    return urlencode(kept)


def referrer_path() -> str | None:
    """The page this request came from, as a path on this site (None if another site or none):
    where to go back to after a form post that could not be handled."""
    ref = request.referrer
    if not ref:
        return None
    try:
        parts = urlsplit(ref)
        if parts.netloc != urlsplit(request.host_url).netloc:
            return None
    except ValueError:  # a Referer (or Host) header that is no URL, e.g. "http://[::1": no way back
        return None
    query = _without_private(parts.query)
    target = parts.path + (f"?{query}" if query else "")
    return target if is_safe_next(target) and _has_page(parts.path) else None


def _has_page(path: str) -> bool:
    """A path a GET can open (a page re-shown after a failed post sits at the post's address,
    e.g. /leads/5/calls, which only takes POST)."""
    from flask import current_app
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    try:
        current_app.url_map.bind(request.host).match(path, method="GET")
    except RequestRedirect:
        return True
    except HTTPException:
        return False
    return True


def return_url() -> str:
    """Where this page comes back to after an automatic sign-out (static/app.js): itself when it
    was opened with a GET, else the page its form was sent from, else the queue."""
    if request.method == "GET":
        # The path as the browser sent it (request.path is decoded: %5C would be a backslash).
        query = _without_private(request.query_string.decode("latin-1"))
        return safe_next(quote(request.path, safe="/") + (f"?{query}" if query else ""))
    return referrer_path() or url_for("leads.queue")


def idle_sign_out_message(app) -> str:
    """Why the user is on the sign-in page; a form sent with the request was not saved."""
    minutes = max(round(app.config["IDLE_TIMEOUT"].total_seconds() / 60), 1)
    message = f"You were signed out after {minutes} minute{'s' if minutes != 1 else ''} without activity."
    return message if request.method == "GET" else message + " What you had just sent was not saved."


# Flask-Login's session key for the user's session token (crm/models/users.py, get_id).
_SESSION_USER_KEY = "_user_id"


def ended_session_message() -> str:
    """Why a session whose token no longer loads its user is on the sign-in page: the token is
    rotated by a password change or reset, a sign-out elsewhere (every session of the account
    ends) and a deactivation, never by idleness, so the idle message would mislead."""
    message = (
        "You were signed out: your password was changed or reset, you signed out in another browser, "
        "or your account was deactivated."
    )
    return message if request.method == "GET" else message + " What you had just sent was not saved."


def session_ended_elsewhere() -> bool:
    """Whether this request carries a signed-in session whose token no longer loads anyone."""
    return session.get(_SESSION_USER_KEY) is not None and not current_user.is_authenticated


def mark_activity() -> None:
    """The session's last activity, which the idle limit counts from (set at sign-in too, so a
    cookie copied from the sign-in answer and never used is refused after the limit as well)."""
    session["last_seen"] = datetime.now(UTC).timestamp()
    session.permanent = True


def role_required(*roles):
    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def admin_required(view):
    from crm.models.enums import Role

    return role_required(Role.ADMIN)(view)


_BASELINE_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "geolocation=(), camera=(), microphone=()"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
# Not on the debug server: it speaks plain http on localhost, which HSTS would pin to https.
_WITH_HSTS = (*_BASELINE_HEADERS, ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))


def baseline_headers(debug: bool) -> tuple[tuple[str, str], ...]:
    """The headers every response carries: Flask's (init_app below) and the webhook's (crm/intake/webhook.py)."""
    return _BASELINE_HEADERS if debug else _WITH_HSTS


def init_app(app) -> None:
    from crm.models import User

    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    @login_manager.unauthorized_handler
    def sign_in_first():
        from crm.errors import wants_json

        if wants_json():
            abort(401)
        if session_ended_elsewhere():
            session.clear()  # the dead token: said once, not on every page after this one
            flash(ended_session_message(), "info")
        elif request.method == "GET":
            flash(login_manager.login_message, login_manager.login_message_category)
        else:  # a form posted once the session had ended
            flash(idle_sign_out_message(app), "info")
        return redirect(url_for("auth.login", next=return_url()))

    @login_manager.user_loader
    def load_user(token: str):
        # The session carries the user's session token, not their id: a password change or
        # reset, a sign-out and a deactivation rotate it, which ends every session of the user
        # (a sign-in does not: one person may work on a desk PC and a laptop at once).
        return db.session.scalar(db.select(User).where(User.session_token == token, User.active.is_(True)))

    @app.before_request
    def forget_cached_user():
        # g outlives a request when an app context was already pushed (tests,
        # CLI-driven requests); always load the user from this request's session.
        g.pop("_login_user", None)

    @app.before_request
    def enforce_idle_timeout():
        if request.endpoint in SESSIONLESS_ENDPOINTS or not current_user.is_authenticated:
            return None
        now = datetime.now(UTC).timestamp()
        last = session.get("last_seen")
        timeout = app.config["IDLE_TIMEOUT"].total_seconds()
        # No last_seen on a signed-in session: a cookie from before sign-in stamped one, or made by
        # hand. Nothing says it was active, so it counts as idle (sign-in sets it, crm/auth/routes.py).
        if last is None or now - last > timeout:
            # Only this browser's session ends: the token is not rotated, so the user's other
            # sessions go on (this cookie's own last_seen refuses it from now on anyway).
            logout_user()
            session.clear()
            if request.path.startswith(("/api/", "/webhooks/")) or request.endpoint == "auth.keepalive":
                abort(401)
            # Sign in again lands back on the page (for a post: the page it was sent from).
            flash(idle_sign_out_message(app), "info")
            return redirect(url_for("auth.login", next=return_url()))
        mark_activity()
        return None

    @app.before_request
    def insist_on_own_password():
        endpoint = request.endpoint or ""
        if endpoint in SESSIONLESS_ENDPOINTS or endpoint in OWN_PASSWORD_ENDPOINTS or endpoint.startswith("intake."):
            return None  # the public pages need no account at all
        if not current_user.is_authenticated or not current_user.must_change_password:
            return None
        from crm.errors import wants_json

        if wants_json():
            abort(403)
        # The change page says why (auth/password.html), and sends the user on to this page.
        return redirect(url_for("auth.change_password", next=return_url()))

    @app.after_request
    def security_headers(response):
        headers = response.headers
        for name, value in baseline_headers(app.debug):
            if name == "Content-Security-Policy":
                headers.setdefault(name, value)  # a page may set its own
            else:
                headers[name] = value
        # The user as loaded by this request (pages with patient data all require a login, so they
        # loaded it); reading current_user here would load one for public and machine requests too.
        user = g.get("_login_user")
        if user is not None and getattr(user, "is_authenticated", False):
            # Pages with patient data must not sit in shared caches or the back button.
            headers.setdefault("Cache-Control", "no-store")
        elif request.endpoint in PUBLIC_FORM_ENDPOINTS:
            # The request form: re-shown after a refusal it holds what the patient typed (their health
            # message too), on what may be a shared computer; and every copy has its own form tokens.
            headers.setdefault("Cache-Control", "no-store")
        return response
