"""Error pages: HTML for people, JSON for /webhooks/ and /api/ clients."""

from __future__ import annotations

from flask import flash, jsonify, make_response, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

MESSAGES = {
    400: "The request could not be understood.",
    401: "Authentication is required.",
    403: "You do not have permission to open this page.",
    404: "We could not find that page.",
    405: "That action is not allowed here.",
    409: "Someone else changed this record at the same time.",
    413: "The request is too large.",
    415: "Send this as a form (application/x-www-form-urlencoded or multipart/form-data), not JSON.",
    422: "Some fields need attention.",
    429: "Too many requests. Please wait a moment and try again.",
    500: "Something went wrong on our side. The error was logged.",
}


# A file over MAX_CONTENT_LENGTH is refused before the view runs: say what the limit is and the way
# around it, rather than "the request is too large" (a full directory export is well over 2 MB).
UPLOAD_ENDPOINTS = {
    "admin.physicians_import": (
        "The file is larger than the {mb:g} MB upload limit. Split it into smaller files, or import it on "
        "the server with: flask --app wsgi crm physicians import FILE"
    ),
}


def wants_json() -> bool:
    return request.path.startswith(("/webhooks/", "/api/")) or request.accept_mimetypes.best == "application/json"


# The public request form's two pages: they clean pasted control characters themselves
# (crm/intake/forms.py) instead of refusing the whole request, since a patient cannot see them in
# what they pasted, and re-show the form when its security token has expired (crm/intake/routes.py).
PUBLIC_FORM_ENDPOINTS = frozenset({"intake.condition_page", "intake.request_form"})
CSRF_MESSAGE = "Your form expired or was sent from elsewhere. Please reload the page and try again."


def error_response(code: int, message: str | None = None, headers: dict | None = None, back: str | None = None):
    """``back``: a page to offer instead of the start page (the upload form a file was too big for)."""
    message = message or MESSAGES.get(code, "Error")
    if wants_json():
        resp = jsonify({"error": message})
    else:
        resp = make_response(render_template("errors/error.html", code=code, message=message, back=back))
    resp.status_code = code
    resp.headers.update(headers or {})
    return resp


def refuse_json_bodies():
    """No page of this app takes a JSON body (the webhook, which does, is answered in front of Flask).
    Flask-WTF would read one as a form's fields, and anything but an object of strings (``[1]``, a
    number for a note, half a document) failed inside the form: a 500 instead of the sender's error."""
    if request.endpoint is not None and request.method not in ("GET", "HEAD", "OPTIONS") and request.is_json:
        return error_response(415)
    return None


def init_app(app) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(err):
        from flask_login import current_user

        from crm.security import ended_session_message, idle_sign_out_message, referrer_path, session_ended_elsewhere

        signed_out = not current_user.is_authenticated
        public = (request.endpoint or "").startswith("intake.") or request.endpoint == "auth.login"
        if signed_out and not public and not wants_json():
            # The session (and its form token) ended while the page was open: say why, and come
            # back to that page after signing in, instead of a dead-end error page.
            flash(ended_session_message() if session_ended_elsewhere() else idle_sign_out_message(app), "info")
            return redirect(url_for("auth.login", next=referrer_path()))
        return error_response(400, CSRF_MESSAGE)

    @app.errorhandler(429)
    def rate_limited(err):
        limit = getattr(err, "limit", None)
        retry_after = str(int(limit.limit.get_expiry())) if limit is not None else "60"
        return error_response(429, None, {"Retry-After": retry_after})

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        # Keep our wording unless a view passed a specific description.
        custom = err.description != type(err).description
        headers = {k: v for k, v in err.get_headers() if k == "Allow"}
        message = err.description if custom else None
        back = None
        if err.code == 413 and request.endpoint in UPLOAD_ENDPOINTS:
            message = UPLOAD_ENDPOINTS[request.endpoint].format(mb=app.config["MAX_CONTENT_LENGTH"] / 1024 / 1024)
            back = url_for(request.endpoint)
        return error_response(err.code or 500, message, headers, back=back)

    @app.errorhandler(DataError)
    def unstorable_value(err):
        # A value the database refuses (e.g. a NUL character on PostgreSQL): the input's fault.
        from crm.extensions import db

        db.session.rollback()
        app.logger.warning("refused a value the database cannot store on %s %s", request.method, request.path)
        return error_response(400, "The request contains characters or values that cannot be stored.")

    @app.errorhandler(OverflowError)
    def out_of_range(err):
        # A number or date too large for Python's dates or SQLite's integers (a crafted request;
        # the forms bound what people type): the input's fault, not a 500.
        from crm.extensions import db

        db.session.rollback()
        app.logger.warning("refused an out-of-range value on %s %s", request.method, request.path)
        return error_response(400, "A number or date in the request is out of range.")

    @app.before_request
    def refuse_control_characters():
        # NUL and other control characters in a submitted form are never typed by a person.
        # Webhooks are left alone: their raw body is stored first and refused with a 422 by intake.
        from crm.services.intake import CONTROL_RE

        if request.path.startswith("/webhooks/") or request.endpoint in PUBLIC_FORM_ENDPOINTS:
            return None
        # (Query strings are left to their forms' own validation; a value the database then refuses
        # is the DataError handler's 400.)
        for values in request.form.listvalues():
            if any(CONTROL_RE.search(v) for v in values if isinstance(v, str)):
                return error_response(400, "The form contains control characters; please type plain text.")
        return None

    @app.errorhandler(Exception)
    def unhandled(err):
        from crm.extensions import db

        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        return error_response(500)
