"""Webhook sources and their signing secrets (Standard Webhooks ``whsec_...``).

Plain functions over the session: they ``flush()``; the caller (request, CLI
command) commits once. The admin UI (/admin/sources) and ``flask crm sources``
are both built on these.

A source may have several secrets: every secret whose ``expires_at`` is empty or
in the future is accepted when verifying a delivery, so a sender can switch to a
new secret while the old one keeps working for the rotation grace period.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets as _secrets
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from crm.extensions import db
from crm.models import AuditLog, InboxItem, WebhookSecret, WebhookSource
from crm.models.base import utcnow
from crm.services.contact import clean_name

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
ROTATION_GRACE = timedelta(hours=24)
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class SourceError(ValueError):
    """A readable reason why a source or secret was refused; ``field`` names the form field it is
    about, when that is not obvious from the message."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def generate_secret() -> str:
    """A new ``whsec_`` secret carrying 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def validate_secret(value: str) -> str:
    """Return the secret stripped, or raise SourceError explaining what is wrong."""
    value = (value or "").strip()
    if not value.startswith(SECRET_PREFIX):
        raise SourceError("A signing secret starts with 'whsec_' followed by base64.")
    encoded = value[len(SECRET_PREFIX) :]
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SourceError("The part after 'whsec_' is not valid base64.") from exc
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise SourceError(
            f"A signing secret must carry {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes "
            f"(this one has {len(raw)})."
        )
    return value


def slugify(name: str) -> str:
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60] or "source"


# The inbox files the public request form's submissions under the source "form": a webhook source
# of that slug would be listed and filtered together with them.
RESERVED_SLUGS = frozenset({"form"})


def unique_slug(name: str, slug: str | None = None) -> str:
    base = slugify(slug or name)
    candidate, n = base, 2
    while (
        candidate in RESERVED_SLUGS
        or db.session.scalar(sa.select(WebhookSource.id).where(WebhookSource.slug == candidate)) is not None
    ):
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def get_source(slug: str) -> WebhookSource | None:
    return db.session.scalar(sa.select(WebhookSource).where(WebhookSource.slug == slug))


def source_named(name: str) -> WebhookSource | None:
    """The source with this name, ignoring case."""
    return db.session.scalar(sa.select(WebhookSource).where(sa.func.lower(WebhookSource.name) == name.lower()))


def create_source(
    name: str,
    *,
    secret: str | None = None,
    slug: str | None = None,
    field_mapping: dict | None = None,
    active: bool = True,
) -> tuple[WebhookSource, str]:
    """Create a source with one secret; returns (source, secret in clear — show it once)."""
    try:
        name = clean_name(name)  # invisible characters dropped (crm/services/contact.py)
    except ValueError as exc:
        raise SourceError(str(exc), field="name") from None
    if not name:
        raise SourceError("Give the source a name.")
    if len(name) > 120:
        raise SourceError("The name is at most 120 characters.")
    same = source_named(name)
    if same is not None:
        # A provisioning script run twice must not leave two "WordPress" sources with two secrets.
        raise SourceError(
            f"A source named {same.name!r} already exists (slug {same.slug!r}): give the new one another name, "
            "or rotate that one's secret.",
            field="name",
        )
    if slug is not None:
        slug = slug.strip().lower()
        if not SLUG_RE.match(slug) or len(slug) > 80:
            raise SourceError("A slug uses lower-case letters, digits and single hyphens.")
        if slug in RESERVED_SLUGS:
            raise SourceError(f"The slug {slug!r} names the public request form in the inbox: choose another.")
        if get_source(slug) is not None:
            raise SourceError(f"The slug {slug!r} is already used by another source.")
    else:
        slug = unique_slug(name)
    secret = validate_secret(secret) if secret else generate_secret()
    if field_mapping:
        from crm.services.intake import validate_mapping

        validate_mapping(field_mapping)
    source = WebhookSource(name=name, slug=slug, field_mapping=dict(field_mapping or {}), active=active)
    source.secrets.append(WebhookSecret(secret=secret, created_at=utcnow()))
    db.session.add(source)
    try:
        # A plain flush, not a savepoint: on SQLite a SAVEPOINT opened before any write is the
        # transaction itself, and its release would commit the source before its audit row. The
        # caller rolls back on SourceError.
        db.session.flush()
    except sa.exc.IntegrityError:
        # Another admin (or a second run of the same script) added the name or the slug since the
        # checks above: the unique indexes (migration 0018 for names) refuse the second.
        raise SourceError(
            f"A source named {name!r} or with the slug {slug!r} was added a moment ago: reload the list.",
            field="name",
        ) from None
    return source, secret


def active_secrets(source: WebhookSource, now: datetime | None = None) -> list[WebhookSecret]:
    """Secrets accepted right now, newest first (expired ones are never accepted)."""
    now = now or utcnow()
    live = [s for s in source.secrets if s.expires_at is None or s.expires_at > now]
    return sorted(live, key=lambda s: (s.created_at, s.id or 0), reverse=True)


def rotate_secret(
    source: WebhookSource,
    *,
    secret: str | None = None,
    grace: timedelta = ROTATION_GRACE,
    now: datetime | None = None,
) -> str:
    """Add a new secret; the one current until now keeps working for ``grace`` (24 h, none with
    ``grace=timedelta(0)``, for a leaked secret), then expires. At most two are ever live (SPEC 3):
    a rotation while an older secret is still in its grace period is refused, since either live secret
    may be the one the sender signs with (a double click would end the one that works); with no grace
    every older secret ends now."""
    from crm.services.edit_guard import lock_for_edit

    now = now or utcnow()
    # Under the source's lock, with its secrets read afresh: two admins rotating at once would each
    # have seen one live secret and left three.
    lock_for_edit(source)
    live = active_secrets(source, now)
    if grace > timedelta(0) and len(live) > 1:
        retiring = live[1]
        raise SourceError(
            f"A rotation is already under way: the previous secret whsec_…{retiring.secret[-4:]} keeps working "
            f"until {retiring.expires_at:%Y-%m-%d %H:%M} UTC beside the new one whsec_…{live[0].secret[-4:]}. "
            "Once the sender signs with the new one, end the previous one, then rotate again if you need to. "
            "If a secret leaked, end it now (or: flask crm sources rotate SLUG --end-old-now)."
        )
    new_secret = validate_secret(secret) if secret else generate_secret()
    if any(s.secret == new_secret for s in source.secrets):
        raise SourceError("That secret was already used by this source; use a new one.")
    ends = now + grace
    for n, old in enumerate(active_secrets(source, now)):
        if n > 0:
            old.expires_at = now
        elif old.expires_at is None or old.expires_at > ends:
            old.expires_at = ends
    # A microsecond later than the old ones, so "newest first" is never a tie.
    source.secrets.append(WebhookSecret(secret=new_secret, created_at=now + timedelta(microseconds=1)))
    db.session.flush()
    return new_secret


def end_secret_now(
    source: WebhookSource, secret_id: int, *, withdraw: bool = False, now: datetime | None = None
) -> WebhookSecret:
    """Stop accepting a retired secret before its grace period ends (the sender has switched, or
    the old secret leaked). The current secret cannot be ended (rotate first). ``withdraw``: end the
    new secret of a rotation under way instead (it was lost before the sender got it, shown once as it
    is); the previous secret is current again, with no end. Each refuses a secret that is no longer
    what the admin's page showed (another admin acted meanwhile)."""
    from crm.services.edit_guard import lock_for_edit

    now = now or utcnow()
    lock_for_edit(source)
    live = active_secrets(source, now)
    found = next((s for s in live if s.id == secret_id), None)
    if found is None:
        raise SourceError("That secret has already expired.")
    if withdraw:
        if found is not live[0] or len(live) < 2:
            raise SourceError(
                "That secret is no longer the new one of a rotation (the page was out of date): nothing was changed."
            )
        live[1].expires_at = None
    elif found is live[0]:
        raise SourceError("That is the current secret: rotate first, then end the old one.")
    found.expires_at = now
    db.session.flush()
    return found


@dataclass
class SignedDelivery:
    """A body and the Standard Webhooks headers that sign it."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    webhook_id: str = ""


def sign_payload(
    secret: str, body: bytes | str, *, msg_id: str | None = None, at: datetime | None = None
) -> SignedDelivery:
    """Sign ``body`` with ``secret`` exactly as a sender would."""
    data = body.decode("utf-8") if isinstance(body, bytes) else body
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or utcnow()
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=data)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return SignedDelivery(body=data.encode("utf-8"), headers=headers, webhook_id=msg_id)


def sample_payload(source: WebhookSource) -> dict:
    """A test submission shaped by the source's field mapping (example.com contact details)."""
    from crm.services.intake import build_payload

    values = {
        "first_name": "Test",
        "last_name": "Delivery",
        "email": "test.delivery@example.com",
        "phone": "(202) 555-0143",
        "zip": "20001",
        "condition": "chronic pain",
        "message": "Test delivery sent from the admin screen.",
        "consent": True,
    }
    return build_payload(source.field_mapping or {}, values)


def sign_test_delivery(
    source: WebhookSource, payload: dict | bytes | str | None = None, *, now: datetime | None = None
) -> SignedDelivery:
    """Sign a test delivery with the source's newest live secret.

    ``payload`` defaults to :func:`sample_payload`. Post ``.body`` with ``.headers``
    to ``/webhooks/intake/<slug>`` (or hand both to
    ``crm.services.intake.receive_webhook``).
    """
    live = active_secrets(source, now)
    if not live:
        raise SourceError("This source has no live signing secret; rotate to create one.")
    if payload is None:
        payload = sample_payload(source)
    body = json.dumps(payload, separators=(",", ":")) if isinstance(payload, dict) else payload
    return sign_payload(live[0].secret, body, at=now)


def deliveries_today(now: datetime, tz: str) -> dict[int, int]:
    """Deliveries received per source since midnight of the desk's day (``BUSINESS_TIMEZONE``,
    as the reports count days): from 19:00 in New York the UTC date is already tomorrow, and a
    count from UTC midnight would drop the day's deliveries every evening."""
    zone = ZoneInfo(tz)
    since = datetime.combine(now.astimezone(zone).date(), time.min, tzinfo=zone).astimezone(UTC)
    rows = db.session.execute(
        sa.select(InboxItem.source_id, sa.func.count())
        .where(InboxItem.received_at >= since, InboxItem.source_id.is_not(None))
        .group_by(InboxItem.source_id)
    ).all()
    return dict(rows)


TEST_LEAD_NOTE = "Test delivery sent from the admin page: closed at once."


def made_by_test_delivery(item: InboxItem | None) -> int | None:
    """The id of the lead a test delivery's inbox item made, or None: only an ``accepted`` item
    made its lead. A fold (``resubmitted``) points at a real patient's open lead, which must stay
    a real lead; a duplicate, a rejection or a failure made none."""
    from crm.models.enums import InboxStatus

    if item is None or item.status != InboxStatus.ACCEPTED:
        return None
    return item.lead_id


def mark_test_lead(lead_id: int) -> bool:
    """Flag the lead a test delivery made (``Lead.is_test``): the reports never count it and the
    queue stops listing it once it is closed. A Core UPDATE: it neither bumps the lead's version
    (the enrich job saving the new lead meanwhile is no conflict) nor needs the lead loaded. Its
    trigger (migration 0014) marks the lead's day for the report rollups."""
    from crm.models import Lead

    done = db.session.execute(sa.update(Lead).where(Lead.id == lead_id, Lead.is_test.is_(False)).values(is_test=True))
    return done.rowcount == 1


def test_delivery_choice(source_id: int | None, webhook_id: str | None) -> bool | None:
    """For an inbox item: None when it was no admin's test delivery, else whether the admin asked
    for its lead to be closed (the ``test_delivery`` audit row; rows from before the choice was
    recorded: closed, the form's default)."""
    if source_id is None or not webhook_id:
        return None
    rows = db.session.scalars(
        sa.select(AuditLog.detail).where(
            AuditLog.action == "test_delivery",
            AuditLog.object_type == "webhook_source",
            AuditLog.object_id == str(source_id),
        )
    )
    for detail in rows:
        if isinstance(detail, dict) and detail.get("webhook_id") == webhook_id:
            return bool(detail.get("close_lead", True))
    return None


def close_test_lead(lead_id: int | None, *, actor) -> bool:
    """Close the lead a test delivery made (lost, reason other, with a note) while nobody has
    worked it yet, so no specialist is asked to call a made-up patient; if the auto-assignment job
    dealt it to someone in the meantime, it leaves their queue too. Only a lead flagged by
    :func:`mark_test_lead` is closed: a real lead (one the delivery folded into) is left alone."""
    from crm.models import Lead
    from crm.models.enums import LeadStatus, LostReason
    from crm.services import workflow

    lead = db.session.get(Lead, lead_id) if lead_id else None
    if lead is None or not lead.is_test or lead.status != LeadStatus.NEW:
        return False
    workflow.change_status(lead, LeadStatus.LOST, actor=actor, reason=LostReason.OTHER, note=TEST_LEAD_NOTE)
    return True
