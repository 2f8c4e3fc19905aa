"""/admin/sources: test deliveries kept out of the reports and the queue, the list-position cap of
field mappings, the optional slug of a new source, and the audit log's links to sources and inbox items.

(The older source tests live in tests/test_admin_misc.py.)
"""

from __future__ import annotations

import csv
import html as htmlmod
import io
import json
import re
import time
from datetime import timedelta
from html import unescape

import pytest
import sqlalchemy as sa

from crm.intake import mapping
from crm.models import AuditLog, InboxItem, Lead, WebhookSource
from crm.models.enums import InboxStatus, LeadStatus
from crm.services import audit, reports
from crm.services import sources as source_service
from tests.factories import ConditionFactory, WebhookSourceFactory
from tests.test_webhooks import PAYLOAD
from tests.test_webhooks import deliver as webhook_delivery

REAL = {k: v for k, v in PAYLOAD.items() if k != "message"}  # a real patient's delivery


def deliver(client, slug: str, payload: dict, msg_id: str):
    return webhook_delivery(client, payload, slug=slug, msg_id=msg_id)


def send_test(client, source, payload: dict, *, close: bool = True):
    data = {"payload": json.dumps(payload)}
    if close:
        data["close_lead"] = "y"
    resp = client.post(f"/admin/sources/{source.id}/test", data=data)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/admin/sources/{source.id}#test-result")
    return client.get(resp.headers["Location"]).get_data(as_text=True)  # the result, shown after the redirect


def csv_rows(client, name: str) -> list[list[str]]:
    resp = client.get(f"/reports/export/{name}.csv")
    assert resp.status_code == 200
    return list(csv.reader(io.StringIO(resp.get_data().decode("utf-8-sig"))))


def served_equals_live(client, db) -> None:
    """Every table the page serves (from the rollups) equals the live queries of today's default range."""
    tz = client.application.config["BUSINESS_TIMEZONE"]
    rng = reports.default_range(reports.today_in(tz), tz)
    for name in reports.TABLES:
        header, rows = reports.table(db.session, rng, name)
        expected = reports.to_csv(header, rows).removeprefix(reports.CSV_BOM)
        assert csv_rows(client, name) == list(csv.reader(io.StringIO(expected))), name


def queue_ids(client, query: str) -> set[int]:
    html = client.get(f"/queue?{query}").get_data(as_text=True)
    return {int(n) for n in re.findall(r'href="/leads/(\d+)"', html)}


# --- 1. test deliveries ------------------------------------------------------------------------------


def test_a_test_delivery_never_reaches_the_reports_nor_the_specialists_queue(client, auth, admin, specialist, db):
    ConditionFactory(name="Dystonia", slug="dystonia")
    src = WebhookSourceFactory(slug="partner", name="Partner site")
    db.session.commit()
    auth.as_user(admin)
    # A real delivery, and the rollups built with it before the test delivery arrives.
    real_id = deliver(client, "partner", REAL, "msg_real").get_json()["lead_id"]
    assert client.get("/reports").status_code == 200
    assert csv_rows(client, "sources")[1][:2] == ["Webhook: Partner site", "1"]

    html = send_test(client, src, source_service.sample_payload(src))
    assert "closed at once" in html and "Test delivery" in html
    item = db.session.scalar(
        sa.select(InboxItem).where(InboxItem.webhook_id.is_not(None)).order_by(InboxItem.id.desc())
    )
    test_lead = db.session.get(Lead, item.lead_id)
    assert item.status == InboxStatus.ACCEPTED and test_lead.id != real_id
    assert (test_lead.is_test, test_lead.status, test_lead.lost_reason) == (True, "lost", "other")
    assert db.session.get(Lead, real_id).is_test is False

    # /reports and every CSV: only the real lead, the same from the rollups as live.
    page = client.get("/reports")
    assert page.status_code == 200
    served_equals_live(client, db)
    assert sum(int(n) for _, n in csv_rows(client, "daily")[1:]) == 1
    assert csv_rows(client, "sources")[1:] == [["Webhook: Partner site", "1", "100.0"]]
    assert csv_rows(client, "funnel")[1][:2] == ["new", "1"]
    assert csv_rows(client, "states")[1][1] == "1" and csv_rows(client, "conditions")[1][1] == "1"
    assert csv_rows(client, "speed")[1][:2] == ["0", "1"]  # one real lead waiting; the test lead nowhere
    kpi = reports.build_report(
        db.session, reports.default_range(reports.today_in("America/New_York"), "America/New_York")
    )
    assert (kpi.funnel.lost, kpi.funnel.open) == (0, 1)

    # Left open on purpose (box unticked): flagged all the same, so still not in any report.
    send_test(
        client,
        src,
        dict(source_service.sample_payload(src), email="watch.me@example.com", phone="(202) 555-0199"),
        close=False,
    )
    watched = db.session.scalar(sa.select(Lead).order_by(Lead.id.desc()))
    assert (watched.is_test, watched.status) == (True, "new")
    assert ">Test delivery</span>" in client.get(f"/leads/{watched.id}").get_data(as_text=True)
    served_equals_live(client, db)
    assert sum(int(n) for _, n in csv_rows(client, "daily")[1:]) == 1
    # Nor the admin page's lead count: one real lead of three.
    dashboard = " ".join(client.get("/admin/").get_data(as_text=True).split())
    assert '<div class="muted-label">Leads</div><div class="fs-3 fw-semibold">1</div>' in dashboard

    # The queue: a closed test lead is in no view and no search; the one left open stays listed
    # until it is closed (that is what unticking the box is for).
    auth.logout()
    auth.as_user(specialist)
    everything = queue_ids(client, "view=all")
    assert real_id in everything and watched.id in everything and test_lead.id not in everything
    assert test_lead.id not in queue_ids(client, "view=all&status=lost")
    assert queue_ids(client, "view=all&q=test.delivery%40example.com") == set()
    assert queue_ids(client, "view=all&q=Robin+Hale") == {real_id}


def test_a_test_delivery_folded_into_a_real_open_lead_leaves_it_real(client, auth, admin, db):
    ConditionFactory(name="Dystonia", slug="dystonia")
    src = WebhookSourceFactory(slug="partner")
    db.session.commit()
    real_id = deliver(client, "partner", REAL, "msg_real").get_json()["lead_id"]
    auth.as_user(admin)
    html = send_test(client, src, dict(REAL, message="sent again from the admin page"))
    item = db.session.scalar(sa.select(InboxItem).order_by(InboxItem.id.desc()))
    assert item.status == InboxStatus.RESUBMITTED and item.lead_id == real_id
    lead = db.session.get(Lead, real_id)
    assert (lead.is_test, lead.status) == (False, LeadStatus.NEW)  # neither flagged nor closed
    assert "stays a real lead" in html and "closed at once" not in html
    assert client.get("/reports").status_code == 200
    assert sum(int(n) for _, n in csv_rows(client, "daily")[1:]) == 1


def test_the_source_page_labels_the_test_deliveries(client, auth, admin, db):
    src = WebhookSourceFactory(slug="partner")
    db.session.commit()
    auth.as_user(admin)
    send_test(client, src, source_service.sample_payload(src))
    item = db.session.scalar(sa.select(InboxItem))
    page = client.get(f"/admin/sources/{src.id}").get_data(as_text=True)
    recent = page.split("Recent deliveries", 1)[1]
    assert f'#{item.lead_id}</a> <span class="badge text-bg-warning">Test delivery</span>' in recent
    assert f"/admin/inbox/{item.id}" in recent
    # A long webhook-id is clipped visibly, with the whole of it on hover.
    assert len(item.webhook_id) > 28 and f'title="{item.webhook_id}"' in recent
    assert f">{item.webhook_id[:27]}…</td>" in recent


def test_mark_test_lead_flags_once_and_close_test_lead_refuses_a_real_lead(db, admin):
    from tests.factories import LeadFactory

    real = LeadFactory()
    db.session.commit()
    assert source_service.close_test_lead(real.id, actor=admin) is False  # not flagged: never closed
    assert source_service.mark_test_lead(real.id) is True
    assert source_service.mark_test_lead(real.id) is False  # already flagged
    db.session.commit()
    db.session.refresh(real)
    assert real.is_test is True and real.version == 1  # no version bump: no conflict with other saves
    assert source_service.close_test_lead(real.id, actor=admin) is True
    assert source_service.made_by_test_delivery(None) is None
    assert source_service.made_by_test_delivery(InboxItem(status=InboxStatus.RESUBMITTED, lead_id=real.id)) is None
    assert source_service.made_by_test_delivery(InboxItem(status=InboxStatus.ACCEPTED, lead_id=real.id)) == real.id


# --- 2. list positions in field mappings ---------------------------------------------------------------


def test_a_mapping_with_numbers_past_999_is_saved_and_its_sample_stays_small(client, auth, admin, db):
    """ "answers.2000000" made the page build a 20 MB sample (a billion-long list would hang the
    worker). A number past 999 is an object's key in the sample, so mappings that name a field by
    its id ("fields.1250.value") are saved too, and every page stays quick."""
    src = WebhookSourceFactory(slug="old")
    db.session.commit()
    auth.as_user(admin)
    paths = {"email": "answers.999999999", "first_name": "fields.1250.value", "utm_content": "answers." + "9" * 5000}
    resp = client.post(f"/admin/sources/{src.id}/mapping", data={"field_mapping": json.dumps(paths)})
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(WebhookSource, src.id).field_mapping == paths
    started = time.monotonic()
    page = client.get(f"/admin/sources/{src.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and time.monotonic() - started < 5 and len(html) < 100_000
    assert "test.delivery@example.com" in html and "&#34;1250&#34;" in html
    # A delivery keyed by field id is read with it.
    payload = dict(REAL, answers={"999999999": "pat@example.com"}, fields={"1250": {"value": "Pat"}})
    resp = deliver(client, "old", payload, "msg_old")
    assert resp.status_code == 202
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert (lead.patient.email, lead.patient.first_name) == ("pat@example.com", "Pat")


def test_build_payload_and_resolve_never_build_or_parse_a_giant_index():
    started = time.monotonic()
    assert mapping.build_payload({"email": "answers.999999999"}, {"email": "x"}) == {"answers": {"999999999": "x"}}
    assert mapping.build_payload({"email": "a." + "9" * 5000}, {"email": "x"}) == {"a": {"9" * 5000: "x"}}
    assert time.monotonic() - started < 1
    assert mapping.build_payload({"email": "answers.2.email"}, {"email": "x"}) == {"answers": [{}, {}, {"email": "x"}]}
    with pytest.raises(mapping.MappingError, match="mixes list positions and keys"):
        mapping.build_payload({"email": "answers.2", "phone": "answers.5000"}, {"email": "x", "phone": "y"})
    assert mapping.resolve({"answers": [1, 2]}, "answers." + "9" * 5000) is None
    assert mapping.resolve({"answers": list(range(1200))}, "answers.1100") == 1100
    assert mapping.resolve({"answers": {"999999999": "x"}}, "answers.999999999") == "x"


# --- 3. the slug of a new source ---------------------------------------------------------------------


def test_a_new_source_without_a_slug_gets_one_from_its_name(client, auth, admin, db):
    WebhookSourceFactory(name="Older", slug="clinic-site")
    db.session.commit()
    auth.as_user(admin)
    form = client.get("/admin/sources/new").get_data(as_text=True)
    slug_input = re.search(r'<input[^>]*name="slug"[^>]*>', form).group(0)
    assert "required" not in slug_input and "Leave it blank to make it from the name" in form
    # "form" is the public request form's name in the inbox: never a source's slug.
    made_from_names = [
        ("Clinic Site", "", "clinic-site-2"),
        ("Café Forms", "   ", "cafe-forms"),
        ("Ω Form", "", "form-2"),
    ]
    for name, typed, made in made_from_names:
        resp = client.post("/admin/sources/new", data={"name": name, "slug": typed})
        assert resp.status_code == 200 and "shown only this once" in resp.get_data(as_text=True), name
        assert db.session.scalar(sa.select(WebhookSource.slug).where(WebhookSource.name == name)) == made
    # Without the field at all, as a script might post it.
    assert client.post("/admin/sources/new", data={"name": "No Slug Field"}).status_code == 200
    assert (
        db.session.scalar(sa.select(WebhookSource.slug).where(WebhookSource.name == "No Slug Field")) == "no-slug-field"
    )
    # A typed slug is still checked.
    taken = client.post("/admin/sources/new", data={"name": "Typed form", "slug": "form"})
    assert "names the public request form in the inbox" in htmlmod.unescape(taken.get_data(as_text=True))
    bad = client.post("/admin/sources/new", data={"name": "Typed", "slug": "Not a slug!"})
    assert bad.status_code == 200 and "Use lower-case letters, digits and single hyphens" in bad.get_data(as_text=True)
    taken = client.post("/admin/sources/new", data={"name": "Typed", "slug": "clinic-site"})
    assert "already used" in taken.get_data(as_text=True)
    assert client.post("/admin/sources/new", data={"name": "Typed", "slug": "Typed-Form"}).status_code == 200
    assert db.session.scalar(sa.select(WebhookSource.slug).where(WebhookSource.name == "Typed")) == "typed-form"


# --- 4. audit log links --------------------------------------------------------------------------------


def test_the_audit_log_links_inbox_items_and_webhook_sources(client, auth, admin, db):
    src = WebhookSourceFactory()
    item = InboxItem(channel="webhook", source_id=src.id, source_slug=src.slug)
    db.session.add(item)
    db.session.flush()
    audit.record("view_inbox_item", "inbox_item", item.id, user=admin)
    audit.record("rotate_secret", "webhook_source", src.id, user=admin)
    db.session.commit()
    auth.as_user(admin)
    body = client.get("/admin/audit").get_data(as_text=True).split("<tbody>", 1)[1]
    assert f'<a href="/admin/inbox/{item.id}">inbox item #{item.id}</a>' in body
    assert f'<a href="/admin/sources/{src.id}">webhook source #{src.id}</a>' in body
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog)) >= 2


def test_the_migration_flags_test_leads_made_before_it(tmp_path):
    """Test deliveries sent before migration 0014 are found through their audit rows and flagged;
    a test delivery that folded into a real lead leaves that lead real."""
    from flask_migrate import downgrade, upgrade

    from crm.extensions import db as _db
    from crm.models import AuditLog
    from tests.conftest import build_app
    from tests.factories import LeadFactory

    app = build_app(f"sqlite:///{tmp_path / 'migrate.sqlite3'}")
    with app.app_context():
        upgrade()
        src = WebhookSourceFactory(slug="partner")
        test_lead, real_lead = LeadFactory(), LeadFactory()
        _db.session.flush()
        for webhook_id, lead, status in [("msg_t", test_lead, "accepted"), ("msg_f", real_lead, "resubmitted")]:
            _db.session.add(
                InboxItem(channel="webhook", source_id=src.id, webhook_id=webhook_id, lead_id=lead.id, status=status)
            )
            _db.session.add(
                AuditLog(
                    action="test_delivery",
                    object_type="webhook_source",
                    object_id=str(src.id),
                    detail={"webhook_id": webhook_id},
                )
            )
        _db.session.commit()
        downgrade(revision="0013_users_must_change_password")
        upgrade()
        flags = dict(_db.session.execute(sa.select(Lead.id, Lead.is_test)).all())
        assert flags == {test_lead.id: True, real_lead.id: False}
        _db.session.remove()
        _db.engine.dispose()


def test_a_test_delivery_that_failed_at_first_is_flagged_and_closed_when_the_retry_makes_its_lead(db):
    from datetime import UTC, datetime, timedelta

    from crm.models import AuditLog
    from crm.services.intake import retry_failed_items

    ConditionFactory(name="Dystonia", slug="dystonia")
    src = WebhookSourceFactory(slug="partner")
    db.session.flush()
    now = datetime.now(UTC)
    for webhook_id, close, email in [("msg_a", True, "a@example.com"), ("msg_b", False, "b@example.com")]:
        db.session.add(
            InboxItem(
                channel="webhook",
                source_id=src.id,
                source_slug="partner",
                webhook_id=webhook_id,
                content_type="application/json",
                body=json.dumps(dict(REAL, email=email, phone="")),
                status="failed",
                next_attempt_at=now - timedelta(minutes=1),
            )
        )
        db.session.add(
            AuditLog(
                action="test_delivery",
                object_type="webhook_source",
                object_id=str(src.id),
                detail={"webhook_id": webhook_id, "close_lead": close},
            )
        )
    real = InboxItem(
        channel="webhook",
        source_id=src.id,
        source_slug="partner",
        webhook_id="msg_real",
        content_type="application/json",
        body=json.dumps(dict(REAL, email="real@example.com", phone="")),
        status="failed",
        next_attempt_at=now - timedelta(minutes=1),
    )
    db.session.add(real)
    db.session.commit()
    assert retry_failed_items(now) == 3
    leads = {lead.patient.email: lead for lead in db.session.scalars(sa.select(Lead))}
    assert (leads["a@example.com"].is_test, leads["a@example.com"].status) == (True, "lost")
    assert (leads["b@example.com"].is_test, leads["b@example.com"].status) == (True, "new")  # the admin kept it open
    assert (leads["real@example.com"].is_test, leads["real@example.com"].status) == (False, "new")


# --- 5. the source page: inbox link, test delivery without a resend on reload, mapping examples --------


def test_the_source_page_links_to_all_its_deliveries_in_the_inbox(client, auth, admin, db):
    src = WebhookSourceFactory(slug="partner-site", name="Partner site")
    db.session.commit()
    auth.as_user(admin)
    html = client.get(f"/admin/sources/{src.id}").get_data(as_text=True)
    assert re.search(r'<a [^>]*href="/admin/inbox\?source=partner-site"[^>]*>All deliveries from this source</a>', html)


def test_a_test_delivery_redirects_so_a_reload_does_not_send_it_again(client, auth, admin, db):
    ConditionFactory(name="Dystonia", slug="dystonia")
    src = WebhookSourceFactory(slug="partner")
    db.session.commit()
    auth.as_user(admin)
    data = {"payload": json.dumps(source_service.sample_payload(src)), "close_lead": "y"}
    resp = client.post(f"/admin/sources/{src.id}/test", data=data)
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith(f"/admin/sources/{src.id}#test-result")
    item = db.session.scalar(sa.select(InboxItem).where(InboxItem.source_id == src.id))
    html = client.get(resp.headers["Location"]).get_data(as_text=True)  # what the browser shows
    assert "HTTP 202" in html and "test-result" in html and item.webhook_id in html
    assert f'href="/admin/inbox/{item.id}">Inbox item #{item.id}</a>' in html
    assert "closed at once" in html and '"status": "accepted"' in htmlmod.unescape(html)
    again = client.get(resp.headers["Location"]).get_data(as_text=True)  # the admin reloads the page
    assert "HTTP 202" not in again and "test-result" not in again  # shown once, like a flashed message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 1  # nothing sent again
    assert db.session.scalar(sa.select(sa.func.count()).where(AuditLog.action == "test_delivery")) == 1
    other = WebhookSourceFactory(slug="other")
    db.session.commit()
    client.post(f"/admin/sources/{src.id}/test", data=data)
    assert "test-result" not in client.get(f"/admin/sources/{other.id}").get_data(as_text=True)  # not another source's


def test_the_mapping_editor_starts_from_a_shipped_example(client, auth, admin, db):
    from crm.intake import mapping_examples

    src = WebhookSourceFactory(slug="forms", field_mapping={"email": "contact.email"})
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/sources/{src.id}").get_data(as_text=True)
    for key in ("plain-json", "typeform", "gravity-forms"):
        assert f'<option value="{key}"' in page
    assert "Start from an example" in page and "How paths work" in page and "docs/intake.md" in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline script: a plain GET form

    for key in ("plain-json", "typeform", "gravity-forms"):
        html = client.get(f"/admin/sources/{src.id}?example={key}").get_data(as_text=True)
        shown = json.loads(
            htmlmod.unescape(
                re.search(r'<textarea[^>]*name="field_mapping"[^>]*>(.*?)</textarea>', html, re.S).group(1)
            )
        )
        assert shown == mapping_examples.EXAMPLES[key][0], key
        assert "not saved yet" in html
    db.session.expire_all()
    assert db.session.get(WebhookSource, src.id).field_mapping == {"email": "contact.email"}  # filled in, not saved
    html = client.get(f"/admin/sources/{src.id}?example=nonsense").get_data(as_text=True)
    assert "contact.email" in html and "not saved yet" not in html


def test_a_mapping_edit_is_audited_with_the_old_and_new_mapping(client, auth, admin, db):
    src = WebhookSourceFactory(slug="forms", field_mapping={"email": "contact.email"})
    db.session.commit()
    auth.as_user(admin)
    new = {"email": "answers.[field.ref=email].email", "zip": "answers.[field.ref=zip].text"}
    resp = client.post(f"/admin/sources/{src.id}/mapping", data={"field_mapping": json.dumps(new)})
    assert resp.status_code == 302
    entry = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "update_source_mapping")).one()
    assert entry.detail == {"fields": ["email", "zip"], "old": {"email": "contact.email"}, "new": new}


def test_json_with_a_number_of_thousands_of_digits_is_a_field_error_not_a_500(client, auth, admin, db):
    src = WebhookSourceFactory(slug="partner")
    db.session.commit()
    auth.as_user(admin)
    huge = '{"a": [' + "1" * 4301 + "]}"
    resp = client.post(f"/admin/sources/{src.id}/test", data={"payload": huge})
    assert resp.status_code == 200 and "a number of thousands of digits" in resp.get_data(as_text=True)
    resp = client.post(f"/admin/sources/{src.id}/mapping", data={"field_mapping": '{"email": ' + "1" * 4301 + "}"})
    page = resp.get_data(as_text=True)
    assert resp.status_code in (200, 422) and "a number of thousands of digits" in page and "set_int_max" not in page


def test_a_mapping_path_with_an_invisible_character_is_refused(client, auth, admin, db):
    src = WebhookSourceFactory(slug="partner")
    db.session.commit()
    auth.as_user(admin)
    for bad in ('{"email": "\\ud800"}', '{"email": "a\\u0000b"}', '{"email": "contact.\\u200bemail"}'):
        resp = client.post(f"/admin/sources/{src.id}/mapping", data={"field_mapping": bad})
        assert "holds a control or invisible character" in unescape(resp.get_data(as_text=True)), bad
    db.session.expire_all()
    assert not db.session.get(WebhookSource, src.id).field_mapping


def test_the_audit_filter_takes_a_superscript_digit_as_text(client, auth, admin, db):
    auth.as_user(admin)
    assert client.get("/admin/audit", query_string={"object_id": "²"}).status_code == 200
    assert client.get("/admin/audit", query_string={"object_id": "²", "object_type": "lead"}).status_code == 200


def test_a_name_added_by_someone_else_after_the_check_is_refused_by_the_database(client, auth, admin, db, monkeypatch):
    """Two admins adding "Clinic site" at the same instant: both checks find nothing, the unique index
    on lower(name) refuses the second, and the form says so instead of a 500."""
    source_service.create_source("Clinic site", slug="clinic-site")
    db.session.commit()
    monkeypatch.setattr(source_service, "source_named", lambda name: None)  # the race: checked before it existed
    auth.as_user(admin)
    resp = client.post("/admin/sources/new", data={"name": "CLINIC SITE", "slug": "clinic-two"})
    assert resp.status_code == 200 and "was added a moment ago" in resp.get_data(as_text=True)
    assert db.session.scalars(sa.select(WebhookSource.slug)).all() == ["clinic-site"]
    # The request's transaction is still usable: another name goes through.
    source_service.create_source("Partner site", slug="partner-site")
    db.session.commit()
    assert sorted(db.session.scalars(sa.select(WebhookSource.slug))) == ["clinic-site", "partner-site"]


def test_the_migration_renames_sources_that_already_shared_a_name(tmp_path):
    from flask_migrate import downgrade, upgrade

    from crm.extensions import db as _db
    from tests.conftest import build_app

    app = build_app(f"sqlite:///{tmp_path / 'migrate.sqlite3'}")
    with app.app_context():
        upgrade()
        downgrade(revision="0017_outbox_retry_schedule")
        for slug, name in [("clinic-site", "Clinic site"), ("clinic-site-2", "clinic SITE"), ("other", "Other")]:
            _db.session.execute(
                sa.text(
                    "INSERT INTO webhook_sources (name, slug, field_mapping, active, created_at) "
                    "VALUES (:name, :slug, '{}', 1, CURRENT_TIMESTAMP)"
                ),
                {"name": name, "slug": slug},
            )
        _db.session.commit()
        upgrade()
        names = dict(_db.session.execute(sa.select(WebhookSource.slug, WebhookSource.name)).all())
        assert names == {"clinic-site": "Clinic site", "clinic-site-2": "clinic SITE (clinic-site-2)", "other": "Other"}
        with pytest.raises(sa.exc.IntegrityError):
            _db.session.execute(
                sa.text(
                    "INSERT INTO webhook_sources (name, slug, field_mapping, active, created_at) "
                    "VALUES ('OTHER', 'other-2', '{}', 1, CURRENT_TIMESTAMP)"
                )
            )
        _db.session.rollback()
        _db.session.remove()
        _db.engine.dispose()


def test_deliveries_refused_while_a_source_was_inactive_are_counted_on_its_page(client, auth, admin, db):
    """They cannot be replayed (their signatures were never checked), so the page says how many there
    were and that the sender must send them again; the deactivation's own words say so beforehand."""
    src = WebhookSourceFactory(slug="site", name="Clinic site", active=False)
    db.session.commit()
    for n in range(2):
        assert webhook_delivery(client, PAYLOAD, msg_id=f"msg_{n}").status_code == 404
    auth.as_user(admin)
    page = unescape(client.get(f"/admin/sources/{src.id}").get_data(as_text=True))
    assert "2 deliveries were refused while this source was inactive" in page
    assert "ask the sender to send them again once the source is active" in page
    assert "/admin/inbox?source=site&amp;status=rejected" in client.get(f"/admin/sources/{src.id}").get_data(
        as_text=True
    )
    # A month on, they are past any sender's resending: the warning goes.
    for item in db.session.scalars(sa.select(InboxItem)):
        item.received_at -= timedelta(days=31)
    db.session.commit()
    assert "refused while this source was inactive" not in client.get(f"/admin/sources/{src.id}").get_data(as_text=True)
    other = WebhookSourceFactory(slug="other", name="Other")
    db.session.commit()
    page = client.get(f"/admin/sources/{other.id}").get_data(as_text=True)
    assert "refused while this source was inactive" not in page
    assert "cannot be replayed: the sender must send it again" in unescape(page)  # the Deactivate button's question


def test_a_new_source_is_written_only_with_the_requests_commit(db):
    source_service.create_source("Late source")
    db.session.rollback()
    assert db.session.scalar(sa.select(WebhookSource).where(WebhookSource.name == "Late source")) is None
