"""/admin/sources: webhook sources: create (secret shown once), rotate, field mapping, test delivery.

Built on crm/services/sources.py (create_source, rotate_secret, active_secrets,
sign_test_delivery). A test delivery is posted in-process through the app's own
test client to POST /webhooks/intake/<slug>, so it takes exactly the path a real
delivery takes, without any network.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.exc import StaleDataError

from crm.admin.forms import SourceCreateForm, SourceMappingForm, TestDeliveryForm, parse_mapping
from crm.admin.routes import bp
from crm.extensions import db
from crm.intake import mapping_examples
from crm.models import InboxItem, WebhookSource
from crm.models.base import utcnow
from crm.services import audit, intake
from crm.services import sources as source_service

# "Start from an example" on the mapping editor: key (crm/intake/mapping_examples.py EXAMPLES) -> label.
EXAMPLE_CHOICES = {
    "plain-json": "Plain JSON (a nested body with its own names)",
    "typeform": "Typeform-shaped (answers by field reference)",
    "typeform-by-position": "Typeform-shaped (answers by position)",
    "gravity-forms": "Gravity Forms-shaped (flat, by field id)",
}

# The last test delivery's outcome, kept in the session from the POST to the page it redirects to
# (POST-redirect-GET: reloading that page shows it again without sending another delivery).
TEST_RESULT_KEY = "source_test_result"
TEST_BODY_MAX = 1500  # characters of the endpoint's answer kept (the session is a cookie)


def _source(source_id: int) -> WebhookSource:
    return db.session.get(WebhookSource, source_id) or abort(404)


def _webhook_url(source: WebhookSource) -> str:
    return f"{request.host_url.rstrip('/')}/webhooks/intake/{source.slug}"


def _validate_mapping(mapping: dict) -> None:
    """The form checks the JSON shape; the intake service knows our fields and its path syntax."""
    from crm.services.intake import validate_mapping

    validate_mapping(mapping)


def _intake_fields() -> dict[str, str]:
    try:
        from crm.intake.mapping import FIELDS
    except ImportError:
        return {}
    return FIELDS


@bp.get("/sources")
def sources():
    rows = db.session.scalars(
        sa.select(WebhookSource)
        .options(selectinload(WebhookSource.secrets))  # the live-secret counts: one query, not one per source
        .order_by(WebhookSource.active.desc(), WebhookSource.name)
    ).all()
    desk_tz = current_app.config.get("BUSINESS_TIMEZONE") or "America/New_York"
    counts = source_service.deliveries_today(utcnow(), desk_tz)
    live = {s.id: len(source_service.active_secrets(s)) for s in rows}
    return render_template(
        "admin/sources/list.html", sources=rows, counts=counts, live=live, form=SourceCreateForm(), url=_webhook_url
    )


@bp.route("/sources/new", methods=["GET", "POST"])
def source_new():
    form = SourceCreateForm()
    if form.validate_on_submit():
        try:
            source, secret = source_service.create_source(form.name.data, slug=form.slug.data or None)
        except source_service.SourceError as exc:
            db.session.rollback()
            field = exc.field or ("slug" if "slug" in str(exc).lower() else "name")
            getattr(form, field).errors = [str(exc)]
        else:
            audit.record("create_source", "webhook_source", source.id, detail={"slug": source.slug})
            db.session.commit()
            return render_template(
                "admin/sources/secret.html", source=source, secret=secret, created=True, url=_webhook_url(source)
            )
    return render_template("admin/sources/new.html", form=form)


@bp.get("/sources/<int:source_id>")
def source_detail(source_id: int):
    source = _source(source_id)
    example = request.args.get("example")
    if example in EXAMPLE_CHOICES:
        # Filled into the editor only: saved when the admin presses "Save mapping".
        mapping_form = SourceMappingForm(field_mapping=json.dumps(mapping_examples.EXAMPLES[example][0], indent=2))
    else:
        example = None
        mapping_form = SourceMappingForm(field_mapping=json.dumps(source.field_mapping or {}, indent=2))
        try:
            _validate_mapping(source.field_mapping or {})
        except ValueError as exc:
            # Saved before a check existed (a list position past 999): deliveries still read it, but the
            # sample below cannot follow it. Say so where it is fixed.
            mapping_form.field_mapping.errors = [f"{exc} Correct the mapping and save it."]
    return _detail(source, mapping_form=mapping_form, result=_test_result(source), example=example)


def _test_result(source: WebhookSource) -> dict | None:
    """The test delivery the last POST sent from this page, with its inbox item as it is now.
    Shown once, like a flashed message: the inbox item link keeps it afterwards."""
    kept = session.get(TEST_RESULT_KEY)
    if not isinstance(kept, dict) or kept.get("source_id") != source.id:
        return None
    session.pop(TEST_RESULT_KEY, None)
    item = db.session.scalar(
        sa.select(InboxItem).where(InboxItem.source_id == source.id, InboxItem.webhook_id == kept.get("webhook_id"))
    )
    return dict(kept, item=item)


def _sample(source: WebhookSource) -> str:
    try:
        return json.dumps(source_service.sample_payload(source), indent=2)
    except Exception:  # noqa: BLE001 - a mapping the sample cannot follow (or nested too deep): a flat body
        flat = {"first_name": "Test", "last_name": "Delivery", "email": "test.delivery@example.com", "zip": "20001"}
        return json.dumps(flat, indent=2)


def _detail(source: WebhookSource, *, mapping_form=None, test_form=None, result=None, example=None, status: int = 200):
    recent = db.session.scalars(
        sa.select(InboxItem)
        .options(selectinload(InboxItem.lead))  # the "Test delivery" labels: one query, not one per item
        .where(InboxItem.source_id == source.id)
        .order_by(InboxItem.id.desc())
        .limit(10)
    ).all()
    return (
        render_template(
            "admin/sources/detail.html",
            source=source,
            url=_webhook_url(source),
            live=source_service.active_secrets(source),
            mapping_form=mapping_form
            or SourceMappingForm(field_mapping=json.dumps(source.field_mapping or {}, indent=2)),
            test_form=test_form or TestDeliveryForm(payload=_sample(source)),
            result=result,
            recent=recent,
            fields=_intake_fields(),
            examples=EXAMPLE_CHOICES,
            example=example,
            now=utcnow(),
            refused=intake.refused_while_inactive(source.id),
        ),
        status,
    )


@bp.post("/sources/<int:source_id>/rotate")
def source_rotate(source_id: int):
    source = _source(source_id)
    try:
        secret = source_service.rotate_secret(source)
    except source_service.SourceError as exc:
        db.session.rollback()
        flash(str(exc), "danger")
        return redirect(url_for("admin.source_detail", source_id=source.id))
    audit.record("rotate_secret", "webhook_source", source.id)
    db.session.commit()
    return render_template(
        "admin/sources/secret.html", source=source, secret=secret, created=False, url=_webhook_url(source)
    )


@bp.post("/sources/<int:source_id>/secrets/<int:secret_id>/end")
def source_end_secret(source_id: int, secret_id: int):
    source = _source(source_id)
    withdrawn = request.form.get("intent") == "withdraw"  # the page's button: Withdraw, or End now
    try:
        ended = source_service.end_secret_now(source, secret_id, withdraw=withdrawn)
    except source_service.SourceError as exc:
        db.session.rollback()
        flash(str(exc), "danger")
        return redirect(url_for("admin.source_detail", source_id=source.id))
    audit.record(
        "withdraw_secret" if withdrawn else "end_secret", "webhook_source", source.id, detail={"secret_id": ended.id}
    )
    db.session.commit()
    if withdrawn:
        current = source_service.active_secrets(source)[0]
        flash(
            f"The new secret whsec_…{ended.secret[-4:]} is withdrawn; whsec_…{current.secret[-4:]} is the current "
            "secret again, with no end. Rotate again when the sender is ready for a new one.",
            "success",
        )
    else:
        flash(f"The old secret whsec_…{ended.secret[-4:]} no longer signs deliveries.", "success")
    return redirect(url_for("admin.source_detail", source_id=source.id))


@bp.post("/sources/<int:source_id>/mapping")
def source_mapping(source_id: int):
    source = _source(source_id)
    form = SourceMappingForm()
    if form.validate_on_submit():
        mapping = parse_mapping(form.field_mapping.data)
        try:
            _validate_mapping(mapping)
        except ValueError as exc:
            form.field_mapping.errors = [str(exc)]
        else:
            old = source.field_mapping or {}
            if mapping != old:
                source.field_mapping = mapping
                # Both mappings (at most 10,000 characters each), so a bad edit can be undone by hand.
                detail = {"fields": sorted(mapping), "old": old, "new": mapping}
                audit.record("update_source_mapping", "webhook_source", source.id, detail=detail)
                db.session.commit()
                flash("Field mapping saved.", "success")
            else:
                flash("Nothing changed.", "info")
            return redirect(url_for("admin.source_detail", source_id=source.id))
    return _detail(source, mapping_form=form, status=200)


@bp.post("/sources/<int:source_id>/activate")
def source_activate(source_id: int):
    return _set_active(source_id, True)


@bp.post("/sources/<int:source_id>/deactivate")
def source_deactivate(source_id: int):
    return _set_active(source_id, False)


def _set_active(source_id: int, active: bool):
    source = _source(source_id)
    if source.active != active:
        source.active = active
        audit.record("activate_source" if active else "deactivate_source", "webhook_source", source.id)
        db.session.commit()
        flash(
            f"{source.name} is active: deliveries are accepted."
            if active
            else (
                f"{source.name} is inactive: its deliveries are refused (404). They are kept in the inbox for "
                "reference but cannot be replayed: the sender must send them again once the source is active."
            ),
            "success",
        )
    return redirect(url_for("admin.source_detail", source_id=source.id))


@bp.post("/sources/<int:source_id>/test")
def source_test(source_id: int):
    source = _source(source_id)
    form = TestDeliveryForm()
    if not form.validate_on_submit():
        return _detail(source, test_form=form)
    try:
        delivery = source_service.sign_test_delivery(source, form.payload.data)
    except source_service.SourceError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("admin.source_detail", source_id=source.id))
    # The webhook id and the admin's choice, for a delivery that fails now and makes its lead on a
    # retry (crm/services/intake.py process: flagged and closed then).
    detail = {"webhook_id": delivery.webhook_id, "close_lead": bool(form.close_lead.data)}
    audit.record("test_delivery", "webhook_source", source.id, detail=detail)
    db.session.commit()  # the delivery runs in its own app context and session: nothing may be pending here
    with current_app.app_context():
        resp = current_app.test_client().post(
            f"/webhooks/intake/{source.slug}", data=delivery.body, headers=delivery.headers
        )
        body = resp.get_data(as_text=True)
    db.session.expire_all()
    item = db.session.scalar(
        sa.select(InboxItem).where(InboxItem.source_id == source.id, InboxItem.webhook_id == delivery.webhook_id)
    )
    closed = marked = False
    lead_id = source_service.made_by_test_delivery(item)
    if lead_id is not None:  # a new lead (not a fold into a real patient's open lead)
        # Flagged whether or not it is closed (a version-free UPDATE: no conflict with the enrich
        # job), so a test lead is never in a report.
        marked = source_service.mark_test_lead(lead_id)
        db.session.commit()
    if lead_id is not None and form.close_lead.data:
        for _ in range(3):  # the enrich_new job may be saving the new lead this very moment
            try:
                closed = source_service.close_test_lead(lead_id, actor=current_user._get_current_object())
                db.session.commit()
                break
            except StaleDataError:
                db.session.rollback()
                closed = False
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    shown = json.dumps(parsed, indent=2) if parsed is not None else body
    if len(shown) > TEST_BODY_MAX:
        shown = shown[:TEST_BODY_MAX] + "\n… (cut; the whole answer is in the inbox item)"
    session[TEST_RESULT_KEY] = {
        "source_id": source.id,
        "status": resp.status_code,
        "ok": 200 <= resp.status_code < 300,
        "body": shown,
        "webhook_id": delivery.webhook_id,
        "closed": closed,
        "marked": marked,
    }
    # POST-redirect-GET: a reload of the result page shows the result, it does not send again.
    return redirect(url_for("admin.source_detail", source_id=source.id, _anchor="test-result"))
