"""POST /webhooks/intake/<slug>: every row of the SPEC 5 table, mappings, rotation, concurrency."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
import types
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from config import rate_limit_storage_options
from crm.extensions import limiter
from crm.intake import mapping_examples
from crm.models import InboxItem, Lead, LeadEvent, Patient, WebhookSecret, WebhookSource
from crm.models.enums import EventKind, GeocodeStatus, InboxStatus, LeadSourceKind, LeadStatus
from crm.services.sources import generate_secret, sign_payload
from tests.factories import ConditionFactory, WebhookSourceFactory

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the factory's default

PAYLOAD = {
    "first_name": "Robin",
    "last_name": "Hale",
    "email": "robin.hale@example.com",
    "phone": "(305) 555-0188",
    "zip": "33101",
    "condition": "dystonia",
    "message": "Mornings please.",
}


@pytest.fixture
def source(db):
    ConditionFactory(name="Dystonia", slug="dystonia", synonyms=["muscle spasms", "cervical dystonia"])
    src = WebhookSourceFactory(slug="site", name="Clinic site")
    db.session.commit()
    return src


def deliver(
    client,
    payload,
    *,
    slug="site",
    secret=SECRET,
    msg_id="msg_1",
    at=None,
    content_type="application/json",
    signature=None,
    drop=(),
    extra_headers=None,
):
    body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    signed = sign_payload(secret, body, msg_id=msg_id, at=at)
    headers = dict(signed.headers, **{"content-type": content_type}, **(extra_headers or {}))
    if signature is not None:
        headers["webhook-signature"] = signature
    for name in drop:
        headers.pop(name, None)
    return client.post(f"/webhooks/intake/{slug}", data=signed.body, headers=headers)


def items(db):
    return db.session.scalars(sa.select(InboxItem).order_by(InboxItem.id)).all()


def count(db, model):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


# ---------------------------------------------------------------- table rows


def test_accepted_returns_202_and_creates_patient_and_lead(client, db, source):
    resp = deliver(client, dict(PAYLOAD, utm_source="newsletter", landing_page_url="https://example.com/d"))
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["status"] == "accepted" and body["lead_id"] and body["inbox_id"]
    lead = db.session.get(Lead, body["lead_id"])
    assert lead.status == LeadStatus.NEW
    assert lead.source_kind == LeadSourceKind.WEBHOOK and lead.webhook_source_id == source.id
    assert lead.condition.slug == "dystonia"
    assert lead.utm_source == "newsletter" and lead.landing_page_url == "https://example.com/d"
    assert lead.sla_due_at is not None and lead.sla_due_at > lead.created_at
    assert lead.patient.email == "robin.hale@example.com" and lead.patient.phone == "+13055550188"
    assert lead.patient.consent_at is not None and "Clinic site" in lead.patient.consent_text
    assert [e.kind for e in lead.events] == [EventKind.CREATED]
    assert lead.events[0].data == {
        "channel": "webhook",
        "inbox_id": body["inbox_id"],
        "source": "site",
        "returning_patient": False,
        "condition": "dystonia",
    }
    assert lead.events[0].created_at == lead.created_at == lead.patient.created_at
    item = db.session.get(InboxItem, body["inbox_id"])
    assert item.status == InboxStatus.ACCEPTED and item.lead_id == lead.id
    assert item.received_at == lead.created_at and item.processed_at == lead.created_at
    assert item.dedupe_key == f"webhook:{source.id}:msg_1"
    assert "webhook-signature" not in item.headers and item.headers["webhook-id"] == "msg_1"
    assert json.loads(item.body)["email"] == "robin.hale@example.com"


def test_two_long_webhook_ids_sharing_their_first_200_characters_are_two_deliveries(client, db, source):
    first = deliver(client, PAYLOAD, msg_id="y" * 250 + "A")
    second = deliver(client, dict(PAYLOAD, email="other@example.com", phone="(305) 555-0111"), msg_id="y" * 250 + "B")
    assert first.status_code == second.status_code == 202
    assert first.get_json()["lead_id"] != second.get_json()["lead_id"]
    stored = [item.webhook_id for item in items(db)]
    assert all(len(w) <= 200 and w.startswith("y" * 150) for w in stored) and stored[0] != stored[1]
    assert deliver(client, PAYLOAD, msg_id="y" * 250 + "A").get_json()["status"] == "duplicate"  # a real repeat


def test_a_body_that_is_not_utf8_is_unreadable_not_badly_signed(client, db, source):
    import base64
    import hashlib
    import hmac

    body = json.dumps(dict(PAYLOAD, first_name="Zoë"), ensure_ascii=False).encode("latin-1")  # signed as sent
    at = str(int(datetime.now(UTC).timestamp()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = base64.b64encode(hmac.new(key, b"msg_l1." + at.encode() + b"." + body, hashlib.sha256).digest()).decode()
    headers = {"webhook-id": "msg_l1", "webhook-timestamp": at, "webhook-signature": f"v1,{mac}"}
    resp = client.post("/webhooks/intake/site", data=body, headers=headers, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "The body is not UTF-8 text (JSON and form bodies must be UTF-8)."}
    item = items(db)[-1]
    assert item.status == InboxStatus.REJECTED and item.error.startswith("[400]") and count(db, Lead) == 0
    # Without signature headers it is refused as unsigned first, as any body is.
    unsigned = client.post("/webhooks/intake/site", data=body, content_type="application/json")
    assert unsigned.status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"first_name": "Quix\x00ote"}', "application/json"),
        ("first_name=Quix\x00ote&zip=33101", "application/x-www-form-urlencoded"),
    ],
    ids=["json", "form"],
)
def test_a_nul_byte_is_refused_and_still_stored_on_both_databases(client, db, source, body, content_type):
    """PostgreSQL text cannot hold NUL: the delivery was answered 503 and stored nowhere."""
    resp = deliver(client, body, content_type=content_type)
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "The body contains NUL (0x00) bytes, which no JSON or form body has."}
    item = items(db)[-1]
    assert item.status == InboxStatus.REJECTED and "Quix\u2400ote" in item.body and "\x00" not in item.body


def test_a_slug_with_a_nul_byte_is_an_unknown_source_stored_as_such(client, db, source):
    resp = client.post("/webhooks/intake/site%00x", data=b"{}", content_type="application/json")
    assert resp.status_code == 404
    assert items(db)[-1].source_slug == "site\u2400x"


def test_no_header_that_signs_or_authenticates_is_stored(client, db, source):
    relayed = {
        "Typeform-Signature": "sha256=abc",
        "X-Hub-Signature-256": "sha256=def",
        "svix-signature": "v1,ghi",
        "X-Webhook-Secret": "s3cret",
        "X-Auth-Token": "tok",
        "X-Api-Key": "key",
        "X-Shopify-Hmac-Sha256": "hmacvalue",
        "X-Hook-Key": "hookkey",
        "Private-Key": "privkey",
        "X-Credential": "cred",
        "Keep-Alive": "timeout=5",
        "X-Forwarded-For": "203.0.113.7",
        "User-Agent": "relay/1.0",
    }
    resp = deliver(client, PAYLOAD, extra_headers=relayed)
    assert resp.status_code == 202
    kept = db.session.get(InboxItem, resp.get_json()["inbox_id"]).headers
    assert kept["x-forwarded-for"] == "203.0.113.7" and kept["user-agent"] == "relay/1.0"
    assert kept["webhook-id"] == "msg_1" and "webhook-timestamp" in kept
    assert kept["keep-alive"] == "timeout=5"  # not a key for all its letters
    for value in ("sha256=abc", "sha256=def", "v1,ghi", "s3cret", "tok", "hmacvalue", "hookkey", "privkey", "cred"):
        assert value not in json.dumps(kept)


def test_invisible_characters_in_a_delivered_name_are_dropped_not_refused(client, db, source):
    # A bidi override shows "\u202eelaH" as "Hale" reversed; a zero-width space makes two names
    # that look the same compare different. The delivery is taken (never lost for it), names clean.
    payload = dict(PAYLOAD, first_name="\u202eRobin\u200b", last_name="\ufeffHa\u2066le\u2069\u200e")
    resp = deliver(client, payload)
    assert resp.status_code == 202, resp.get_json()
    patient = db.session.get(Lead, resp.get_json()["lead_id"]).patient
    assert (patient.first_name, patient.last_name) == ("Robin", "Hale")
    # Joiners stay: scripts need them (Persian, Devanagari, emoji sequences).
    resp = deliver(
        client, dict(PAYLOAD, first_name="Mi\u200cna", email="mina@example.com", phone="(305) 555-0177"), msg_id="msg_2"
    )
    assert db.session.get(Lead, resp.get_json()["lead_id"]).patient.first_name == "Mi\u200cna"
    # A name of nothing but invisible characters is a missing name, as an empty one is.
    resp = deliver(
        client, dict(PAYLOAD, first_name="\u200b\u202e", email="x@example.com", phone="(305) 555-0166"), msg_id="msg_3"
    )
    assert resp.status_code == 422 and "first_name" in json.dumps(resp.get_json())


def test_same_webhook_id_again_is_a_duplicate_with_the_same_lead(client, db, source):
    first = deliver(client, PAYLOAD).get_json()
    again = deliver(client, PAYLOAD)
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "lead_id": first["lead_id"]}
    assert count(db, Lead) == 1
    dup = items(db)[-1]
    assert dup.status == InboxStatus.DUPLICATE and dup.dedupe_key is None and dup.lead_id == first["lead_id"]


def test_same_webhook_id_with_a_different_body_is_a_duplicate_flagged_for_an_admin(client, db, source):
    first = deliver(client, PAYLOAD).get_json()
    again = deliver(client, dict(PAYLOAD, phone="(305) 555-0199"))
    assert again.status_code == 200 and again.get_json() == {"status": "duplicate", "lead_id": first["lead_id"]}
    assert count(db, Lead) == 1
    dup = items(db)[-1]
    assert dup.status == InboxStatus.DUPLICATE and "555-0199" in dup.body
    assert dup.error.startswith(f"Same webhook-id as inbox item #{first['inbox_id']} but a different body")
    assert deliver(client, PAYLOAD).status_code == 200 and items(db)[-1].error is None  # a plain repeat


@pytest.mark.parametrize(
    ("body", "content_type"),
    [({"first_name": "Robin"}, "application/json"), ("{oops", "application/json"), ("<a/>", "application/xml")],
    ids=["invalid fields", "malformed json", "not json"],
)
def test_a_repeat_of_a_delivered_webhook_id_is_a_duplicate_whatever_its_body(client, db, source, body, content_type):
    """The webhook-id is the sender's idempotency key: once it made a lead, a repeat is answered
    "duplicate" with that lead, not refused as though it were a new request (SPEC 5)."""
    first = deliver(client, PAYLOAD, msg_id="dup-1").get_json()
    again = deliver(client, body, msg_id="dup-1", content_type=content_type)
    assert again.status_code == 200 and again.get_json() == {"status": "duplicate", "lead_id": first["lead_id"]}
    dup = items(db)[-1]
    assert dup.status == InboxStatus.DUPLICATE and dup.lead_id == first["lead_id"]
    assert dup.error.startswith(f"Same webhook-id as inbox item #{first['inbox_id']} but a different body")
    assert count(db, Lead) == 1
    # Another id with the same bad body is still refused: only the key decides.
    assert deliver(client, body, msg_id="dup-2", content_type=content_type).status_code in (400, 422)


def test_a_refusal_corrected_by_the_senders_resend_needs_no_attention(client, db, source, app):
    from crm.services import intake

    refused = deliver(client, dict(PAYLOAD, email="not-an-email"), msg_id="fix-1")
    assert refused.status_code == 422
    refused_item = items(db)[-1]
    attention = sa.select(sa.func.count()).select_from(InboxItem).where(intake.needs_attention())
    assert db.session.scalar(attention) == 1 and intake.is_attention(refused_item)
    resent = deliver(client, PAYLOAD, msg_id="fix-1")  # the sender fixed the field, same id
    assert resent.status_code == 202
    db.session.expire_all()
    assert db.session.scalar(attention) == 0 and not intake.is_attention(db.session.get(InboxItem, refused_item.id))
    # A replay of the refused item now answers as the resend's duplicate instead of refusing again.
    outcome = intake.process(refused_item.id)
    assert outcome.status == "duplicate" and outcome.lead_id == resent.get_json()["lead_id"]
    db.session.expire_all()
    replayed = db.session.get(InboxItem, refused_item.id)
    assert replayed.status == InboxStatus.DUPLICATE and replayed.lead_id == resent.get_json()["lead_id"]
    assert count(db, Lead) == 1


@pytest.mark.parametrize("consent", [{"checked": False}, {}, {"given": True}, [{"checked": True}], [[True]]])
def test_consent_sent_as_an_object_is_no_answer(client, db, source, consent):
    resp = deliver(client, dict(PAYLOAD, consent=consent))
    assert resp.status_code == 422
    (message,) = resp.get_json()["fields"]["consent"]
    assert message.startswith("Send consent as a yes or no (true/false), not ")
    assert count(db, Lead) == 0


def test_consent_nested_hundreds_deep_is_refused_not_a_failure_retried_forever(client, db, source):
    consent = True
    for _ in range(600):
        consent = [consent]
    resp = deliver(client, dict(PAYLOAD, consent=consent))
    assert resp.status_code == 422 and "consent" in resp.get_json()["fields"]
    assert items(db)[-1].status == InboxStatus.REJECTED


@pytest.mark.parametrize("field", ["first_name", "last_name", "city", "street", "message", "condition", "utm_source"])
def test_half_a_utf16_pair_is_a_422_not_a_delivery_that_can_never_be_stored(client, db, source, field):
    body = json.dumps(PAYLOAD)[:-1] + f', "{field}": "a\\ud800b"}}'  # JSON spells it as an escape
    resp = deliver(client, body)
    assert resp.status_code == 422 and "UTF-16" in resp.get_json()["fields"][field][0]
    assert items(db)[-1].status == InboxStatus.REJECTED and count(db, Lead) == 0


def test_a_number_too_large_to_write_is_no_name(client, db, source):
    resp = deliver(client, json.dumps(PAYLOAD)[:-1] + ', "first_name": 1e400}')
    assert resp.status_code == 422 and resp.get_json()["fields"]["first_name"] == [
        "Expected a text value, not a number too large to write."
    ]


def test_a_choice_padded_with_a_long_run_of_spaces_is_refused_at_once(client, db, source):
    import time

    started = time.process_time()
    resp = deliver(client, dict(PAYLOAD, preferred_contact_time="a" + " " * 60_000 + "b"))
    assert resp.status_code == 422 and "preferred_contact_time" in resp.get_json()["fields"]
    assert time.process_time() - started < 2  # was a minute of backtracking


def test_identical_resubmission_is_folded_into_the_open_lead(client, db, source):
    first = deliver(client, PAYLOAD, msg_id="a").get_json()
    again = deliver(client, dict(PAYLOAD, message="Any time is fine now."), msg_id="b")
    assert again.status_code == 200
    assert again.get_json() == {"status": "resubmitted", "lead_id": first["lead_id"]}
    assert count(db, Lead) == 1
    kinds = db.session.scalars(sa.select(LeadEvent.kind).order_by(LeadEvent.id)).all()
    assert kinds == [EventKind.CREATED, EventKind.RESUBMITTED]
    folded = items(db)[-1]
    assert folded.status == InboxStatus.RESUBMITTED and folded.lead_id == first["lead_id"]


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"drop": ("webhook-signature",)}, "missing"),
        ({"drop": ("webhook-id",)}, "missing"),
        ({"signature": "v1,AAAA"}, "invalid signature"),
        ({"signature": "garbage"}, "invalid signature"),
        ({"secret": generate_secret()}, "invalid signature"),
        ({"at": timedelta(minutes=-6)}, "stale"),
        ({"at": timedelta(minutes=6)}, "stale"),
    ],
)
def test_bad_signature_or_stale_timestamp_is_401_and_stored_rejected(client, db, source, kwargs, reason):
    if isinstance(kwargs.get("at"), timedelta):  # relative to when the test runs, not when it was collected
        kwargs = {**kwargs, "at": datetime.now(UTC) + kwargs["at"]}
    resp = deliver(client, PAYLOAD, **kwargs)
    assert resp.status_code == 401
    assert reason in resp.get_json()["error"]
    assert count(db, Lead) == 0
    (item,) = items(db)
    assert item.status == InboxStatus.REJECTED and item.error.startswith("[401]")
    assert "webhook-signature" not in item.headers
    assert SECRET not in json.dumps(item.headers) and SECRET not in (item.error or "")


def test_an_absurdly_long_timestamp_is_a_recorded_401(client, db, source):
    resp = deliver(client, PAYLOAD, extra_headers={"webhook-timestamp": "9" * 400})
    assert resp.status_code == 401 and "stale" in resp.get_json()["error"]
    assert items(db)[0].status == InboxStatus.REJECTED and items(db)[0].error.startswith("[401]")


def test_a_timestamp_in_milliseconds_is_named_as_such(client, db, source):
    now_ms = str(int(datetime.now(UTC).timestamp() * 1000))
    resp = deliver(client, PAYLOAD, extra_headers={"webhook-timestamp": now_ms})
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "webhook-timestamp must be Unix seconds, not milliseconds"
    assert count(db, Lead) == 0 and items(db)[0].status == InboxStatus.REJECTED


def test_several_signatures_one_valid_is_accepted(client, db, source):
    good = sign_payload(SECRET, json.dumps(PAYLOAD), msg_id="msg_1").headers["webhook-signature"]
    resp = deliver(client, PAYLOAD, signature=f"v1,bm9wZQ== {good}")
    assert resp.status_code == 202


def test_unknown_or_inactive_source_is_404(client, db, source):
    assert deliver(client, PAYLOAD, slug="nope").status_code == 404
    source.active = False
    db.session.commit()
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 404 and "error" in resp.get_json()
    assert [i.status for i in items(db)] == [InboxStatus.REJECTED, InboxStatus.REJECTED]
    assert count(db, Lead) == 0


@pytest.mark.parametrize("value", ["Robin\u0000", "Ro\u0007bin", ["Robin", "\u0000"]])
def test_control_characters_are_a_422_on_both_databases(client, db, source, value):
    resp = deliver(client, dict(PAYLOAD, first_name=value))
    assert resp.status_code == 422, resp.get_json()
    assert "control characters" in resp.get_json()["fields"]["first_name"][0]
    assert items(db)[0].status == InboxStatus.REJECTED and count(db, Lead) == 0


def test_a_source_deactivated_by_another_worker_is_refused_within_the_cache_ttl(client, db, source, monkeypatch):
    import time

    from crm.services import intake

    assert deliver(client, PAYLOAD, msg_id="msg_a").status_code == 202  # the source is now cached
    # Another worker's change: a plain UPDATE in the database, no ORM event in this process.
    db.session.execute(sa.update(WebhookSource.__table__).values(active=False))
    db.session.commit()
    later = time.monotonic() + intake.SOURCES_TTL + 1
    monkeypatch.setattr(intake.time, "monotonic", lambda: later)
    assert deliver(client, PAYLOAD, msg_id="msg_b").status_code == 404


@pytest.mark.parametrize(
    "body",
    ["{not json", "[1, 2]", '"text"', "null", '{"first_name": NaN}', '{"zip": Infinity}',
     '{"a": ' + "[" * 20000 + "]" * 20000 + "}"],
)  # fmt: skip
def test_malformed_json_or_not_an_object_is_400(client, db, source, body):
    resp = deliver(client, body)
    assert resp.status_code == 400 and resp.get_json()["error"]
    assert items(db)[0].status == InboxStatus.REJECTED and items(db)[0].body == body


def test_invalid_fields_are_422_with_field_errors(client, db, source):
    bad = dict(PAYLOAD, email="not-an-email", zip="123", first_name="x" * 101, message="m" * 2001)
    resp = deliver(client, bad)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["error"] == "validation failed"
    assert set(body["fields"]) == {"email", "zip", "first_name", "message"}
    assert body["read_from"] == {"email": "email", "zip": "zip", "first_name": "first_name", "message": "message"}
    (item,) = items(db)
    assert item.status == InboxStatus.REJECTED and "validation failed" in item.error
    assert count(db, Lead) == 0 and count(db, Patient) == 0


@pytest.mark.parametrize(
    "sent, stored",
    [(2134, "02134"), (7030, "07030"), (501, "00501"), (33101, "33101"), (2134.0, "02134"),
     (21341234, "02134-1234"), (331011234, "33101-1234")],
)  # fmt: skip
def test_a_zip_sent_as_a_json_number_gets_its_leading_zeros_back(client, db, source, sent, stored):
    resp = deliver(client, dict(PAYLOAD, zip=sent))
    assert resp.status_code == 202, resp.get_json()
    assert db.session.get(Lead, resp.get_json()["lead_id"]).patient.zip == stored


def test_a_zip_plus_4_with_a_space_is_taken_from_a_webhook_too(client, db, source):
    resp = deliver(client, dict(PAYLOAD, zip="33101 1234"))
    assert resp.status_code == 202 and db.session.get(Lead, resp.get_json()["lead_id"]).patient.zip == "33101-1234"


@pytest.mark.parametrize("sent", ["2134", 12, 123456, -2134, 2134.5, True, "33101  1234", "33101-"])
def test_a_zip_too_short_as_text_or_an_impossible_number_is_still_refused(client, db, source, sent):
    resp = deliver(client, dict(PAYLOAD, zip=sent))
    assert resp.status_code == 422 and set(resp.get_json()["fields"]) == {"zip"}


def test_body_too_large_by_content_length_is_413(client, db, source):
    resp = deliver(client, dict(PAYLOAD, message="x" * (70 * 1024)))
    assert resp.status_code == 413 and "error" in resp.get_json()
    (item,) = items(db)
    assert item.status == InboxStatus.REJECTED and item.error.startswith("[413]") and item.body == ""


def test_body_too_large_without_content_length_is_413(make_app, db, source):
    app = make_app(WEBHOOK_MAX_BYTES=200)
    body = json.dumps(dict(PAYLOAD, message="x" * 300)).encode()
    signed = sign_payload(SECRET, body, msg_id="chunked")
    resp = app.test_client().post(
        "/webhooks/intake/site",
        input_stream=io.BytesIO(body),
        headers=signed.headers,
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert resp.status_code == 413
    db.session.expire_all()
    assert items(db)[0].error.startswith("[413]")


def test_rate_limit_is_429_with_retry_after(make_app, db, source):
    app = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="2 per minute")
    client = app.test_client()
    codes = [deliver(client, PAYLOAD, msg_id=f"m{i}").status_code for i in range(3)]
    assert codes[:2] == [202, 200] and codes[2] == 429
    resp = deliver(client, PAYLOAD, msg_id="m9")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert "error" in resp.get_json()


def test_behind_a_proxy_the_client_ip_comes_from_x_forwarded_for(make_app, db, source):
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    deliver(make_app().test_client(), PAYLOAD, msg_id="direct", extra_headers=forwarded)
    proxied = make_app(TRUST_PROXY=1, RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="1 per minute").test_client()
    assert deliver(proxied, PAYLOAD, msg_id="via-proxy", extra_headers=forwarded).status_code == 200
    # ... and the rate limit counts that client, not the proxy every client shares
    other_client = {"X-Forwarded-For": "198.51.100.7"}
    assert deliver(proxied, PAYLOAD, msg_id="another", extra_headers=other_client).status_code == 200
    assert deliver(proxied, PAYLOAD, msg_id="again", extra_headers=forwarded).status_code == 429
    assert [item.remote_ip for item in items(db)] == ["127.0.0.1", "203.0.113.9", "198.51.100.7"]
    lead = db.session.scalars(sa.select(Lead)).one()
    assert lead.patient.consent_ip == "127.0.0.1"  # consent was given on the first, direct delivery


def with_a_store_that_is_down(make_app, limit: str):
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every call fails at once
    return make_app(
        RATELIMIT_ENABLED=True,
        WEBHOOK_RATE_LIMIT=limit,
        RATELIMIT_STORAGE_URI=unreachable,
        RATELIMIT_STORAGE_OPTIONS=rate_limit_storage_options(unreachable),
    )


def test_a_rate_limit_store_that_is_down_does_not_turn_deliveries_away(make_app, db, source):
    client = with_a_store_that_is_down(make_app, "2 per minute").test_client()
    codes = [deliver(client, PAYLOAD, msg_id=f"down{i}").status_code for i in range(3)]
    assert codes == [202, 200, 429]  # stored, and still limited: counted in the worker's memory
    assert count(db, Lead) == 1 and count(db, InboxItem) == 2


def test_a_redis_store_gets_a_short_timeout_and_every_store_one_error_type():
    assert rate_limit_storage_options("redis://cache.internal:6379/0") == {
        "wrap_exceptions": True,
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
    }
    assert rate_limit_storage_options("memory://") == {"wrap_exceptions": True}


TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL not set (.ci/run sets it when Redis answers)")
def test_with_redis_every_worker_counts_against_one_limit(make_app, db, source):
    def worker():  # an app with its own store object, as each gunicorn worker has
        return make_app(
            RATELIMIT_ENABLED=True,
            WEBHOOK_RATE_LIMIT="2 per minute",
            RATELIMIT_STORAGE_URI=TEST_REDIS_URL,
            RATELIMIT_STORAGE_OPTIONS=rate_limit_storage_options(TEST_REDIS_URL),
        ).test_client()

    first = worker()
    limiter.reset()  # a clean count in the test database
    assert [deliver(first, PAYLOAD, msg_id=f"w1-{i}").status_code for i in range(2)] == [202, 200]
    resp = deliver(worker(), PAYLOAD, msg_id="w2")
    assert resp.status_code == 429  # in memory, the second worker would have started from zero
    assert int(resp.headers["Retry-After"]) > 0


def test_only_429_and_503_tell_the_sender_to_retry_after(make_app, db, source):
    app = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="5 per minute")
    resp = deliver(app.test_client(), PAYLOAD)
    assert resp.status_code == 202 and "Retry-After" not in resp.headers
    assert resp.headers["X-RateLimit-Remaining"] == "4"


def test_made_up_source_slugs_share_one_allowance_per_ip(make_app, db, source):
    app = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="3 per minute")
    client = app.test_client()
    codes = [deliver(client, PAYLOAD, slug=f"random-{i}", msg_id=f"r{i}").status_code for i in range(5)]
    assert codes == [404, 404, 404, 429, 429]
    assert count(db, InboxItem) == 3  # the refused ones are not stored
    assert deliver(client, PAYLOAD).status_code == 202  # a real source keeps its own allowance


def test_csrf_is_not_required(make_app, db, source):
    app = make_app(WTF_CSRF_ENABLED=True)
    assert deliver(app.test_client(), PAYLOAD).status_code == 202


# ---------------------------------------------------------------- secrets and rotation


def test_two_live_secrets_during_rotation_and_expired_refused(client, db, source):
    new = generate_secret()
    source.secrets[0].expires_at = datetime.now(UTC) + timedelta(hours=24)
    source.secrets.append(WebhookSecret(secret=new))
    db.session.commit()
    assert deliver(client, PAYLOAD, secret=SECRET, msg_id="old").status_code == 202
    assert deliver(client, dict(PAYLOAD, zip="33139"), secret=new, msg_id="new").status_code in (200, 202)
    db.session.get(WebhookSecret, source.secrets[0].id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    assert deliver(client, PAYLOAD, secret=SECRET, msg_id="late").status_code == 401
    assert deliver(client, PAYLOAD, secret=new, msg_id="fresh").status_code == 200  # folded: same patient


# ---------------------------------------------------------------- bodies and mappings


def test_form_encoded_body(client, db, source):
    resp = deliver(client, urlencode(PAYLOAD), content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 202
    assert db.session.get(Lead, resp.get_json()["lead_id"]).patient.last_name == "Hale"


def test_a_json_body_sent_as_form_encoded_is_read_as_json(client, db, source):
    resp = deliver(client, PAYLOAD, content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 202
    assert db.session.get(Lead, resp.get_json()["lead_id"]).patient.email == "robin.hale@example.com"
    # ... but form data is still form data
    assert deliver(client, "{x=1", msg_id="m2", content_type="application/x-www-form-urlencoded").status_code == 422


def test_plain_json_mapping(client, db, source):
    source.field_mapping = mapping_examples.PLAIN_JSON
    db.session.commit()
    resp = deliver(client, mapping_examples.PLAIN_JSON_EXAMPLE)
    assert resp.status_code == 202, resp.get_json()
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert (lead.patient.first_name, lead.patient.city, lead.patient.phone) == ("Jamie", "Miami", "+13055550142")
    assert lead.condition.slug == "dystonia" and lead.preferred_mode == "telehealth"
    assert (lead.utm_source, lead.utm_campaign) == ("newsletter", "fall")


@pytest.mark.parametrize("mapping", [mapping_examples.TYPEFORM, mapping_examples.TYPEFORM_BY_POSITION])
def test_typeform_shaped_body(client, db, source, mapping):
    source.field_mapping = mapping
    db.session.commit()
    resp = deliver(client, mapping_examples.TYPEFORM_EXAMPLE)
    assert resp.status_code == 202, resp.get_json()
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert lead.patient.email == "morgan.lee@example.com" and lead.patient.zip == "33139"
    assert lead.condition.slug == "dystonia" and lead.utm_source == "google"
    assert lead.message.startswith("My neck spasms")


def test_typeform_with_a_skipped_optional_answer_still_maps_by_ref(client, db, source):
    source.field_mapping = mapping_examples.TYPEFORM
    db.session.commit()
    payload = json.loads(json.dumps(mapping_examples.TYPEFORM_EXAMPLE))
    payload["form_response"]["answers"] = [
        a for a in payload["form_response"]["answers"] if a["field"]["ref"] != "message"
    ]
    resp = deliver(client, payload)
    assert resp.status_code == 202
    assert db.session.get(Lead, resp.get_json()["lead_id"]).message == ""


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_gravity_forms_shaped_body(client, db, source, encoding):
    source.field_mapping = mapping_examples.GRAVITY_FORMS
    db.session.commit()
    example = mapping_examples.GRAVITY_FORMS_EXAMPLE
    if encoding == "json":
        resp = deliver(client, example)
    else:
        resp = deliver(client, urlencode(example), content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 202, resp.get_json()
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    p = lead.patient
    assert (p.first_name, p.last_name, p.street, p.city, p.state, p.zip) == (
        "Avery",
        "Santos",
        "12 Orange Ave",
        "Orlando",
        "FL",
        "32801",
    )
    assert lead.condition.slug == "dystonia"  # "muscle spasms" via synonyms
    assert p.preferred_contact_method == "text"


def test_mapping_that_finds_nothing_is_422_naming_our_fields(client, db, source):
    source.field_mapping = mapping_examples.GRAVITY_FORMS
    db.session.commit()
    resp = deliver(client, {"unrelated": True})
    assert resp.status_code == 422
    assert {"first_name", "last_name", "zip"} <= set(resp.get_json()["fields"])
    # The sender's developer is told which paths of their body were read for the refused fields.
    read_from = resp.get_json()["read_from"]
    assert read_from["first_name"] == mapping_examples.GRAVITY_FORMS["first_name"]
    assert read_from["zip"] == mapping_examples.GRAVITY_FORMS["zip"]
    assert set(read_from) <= set(resp.get_json()["fields"])
    assert "read from: " in items(db)[0].error


def test_consent_false_is_refused(client, db, source):
    resp = deliver(client, dict(PAYLOAD, consent=False))
    assert resp.status_code == 422 and "consent" in resp.get_json()["fields"]


@pytest.mark.parametrize(
    "refusal",
    ["no", "No", "false", "0", 0, "off", "declined", "Disagree", "I do not agree.", "I don\u2019t agree",
     "refused", "No, thanks", "opt-out", "none", "null", ["no"], "No, please don't call me",
     "I do not agree to be contacted", "I don't want to be contacted", "Do not contact me", "Never"],
)  # fmt: skip
def test_a_consent_that_says_no_in_words_is_refused(client, db, source, refusal):
    resp = deliver(client, dict(PAYLOAD, consent=refusal))
    assert resp.status_code == 422 and set(resp.get_json()["fields"]) == {"consent"}
    assert count(db, Patient) == 0


@pytest.mark.parametrize(
    "consent",
    ["yes", "I agree to be contacted", "Accepted", "true", 1, ["I agree"], "Notify me by text",
     "I agree to receive texts. Msg & data rates may apply. Reply STOP to opt out."],
)  # fmt: skip
def test_a_consent_that_says_yes_or_is_the_checkbox_label_is_taken(client, db, source, consent):
    assert deliver(client, dict(PAYLOAD, consent=consent)).status_code == 202


@pytest.mark.parametrize(
    "sent, stored",
    [("no preference", "any"), ("No_Preference", "any"), ("whenever", "any"), ("Flexible", "any"),
     ("Doesn\u2019t matter", "any"), ("", "any"), ("Morning (9am-12pm)", "morning"), ("Evenings", "evening"),
     ("Afternoon - after 1pm", "afternoon")],
)  # fmt: skip
def test_a_contact_time_of_no_preference_or_a_labelled_choice_is_understood(client, db, source, sent, stored):
    resp = deliver(client, dict(PAYLOAD, preferred_contact_time=sent))
    assert resp.status_code == 202, resp.get_json()
    assert db.session.get(Lead, resp.get_json()["lead_id"]).patient.preferred_contact_time == stored


def test_a_contact_time_we_cannot_read_is_still_a_422(client, db, source):
    resp = deliver(client, dict(PAYLOAD, preferred_contact_time="midnight"))
    assert resp.status_code == 422 and set(resp.get_json()["fields"]) == {"preferred_contact_time"}


@pytest.mark.parametrize("phone", ["305-555-0188 ext 12", "(305) 555-0188 x12", "+1 305 555 0188;ext=12"])
def test_a_phone_extension_reaches_the_leads_event_and_the_phone_stays_e164(client, db, source, phone):
    resp = deliver(client, dict(PAYLOAD, phone=phone))
    assert resp.status_code == 202
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert lead.patient.phone == "+13055550188"
    assert lead.events[0].data["phone_extension"] == "12"


# ---------------------------------------------------------------- de-duplication of patients


def test_returning_patient_by_phone_gets_a_new_lead_on_the_same_patient(client, db, source):
    ConditionFactory(name="Chronic pain", slug="chronic-pain")
    db.session.commit()
    first = deliver(client, dict(PAYLOAD, street=""), msg_id="a").get_json()
    other = dict(PAYLOAD, email="robin.new@example.com", condition="chronic pain", street="1 Main St")
    second = deliver(client, other, msg_id="b")
    assert second.status_code == 202
    lead1, lead2 = db.session.get(Lead, first["lead_id"]), db.session.get(Lead, second.get_json()["lead_id"])
    assert lead1.id != lead2.id and lead1.patient_id == lead2.patient_id
    assert count(db, Patient) == 1
    assert lead2.patient.street == "1 Main St"  # a missing field was filled in
    assert lead2.patient.email == "robin.hale@example.com"  # an existing one was kept
    assert lead2.events[0].data["returning_patient"] is True


def test_another_name_on_a_known_phone_is_shown_to_the_specialist(client, db, source, auth, specialist):
    """A spouse or parent sharing a phone files under the existing patient (SPEC 2.2), so the name
    they sent must be on the lead, and an email is shown as sent ("_" is not a choice value's)."""
    ConditionFactory(name="Chronic pain", slug="chronic-pain")
    db.session.commit()
    deliver(client, PAYLOAD)
    other = dict(PAYLOAD, first_name="Frank", last_name="Spouse", email="frank_spouse@example.com")
    lead_id = deliver(client, dict(other, condition="chronic pain"), msg_id="m2").get_json()["lead_id"]
    created = db.session.get(Lead, lead_id).events[0]
    assert created.data["details_sent"] == {
        "first_name": "Frank",
        "last_name": "Spouse",
        "email": "frank_spouse@example.com",
    }
    # Case alone is no other name.
    deliver(client, dict(PAYLOAD, first_name="ROBIN", message="again"), msg_id="m3")
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert "details_sent" not in folded.data
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "Sent under another name: Frank Spouse" in page
    assert 'Sent as</dt><dd class="col-8 text-warning-emphasis"><strong>Frank Spouse</strong>' in page
    assert "<strong>frank_spouse@example.com</strong>" in page


def test_a_returning_patients_new_details_are_recorded_as_on_the_form(client, db, source):
    lead_id = deliver(client, dict(PAYLOAD, preferred_contact_time="evening")).get_json()["lead_id"]
    changed = dict(PAYLOAD, phone="(305) 555-0199", zip="33133", preferred_contact_time="morning")
    assert deliver(client, changed, msg_id="m2").get_json() == {"status": "resubmitted", "lead_id": lead_id}
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert folded.data["details_sent"] == {"phone": "+13055550199", "zip": "33133"}
    assert folded.data["details_updated"] == {"preferred_contact_time": ["evening", "morning"]}
    other = deliver(client, dict(changed, condition="migraine"), msg_id="m3").get_json()
    assert other["status"] == "accepted" and other["lead_id"] != lead_id
    created = db.session.get(Lead, other["lead_id"]).events[0]
    assert created.data["returning_patient"] is True
    assert created.data["details_sent"] == {"phone": "+13055550199", "zip": "33133"}


def test_an_empty_field_a_returning_patient_fills_in_is_recorded_as_updated(client, db, source):
    deliver(client, PAYLOAD)
    deliver(client, dict(PAYLOAD, street="12 Palm Ave"), msg_id="m2")
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert folded.data["details_updated"] == {"street": [None, "12 Palm Ave"]}
    assert "details_sent" not in folded.data
    assert db.session.scalar(sa.select(Patient)).street == "12 Palm Ave"


def test_resubmission_after_24_hours_or_on_a_closed_lead_makes_a_new_lead(client, db, source):
    first = deliver(client, PAYLOAD, msg_id="a").get_json()
    lead = db.session.get(Lead, first["lead_id"])
    lead.created_at = datetime.now(UTC) - timedelta(hours=25)
    db.session.commit()
    second = deliver(client, PAYLOAD, msg_id="b")
    assert second.status_code == 202
    lead2 = db.session.get(Lead, second.get_json()["lead_id"])
    lead2.status = LeadStatus.LOST
    db.session.commit()
    assert deliver(client, PAYLOAD, msg_id="c").status_code == 202
    assert count(db, Lead) == 3 and count(db, Patient) == 1


# ---------------------------------------------------------------- after the commit


def test_geocoder_raising_still_answers_202_and_keeps_the_lead_pending(client, db, source, monkeypatch):
    def boom(lead):
        raise TimeoutError("geocoder is down")

    try:
        import crm.services.enrichment as enrichment  # noqa: F401

        monkeypatch.setattr("crm.services.enrichment.enrich_lead", boom)
    except ImportError:
        fake = types.ModuleType("crm.services.enrichment")
        fake.enrich_lead = boom
        monkeypatch.setitem(sys.modules, "crm.services.enrichment", fake)
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 202
    lead = db.session.get(Lead, resp.get_json()["lead_id"])
    assert lead.patient.geocode_status == GeocodeStatus.PENDING
    assert items(db)[0].status == InboxStatus.ACCEPTED


# ---------------------------------------------------------------- concurrency


def test_ten_concurrent_deliveries_of_one_webhook_id_make_one_lead(app, db, source, caplog):
    body = json.dumps(PAYLOAD)
    signed = sign_payload(SECRET, body, msg_id="same-id")
    barrier = threading.Barrier(10)
    results: list = []
    lock = threading.Lock()

    def worker():
        client = app.test_client()
        barrier.wait()
        resp = client.post("/webhooks/intake/site", data=signed.body, headers=signed.headers)
        with lock:
            results.append((resp.status_code, resp.get_json()))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    db.session.expire_all()
    assert count(db, Lead) == 1
    lead_id = db.session.scalar(sa.select(Lead.id))
    codes = sorted(code for code, _ in results)
    assert codes == [200] * 9 + [202], results
    assert all(body["lead_id"] == lead_id for _, body in results), results
    assert count(db, InboxItem) == 10
    assert db.session.scalar(sa.select(sa.func.count()).where(InboxItem.dedupe_key.is_not(None))) == 1
    assert "one-call path failed" not in caplog.text  # PostgreSQL: the winner's one call made the lead


def test_concurrent_deliveries_from_one_new_patient_make_one_patient(app, db, source, caplog):
    """Different webhook ids, same new email and phone: one patient, one lead, the rest folded in."""
    deliveries = [sign_payload(SECRET, json.dumps(PAYLOAD), msg_id=f"burst-{n}") for n in range(8)]
    barrier = threading.Barrier(len(deliveries))
    results: list = []
    lock = threading.Lock()

    def worker(signed):
        client = app.test_client()
        barrier.wait()
        resp = client.post("/webhooks/intake/site", data=signed.body, headers=signed.headers)
        with lock:
            results.append((resp.status_code, resp.get_json()))

    threads = [threading.Thread(target=worker, args=(d,)) for d in deliveries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    db.session.expire_all()
    assert count(db, Patient) == 1, results
    assert count(db, Lead) == 1, results
    assert sorted(code for code, _ in results) == [200] * 7 + [202], results
    assert {body["status"] for code, body in results if code == 200} == {"resubmitted"}
    assert "one-call path failed" not in caplog.text  # PostgreSQL: the others' calls found the patient


def test_database_unreachable_before_storing_is_503_with_retry_after(client, db, source, monkeypatch):
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    def down(self, *args, **kwargs):
        raise OperationalError("INSERT INTO inbox_items", {}, Exception("could not connect"))

    monkeypatch.setattr(Session, "flush", down)  # neither the delivery nor its failure can be written
    resp = deliver(client, PAYLOAD)
    monkeypatch.undo()
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 0
    assert "retry" in resp.get_json()["error"]


def test_database_unreachable_is_503_also_with_the_rate_limit_on(make_app, db, source, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from crm.services import intake

    def down(*args, **kwargs):
        raise OperationalError("SELECT webhook_sources", {}, Exception("could not connect"))

    client = make_app(RATELIMIT_ENABLED=True).test_client()
    intake.forget_sources()  # the rate limit's key looks the source up first
    monkeypatch.setattr(intake, "load_source", down)
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"


# ---------------------------------------------------------------- answered in front of Flask (crm/intake/webhook.py)


def test_every_webhook_answer_carries_the_security_headers(make_app, db, source):
    client = make_app(DEBUG=False).test_client()
    for resp in (deliver(client, PAYLOAD), deliver(client, PAYLOAD, signature="v1,bad", msg_id="m2")):
        assert resp.status_code in (202, 401)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Content-Security-Policy"].startswith("default-src")
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        assert resp.headers["Content-Type"] == "application/json"
        assert "Set-Cookie" not in resp.headers  # no session for a machine
    assert resp.get_json()["error"]


def test_other_methods_are_405_and_other_paths_go_to_the_app(client, db, source):
    resp = client.get("/webhooks/intake/site")
    assert resp.status_code == 405 and resp.headers["Allow"] == "OPTIONS, POST"
    assert resp.get_json() == {"error": "That action is not allowed here."}
    options = client.options("/webhooks/intake/site")
    assert options.status_code == 200 and options.headers["Allow"] == "OPTIONS, POST"
    assert client.put("/webhooks/intake/site", data=b"{}").status_code == 405
    for path in ("/webhooks/intake/site/", "/webhooks/intake/", "/webhooks/intake/site/extra"):
        resp = client.post(path, data=b"{}", headers={"content-type": "application/json"})
        assert resp.status_code == 404 and "error" in resp.get_json(), path  # Flask's JSON 404
    assert count(db, InboxItem) == 0
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_an_unexpected_error_is_a_logged_json_500_and_the_next_delivery_works(client, db, source, monkeypatch, caplog):
    from crm.services import intake

    real = intake.receive_webhook

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(intake, "receive_webhook", broken)
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "Something went wrong on our side. The error was logged."}
    assert "unhandled error on POST /webhooks/intake/site" in caplog.text and "a bug" in caplog.text
    monkeypatch.setattr(intake, "receive_webhook", real)
    assert deliver(client, PAYLOAD, msg_id="m2").status_code == 202


def test_a_sender_that_hangs_up_before_the_whole_body_is_a_quiet_400(app, client, db, source, caplog):
    """A server that does not end the body itself (no ``wsgi.input_terminated``; gunicorn does) has
    nothing to hand over when the sender closed before its body: Werkzeug's ClientDisconnected, the
    sender's doing, answered 400 and not logged as our error."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    signed = sign_payload(SECRET, json.dumps(PAYLOAD), msg_id="gone")
    headers = dict(signed.headers, **{"content-type": "application/json"})
    environ = EnvironBuilder(path="/webhooks/intake/site", method="POST", headers=headers, data=b"").get_environ()
    environ["CONTENT_LENGTH"] = "300"
    environ.pop("wsgi.input_terminated", None)
    body, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("400") and b"error" in b"".join(body)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert deliver(client, PAYLOAD, msg_id="m2").status_code == 202


def test_the_first_deliveries_to_a_worker_at_once_share_one_count(make_app, db, source, monkeypatch):
    """gthread: threads racing to make the worker's rate-limit store would each count in their own."""
    from crm.intake import webhook

    real = webhook.storage_from_string

    def slow(*args, **kwargs):  # making a store imports modules: a window for the race
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(webhook, "storage_from_string", slow)
    client = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="2 per minute").test_client()
    start, codes = threading.Barrier(6), []

    def one(i):
        start.wait()
        codes.append(client.post("/webhooks/intake/nowhere", data=b"{}").status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [404, 404, 429, 429, 429, 429]


def test_a_refused_delivery_is_logged_since_it_is_not_stored(make_app, db, source, caplog):
    client = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="1 per minute").test_client()
    assert deliver(client, PAYLOAD, msg_id="r1").status_code == 202
    with caplog.at_level(logging.INFO, logger="crm.intake.webhook"):
        assert deliver(client, PAYLOAD, msg_id="r2").status_code == 429
    assert "webhook rate limit 1 per 1 minute reached for site:127.0.0.1" in caplog.text
    assert count(db, InboxItem) == 1


def test_a_slug_in_another_script_is_an_unknown_source(client, db, source):
    resp = client.post("/webhooks/intake/%C3%A9t%C3%A9", data=b"{}", headers={"content-type": "application/json"})
    assert resp.status_code == 404
    assert items(db)[0].source_slug == "été"


def test_without_the_rate_limit_no_limit_headers(client, db, source):
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 202 and not [k for k, _ in resp.headers.items() if k.startswith("X-RateLimit")]


def test_every_limit_of_several_is_counted_and_the_one_reached_is_shown(make_app, db, source):
    client = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="3 per hour;2 per minute").test_client()
    first = deliver(client, PAYLOAD, msg_id="l0")
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    assert 0 < int(first.headers["X-RateLimit-Retry-After"]) <= 60
    assert int(first.headers["X-RateLimit-Reset"]) > datetime.now(UTC).timestamp()
    codes = [first.status_code] + [deliver(client, PAYLOAD, msg_id=f"l{i}").status_code for i in (1, 2)]
    assert codes == [202, 200, 429]
    refused = deliver(client, PAYLOAD, msg_id="l3")
    assert refused.status_code == 429 and refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0" and 0 < int(refused.headers["Retry-After"]) <= 60
    assert count(db, InboxItem) == 2  # refused deliveries are not stored


def test_a_store_that_came_back_counts_again_after_a_while(make_app, db, source, monkeypatch):
    from crm.intake import webhook

    app = with_a_store_that_is_down(make_app, "5 per minute")
    client = app.test_client()
    assert deliver(client, PAYLOAD, msg_id="a").headers["X-RateLimit-Remaining"] == "4"  # in memory
    door = app.wsgi_app
    assert isinstance(door, webhook.WebhookDoor)
    now = webhook.time.monotonic()
    monkeypatch.setattr(webhook.time, "monotonic", lambda: now + webhook.STORE_RETRY_SECONDS + 1)
    door.limit._store = None  # the store is back: a fresh one answers
    monkeypatch.setitem(app.config, "RATELIMIT_STORAGE_URI", "memory://")
    monkeypatch.setitem(app.config, "RATELIMIT_STORAGE_OPTIONS", {})
    resp = deliver(client, PAYLOAD, msg_id="b")
    assert resp.headers["X-RateLimit-Remaining"] == "4"  # counted in the store again (in memory: 3)


def test_condition_details_beside_an_unmatched_condition_stay_on_the_lead_and_fold_only_when_the_same(
    client, db, source
):
    payload = dict(PAYLOAD, condition="Other", condition_details="fibromyalgia")
    first = deliver(client, payload, msg_id="d1")
    assert first.status_code == 202
    lead = db.session.get(Lead, first.get_json()["lead_id"])
    assert lead.condition_id is None and lead.condition_text == "Other — fibromyalgia"
    again = deliver(client, payload, msg_id="d2")  # the same request again: folded
    assert again.status_code == 200 and again.get_json() == {"status": "resubmitted", "lead_id": lead.id}
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert "condition_details" not in folded.data  # nothing new to record
    other = deliver(client, dict(payload, condition_details="PTSD nightmares"), msg_id="d3")
    assert other.status_code == 202 and other.get_json()["lead_id"] != lead.id  # another condition
    only_words = deliver(client, dict(PAYLOAD, condition="", condition_details="back pain"), msg_id="d4")
    assert db.session.get(Lead, only_words.get_json()["lead_id"]).condition_text == "back pain"


def test_a_long_slug_variant_shares_its_sources_rate_limit(make_app, db, source):
    src = db.session.get(WebhookSource, source.id)
    src.slug = "s" * 80
    db.session.commit()
    client = make_app(RATELIMIT_ENABLED=True, WEBHOOK_RATE_LIMIT="2 per minute").test_client()
    codes = [deliver(client, PAYLOAD, slug="s" * 80 + tail, msg_id=f"v{tail}").status_code for tail in ("", "x", "y")]
    assert codes == [202, 200, 429]  # the view reads the first 80 characters: so does the limit


def test_a_source_that_maps_consent_needs_a_yes_in_every_delivery(client, db, source):
    # An unticked checkbox is left out of a form post: no value is no consent, not an implied yes.
    source.field_mapping = {"consent": "agree"}
    db.session.commit()
    resp = deliver(client, PAYLOAD, msg_id="no-consent")
    assert resp.status_code == 422 and "consent" in resp.get_json()["fields"]
    assert count(db, Patient) == 0
    resp = deliver(client, dict(PAYLOAD, agree="I agree to be contacted"), msg_id="consented")
    assert resp.status_code == 202


def test_gravity_forms_without_the_consent_box_ticked_is_refused(client, db, source):
    source.field_mapping = mapping_examples.GRAVITY_FORMS
    db.session.commit()
    unticked = {k: v for k, v in mapping_examples.GRAVITY_FORMS_EXAMPLE.items() if k != "7.1"}
    resp = deliver(client, urlencode(unticked), content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 422 and "consent" in resp.get_json()["fields"]


def test_an_implied_consent_does_not_replace_one_given_on_our_form(client, db, source):
    from crm.intake.forms import CONSENT_TEXT

    given_at = datetime(2026, 11, 1, 15, 0, tzinfo=UTC)
    patient = Patient(
        first_name="Robin", last_name="Hale", email="robin.hale@example.com", zip="33101",
        consent_text=CONSENT_TEXT, consent_at=given_at, consent_ip="203.0.113.7",
    )  # fmt: skip
    db.session.add(patient)
    db.session.commit()
    assert deliver(client, PAYLOAD).status_code == 202  # no consent wording: implied by the sender
    db.session.expire_all()
    patient = db.session.get(Patient, patient.id)
    assert patient.consent_text == CONSENT_TEXT and patient.consent_ip == "203.0.113.7"
    assert patient.consent_at.replace(tzinfo=UTC) == given_at
    # A delivery that carries its consent wording is the newer record and replaces it.
    worded = dict(PAYLOAD, condition="other thing", consent=True, consent_text="Yes, call me (partner form v2)")
    assert deliver(client, worded, msg_id="msg_2").status_code == 202
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).consent_text == "Yes, call me (partner form v2)"


# ---------------------------------------------------------------- PostgreSQL's one-call path


@pytest.fixture
def one_call(db, monkeypatch):
    """PostgreSQL only: counts the one-call path's calls and the rows they returned."""
    from crm import INTAKE_BIND
    from crm.services import intake

    if db.engine.dialect.name != "postgresql":
        pytest.skip("the one-call path is PostgreSQL's")
    db.engines[INTAKE_BIND].dispose()  # a pool that starts empty: the first delivery opens its one connection
    seen = {"calls": 0, "created": 0}
    real = intake._NEW_PATIENT_IN_ONE_CALL.rows

    def rows(*args, **kwargs):
        seen["calls"] += 1
        result = real(*args, **kwargs)
        seen["created"] += len(result)
        return result

    monkeypatch.setattr(intake._NEW_PATIENT_IN_ONE_CALL, "rows", rows)
    return seen


def intake_pool_pids(db, connections: int = 1) -> list[int]:
    """The server pids of the intake pool's connections (checked out together, so all different)."""
    from crm import INTAKE_BIND

    held = [db.engines[INTAKE_BIND].connect() for _ in range(connections)]
    try:
        return [conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() for conn in held]
    finally:
        for conn in held:
            conn.close()


def terminate(db, pids: list[int]) -> None:
    db.session.execute(sa.text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": pids})
    db.session.commit()


def test_a_new_patient_is_written_by_one_call(client, db, source, one_call):
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 202 and one_call == {"calls": 1, "created": 1}
    body = resp.get_json()
    item, lead = db.session.get(InboxItem, body["inbox_id"]), db.session.get(Lead, body["lead_id"])
    assert item.status == InboxStatus.ACCEPTED and item.lead_id == lead.id
    assert item.dedupe_key == f"webhook:{source.id}:msg_1" and item.processed_at is not None
    assert lead.patient.email == "robin.hale@example.com" and lead.patient.phone == "+13055550188"
    assert lead.status == LeadStatus.NEW and lead.condition.slug == "dystonia"
    (event,) = lead.events
    assert event.kind == EventKind.CREATED and event.data["inbox_id"] == item.id
    assert event.data["returning_patient"] is False
    assert db.session.get(WebhookSource, source.id).last_received_at is not None  # touched on the way


def test_a_known_contact_takes_the_ordinary_path(client, db, source, one_call):
    first = deliver(client, PAYLOAD).get_json()
    again = deliver(client, dict(PAYLOAD, email="other@example.com"), msg_id="msg_2")  # same phone
    assert again.status_code == 200 and again.get_json() == {"status": "resubmitted", "lead_id": first["lead_id"]}
    assert one_call == {"calls": 2, "created": 1}  # the second call found the patient and wrote nothing
    assert count(db, Patient) == 1 and count(db, Lead) == 1 and count(db, InboxItem) == 2


def test_a_failing_one_call_falls_back_to_the_ordinary_path(client, db, source, one_call_fails, caplog):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the one-call path is PostgreSQL's")
    resp = deliver(client, PAYLOAD)
    assert resp.status_code == 202 and resp.get_json()["lead_id"] is not None
    assert count(db, Lead) == 1 and items(db)[0].status == InboxStatus.ACCEPTED
    assert "one-call path failed (OperationalError None); taking the ordinary path" in caplog.text


def test_a_reply_lost_after_the_commit_makes_no_second_lead(client, db, source, monkeypatch):
    """The call committed but its answer never came back (the connection dropped): the ordinary
    path finds the patient and the item's webhook-id already written."""
    from sqlalchemy.exc import OperationalError

    from crm.services import intake

    if db.engine.dialect.name != "postgresql":
        pytest.skip("the one-call path is PostgreSQL's")
    real = intake._NEW_PATIENT_IN_ONE_CALL.rows

    def committed_then_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise OperationalError("SELECT * FROM pg_temp.crm_intake_new_patient(...)", {}, Exception("connection lost"))

    monkeypatch.setattr(intake._NEW_PATIENT_IN_ONE_CALL, "rows", committed_then_lost)
    resp = deliver(client, PAYLOAD)
    lead_id = db.session.scalar(sa.select(Lead.id))
    assert resp.status_code == 200 and resp.get_json() == {"status": "duplicate", "lead_id": lead_id}
    assert count(db, Patient) == 1 and count(db, Lead) == 1
    assert [i.status for i in items(db)] == [InboxStatus.ACCEPTED, InboxStatus.DUPLICATE]


def test_a_dropped_connection_costs_no_delivery(client, db, source, one_call):
    """The intake engine does not ping its connections: one that died (a database restart)
    fails its call, the delivery takes the ordinary path, and the pool opens a new one."""
    assert deliver(client, PAYLOAD).status_code == 202
    terminate(db, intake_pool_pids(db))
    second = deliver(client, dict(PAYLOAD, email="sam@example.com", phone="(305) 555-0101"), msg_id="msg_2")
    assert second.status_code == 202 and second.get_json()["lead_id"] is not None
    third = deliver(client, dict(PAYLOAD, email="kim@example.com", phone="(305) 555-0102"), msg_id="msg_3")
    assert third.status_code == 202
    assert one_call == {"calls": 3, "created": 2}  # the second's call failed, the third's worked again
    assert count(db, Lead) == 3


def test_a_dropped_connection_empties_the_pool(app, client, db, source, one_call, caplog):
    """After a restart every idle connection is dead: one failed call starts a fresh pool."""
    from crm import INTAKE_BIND

    pids = intake_pool_pids(db, 3)
    assert db.engines[INTAKE_BIND].pool.checkedin() == 3
    terminate(db, pids)
    assert deliver(client, PAYLOAD).status_code == 202  # its call failed: the ordinary path
    for n in range(2, 5):
        other = dict(PAYLOAD, email=f"p{n}@example.com", phone=f"(305) 555-010{n}")
        assert deliver(client, other, msg_id=f"msg_{n}").status_code == 202
    assert count(db, Lead) == 4 and one_call["created"] == 3
    assert caplog.text.count("one-call path failed") == 1  # not once per dead connection


def test_a_connection_that_lost_the_function_makes_it_again(app, client, db, source, one_call):
    from crm import INTAKE_BIND

    assert deliver(client, PAYLOAD).status_code == 202
    with db.engines[INTAKE_BIND].connect() as conn:  # the pool's one connection, as a pooler resets it
        conn.exec_driver_sql("DISCARD TEMP")
        conn.commit()
    second = deliver(client, dict(PAYLOAD, email="sam@example.com", phone="(305) 555-0101"), msg_id="msg_2")
    third = deliver(client, dict(PAYLOAD, email="kim@example.com", phone="(305) 555-0102"), msg_id="msg_3")
    assert (second.status_code, third.status_code) == (202, 202)
    assert one_call == {"calls": 3, "created": 2}
    assert count(db, Lead) == 3


def test_one_call_and_ordinary_path_write_the_same_rows(make_app, client, db, source, one_call):
    def written(lead_id: int) -> dict:
        lead = db.session.get(Lead, lead_id)
        item = db.session.scalar(sa.select(InboxItem).where(InboxItem.lead_id == lead_id))
        (event,) = lead.events
        skip = {"id", "patient_id", "lead_id", "email", "webhook_id", "dedupe_key", "headers", "body"}

        def row(obj) -> dict:
            return {c.key: getattr(obj, c.key) for c in obj.__table__.columns if c.key not in skip}

        data = dict(event.data, inbox_id=None)
        return {"patient": row(lead.patient), "lead": row(lead), "item": row(item), "event": (event.kind, data)}

    ordinary_app = make_app(INTAKE_ONE_CALL=False)
    fast = deliver(client, dict(PAYLOAD, phone=None), msg_id="fast")
    slow = deliver(ordinary_app.test_client(), dict(PAYLOAD, email="b@example.com", phone=None), msg_id="slow")
    assert fast.status_code == slow.status_code == 202 and one_call == {"calls": 1, "created": 1}
    assert fast.get_json().keys() == slow.get_json().keys()
    one, other = written(fast.get_json()["lead_id"]), written(slow.get_json()["lead_id"])
    for rows in (one, other):  # stamped by the clock of each request
        for name in ("patient", "lead", "item"):
            rows[name] = {k: v for k, v in rows[name].items() if not isinstance(v, datetime)}
    assert one == other


def test_the_one_call_path_can_be_turned_off(make_app, db, source, one_call):
    from crm import INTAKE_BIND

    app = make_app(INTAKE_ONE_CALL=False)
    with app.app_context():
        assert INTAKE_BIND not in db.engines
    assert deliver(app.test_client(), PAYLOAD).status_code == 202
    assert one_call == {"calls": 0, "created": 0} and count(db, Lead) == 1


def test_sqlite_has_no_intake_engine(app, db):
    from crm import INTAKE_BIND

    assert (INTAKE_BIND in db.engines) == (db.engine.dialect.name == "postgresql")


def test_the_contact_look_up_uses_the_indexes_before_any_statistics(db, one_call):
    """The function keeps its plans, made when the patients table may be new and not yet
    analyzed: that plan must still probe the indexes (one EXISTS with OR was a sequential scan,
    slower with every patient)."""
    from crm.services import intake

    # A table like patients (its two single-column indexes) that has never been analyzed; it hides
    # the real one in this transaction (pg_temp is searched first).
    db.session.execute(
        sa.text("CREATE TEMP TABLE patients (id serial PRIMARY KEY, email varchar(254), phone varchar(20))")
    )
    db.session.execute(sa.text("CREATE INDEX ON patients (email); CREATE INDEX ON patients (phone)"))
    db.session.execute(
        sa.text("INSERT INTO patients (email) SELECT 'p' || g || '@example.com' FROM generate_series(1, 20000) AS g")
    )
    db.session.execute(sa.text("SET LOCAL plan_cache_mode = force_generic_plan"))
    look_up = "SELECT " + intake.KNOWN_CONTACT.format(email="$1", phone="$2")
    db.session.execute(sa.text(f"PREPARE known_contact(text, text) AS {look_up}"))
    plan = "\n".join(db.session.scalars(sa.text("EXPLAIN EXECUTE known_contact('a@example.com', NULL)")))
    db.session.execute(sa.text("DEALLOCATE known_contact"))
    db.session.rollback()
    assert "Seq Scan" not in plan and plan.count("Index") >= 2, plan
