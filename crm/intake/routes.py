"""Public pages (condition list and pages, the request form, thank-you), the intake webhook, /healthz."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import SQLAlchemyError

from crm.errors import CSRF_MESSAGE, PUBLIC_FORM_ENDPOINTS, error_response
from crm.extensions import db, limiter
from crm.intake.forms import CONSENT_TEXT, OTHER, TRACKING_FIELDS, RequestForm
from crm.models import Condition
from crm.services import geocoding, intake
from crm.services.markdown import render_markdown

bp = Blueprint("intake", __name__)


def _intake_limit() -> str:
    return current_app.config["INTAKE_RATE_LIMIT"]


def _published() -> list[Condition]:
    return list(
        db.session.scalars(
            sa.select(Condition).where(Condition.published.is_(True)).order_by(sa.func.lower(Condition.name))
        ).all()
    )


def _unpublished(slug: str) -> Condition | None:
    return db.session.scalar(sa.select(Condition).where(Condition.slug == slug.lower(), Condition.published.is_(False)))


def _search(conditions: list[Condition], q: str) -> list[Condition]:
    """Conditions whose words start with every word typed ("ms" finds MS, not "symptoms"),
    best first: the name or a synonym exactly, then matches in the name, then in the names and
    synonyms, then anywhere in the summary."""
    words = intake.words_of(q)
    if not words:  # nothing typed lists everything; only punctuation or symbols finds nothing
        return [] if q.strip() else conditions
    ranked = [(rank, c.name.lower(), c) for c in conditions if (rank := intake.search_rank(c, words)) is not None]
    return [c for *_, c in sorted(ranked, key=lambda r: r[:2])]


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/conditions")
def conditions():
    q = (request.args.get("q") or "").strip()[:100]
    everything = _published()
    found = _search(everything, q)
    suggestion = None
    if q and not found:
        suggestion = intake.match_condition(q, everything) or intake.close_condition(q, everything)
    return render_template(
        "public/conditions.html", conditions=found, q=q, total=len(everything), suggestion=suggestion
    )


def _new_form(conditions: list[Condition], preselect: str | None) -> RequestForm:
    form = RequestForm()
    form.set_conditions(conditions)
    if request.method == "GET":
        form.idempotency_token.data = uuid.uuid4().hex
        form.landing_page_url.data = request.url[:500]
        for name in TRACKING_FIELDS[1:]:
            getattr(form, name).data = (request.args.get(name) or "")[:100]
        if preselect:
            form.condition.data = preselect
    return form


def _handle_post(form: RequestForm, conditions: list[Condition]):
    """Validate and submit; returns a redirect on success or None to re-show the form."""
    if not form.validate_on_submit():
        return None
    by_slug = {c.slug: c for c in conditions}
    picked = form.condition.data or ""
    chosen = by_slug.get(picked) or (_canonical(picked, conditions) if picked not in ("", OTHER) else None)
    if picked not in ("", OTHER) and chosen is None:
        unlisted = _unpublished(picked)
        if unlisted is None:
            form.condition.errors = ["Choose a condition from the list."]
            return None
        # Taken off the site while the patient filled the form in: their choice is kept in their
        # own words, so nothing they sent is lost and the specialist sees what they picked.
        typed = (form.condition_text.data or "").strip()
        form.condition_text.data = (f"{unlisted.name}: {typed}" if typed else unlisted.name)[:200]
        form.condition.data = OTHER
    fields = form.intake_fields(chosen.name if chosen else None)
    if form.website.data:
        # Probably a bot, but a browser's autofill can fill the hidden field too: everything
        # sent is kept (status "spam") so an admin can replay a real patient's request.
        spam = {**fields, "website": form.website.data[:500]}
        intake.submit_form(
            spam, token=form.idempotency_token.data, remote_ip=request.remote_addr, headers=_headers(), spam=True
        )
        return redirect(url_for("intake.thank_you"))
    _, errors = intake.validate_fields(fields, require_consent=True)
    other = form.condition.data == OTHER
    if not chosen and not fields["condition"]:
        missing = (
            "Describe your condition in a few words, or choose it from the list."
            if other
            else "Choose a condition, or describe it in your own words."
        )
        errors.setdefault("condition", []).append(missing)
    if "zip" not in errors:
        _check_zip_exists(form, fields["zip"], errors)
    if errors:
        # After "Something else / not sure" the missing answer is the text box's, so its error is there.
        typed = bool((form.condition_text.data or "").strip()) or other
        for name, messages in errors.items():
            target = _error_field(form, name, typed_condition=typed and chosen is None)
            target.errors = list(target.errors or []) + messages
        return None
    try:
        intake.submit_form(fields, token=form.idempotency_token.data, remote_ip=request.remote_addr, headers=_headers())
    except SQLAlchemyError:
        # Not even the raw copy could be stored (database unreachable): keep everything on screen.
        db.session.rollback()
        current_app.logger.exception("intake: could not store a form submission")
        flash(
            "Sorry — we could not save your request just now. Everything you typed is still here; "
            "please press Book Appointment again in a minute.",
            "danger",
        )
        return None
    return redirect(url_for("intake.thank_you"))


def _check_zip_exists(form: RequestForm, zip_code: str, errors: dict) -> None:
    """A well-formed ZIP that no US address has (00000, a digit slipped) would reach a specialist
    with no state, no eligibility and no physician nearby. Asked once: a patient who sends the same
    ZIP again is taken at their word (our ZIP list may lack a brand-new one)."""
    zip5 = zip_code.strip()[:5]
    if geocoding.zip_known(zip5) or form.zip_checked.data == zip5:
        return
    form.zip_checked.data = zip5
    errors.setdefault("zip", []).append(
        f"We can't find the ZIP code {zip5}. Please check it; if it is right, press Book Appointment again."
    )


def _error_field(form: RequestForm, name: str, *, typed_condition: bool):
    """The form field an intake error belongs under: errors about the typed condition (or the one
    still to type, after "Something else / not sure") go under the text box, not under the list."""
    if name == "condition_details" or (name == "condition" and typed_condition):
        return form.condition_text
    return getattr(form, name, None) or form.condition


def _headers() -> dict[str, str]:
    keep = ("User-Agent", "Referer", "Accept-Language")
    return {k: request.headers[k][:500] for k in keep if k in request.headers}


@bp.errorhandler(429)
def _too_many(err):
    """The form's breach handler builds its own page (typed values kept); the webhook counts its own
    limit in front of Flask (crm/intake/webhook.py)."""
    if getattr(err, "response", None) is not None:
        return err.response
    limit = getattr(err, "limit", None)
    retry_after = str(max(int(limit.limit.get_expiry()), 1)) if limit is not None else "60"
    return error_response(429, None, {"Retry-After": retry_after})


def wait_words(seconds: int) -> str:
    """How long to wait, as the page says it: the same wait the Retry-After header gives."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = round(seconds / 60)
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def _form_rate_limited(limit):
    """Too many submissions from this IP: show the form again, typed values kept, with a clear message.
    The limit counts every post, those sent back for a correction too, so the words must not
    say that earlier requests were received. This post is not processed or stored."""
    retry = max(int(limit.reset_at - time.time()), 1)
    message = (
        "This form was sent from your connection too many times in a short while (every try counts, "
        "including ones sent back for a correction), so this one was not sent. Everything you typed is "
        f"still here: please wait {wait_words(retry)}, then press Book Appointment again."
    )
    # Like an expired token, a post from another site is not echoed back filled in.
    return _form_again(message, 429, {"Retry-After": str(retry)}, keep_values=_posted_from_our_site())


@bp.errorhandler(CSRFError)
def _form_expired(err):
    """The form's security token is missing or stale (the page was open for hours, the browser
    dropped its cookies): show the form again with everything typed and a fresh token, rather
    than an error page that loses the patient's request."""
    if request.endpoint not in PUBLIC_FORM_ENDPOINTS:
        return error_response(400, CSRF_MESSAGE)
    if not _posted_from_our_site():
        # A post from another site (what CSRF protection is for) is not echoed back filled in.
        message = "For your security, please fill in the form on this page to request an appointment."
        return _form_again(message, 400, keep_values=False)
    message = (
        "This page was open for a while, so for your security please tick the agreement box again "
        "and press Book Appointment once more. Everything else you typed is still here. (If you see "
        "this again, please allow cookies for this site.)"
    )
    return _form_again(message, 400, keep_consent=False)


def _posted_from_our_site() -> bool:
    """Browsers say where a form post came from (Sec-Fetch-Site, else Origin); one that says
    nothing (an old browser) is taken as ours, so its typed values are not lost."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:  # same-site: a sibling subdomain, e.g. the directory in front of us
        return site in ("same-origin", "same-site", "none")
    origin = request.headers.get("Origin")
    if not origin:
        return True
    try:
        return urlsplit(origin).netloc == request.host
    except ValueError:  # "http://[::1": no origin of ours
        return False


def _form_again(
    message: str,
    status: int,
    headers: dict[str, str] | None = None,
    *,
    keep_values: bool = True,
    keep_consent: bool = True,
):
    """The request form as posted (every typed value kept unless told otherwise) with ``message``
    above it. Consent is never carried over a security refusal: it must be the patient's own tick."""
    everything = _published()
    form = RequestForm() if keep_values else RequestForm(formdata=None)
    form.set_conditions(everything)
    slug = (request.view_args or {}).get("slug")
    condition = _canonical(slug, everything) if slug else None
    if not keep_values:
        form.idempotency_token.data = uuid.uuid4().hex
        form.condition.data = condition.slug if condition else ""
    if not keep_consent:
        form.consent.data = False
    if condition is not None:
        html = render_template(
            "public/condition.html",
            condition=condition,
            body=render_markdown(condition.body),
            form=form,
            consent_text=CONSENT_TEXT,
            notice=message,
        )
    else:
        html = render_template("public/request.html", form=form, consent_text=CONSENT_TEXT, notice=message)
    return make_response(html, status, headers or {})


def _canonical(slug: str, everything: list[Condition]) -> Condition | None:
    """The published condition a slug names: as written, in other capitals (/conditions/DYSTONIA,
    a link typed by hand) or a slug it had before a rename."""
    wanted = slug.lower()
    return next((c for c in everything if c.slug.lower() == wanted), None) or next(
        (c for c in everything if wanted in {s.lower() for s in c.former_slugs or []}), None
    )


def _to_condition_page(condition: Condition):
    target = url_for("intake.condition_page", slug=condition.slug)
    if request.query_string:
        target += "?" + request.query_string.decode("latin-1")
    # 308 for a form posted from a page opened before the rename: the browser posts it again
    # to the new address (a 301 would turn it into a GET and drop the patient's request).
    return redirect(target, 308 if request.method == "POST" else 301)


@bp.route("/conditions/<slug>/", methods=["GET", "POST"])
def condition_page_slash(slug: str):
    """/conditions/dystonia/ (a trailing slash added by hand or by another site's link)."""
    found = _canonical(slug, _published()) or (_unpublished(slug) if request.method == "POST" else None)
    return _to_condition_page(found or abort(404))


@bp.route("/conditions/<slug>", methods=["GET", "POST"])
@limiter.shared_limit(_intake_limit, scope="intake-form", methods=["POST"], on_breach=_form_rate_limited)
def condition_page(slug: str):
    everything = _published()
    condition = next((c for c in everything if c.slug == slug), None)
    if condition is None:
        renamed = _canonical(slug, everything)
        if renamed is not None:
            return _to_condition_page(renamed)
        if request.method == "POST" and _unpublished(slug) is not None:
            # A form opened before an admin unpublished the page: the request is still taken.
            form = _new_form(everything, None)
            return _handle_post(form, everything) or render_template(
                "public/request.html", form=form, consent_text=CONSENT_TEXT
            )
        abort(404)
    form = _new_form(everything, condition.slug)
    if request.method == "POST":
        done = _handle_post(form, everything)
        if done is not None:
            return done
    return render_template(
        "public/condition.html",
        condition=condition,
        body=render_markdown(condition.body),
        form=form,
        consent_text=CONSENT_TEXT,
    )


@bp.route("/request", methods=["GET", "POST"])
@limiter.shared_limit(_intake_limit, scope="intake-form", methods=["POST"], on_breach=_form_rate_limited)
def request_form():
    everything = _published()
    preselect = request.args.get("condition")
    form = _new_form(everything, preselect if any(c.slug == preselect for c in everything) else None)
    if request.method == "POST":
        done = _handle_post(form, everything)
        if done is not None:
            return done
    return render_template("public/request.html", form=form, consent_text=CONSENT_TEXT)


@bp.get("/thank-you")
def thank_you():
    return render_template("public/thank_you.html")
