"""Demo data: a desk that looks alive on first run. Deterministic and idempotent."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import zipcodes

from crm.extensions import db
from crm.models import (
    Appointment,
    Condition,
    FollowUp,
    InboxItem,
    Lead,
    LeadEvent,
    Patient,
    Physician,
    Registration,
    User,
    WebhookSecret,
    WebhookSource,
)
from crm.models.enums import (
    AppointmentStatus,
    CallOutcome,
    ContactMethod,
    Credential,
    EventKind,
    GeocodePrecision,
    GeocodeStatus,
    InboxChannel,
    InboxStatus,
    LeadSourceKind,
    LeadStatus,
    LostReason,
    Role,
    VisitMode,
)
from crm.seed.reference import load_reference_data
from crm.services import accounts
from crm.services.npi import check_digit
from crm.services.workflow import REACHED

DEMO_PASSWORD = "desk-demo-2026"
DEMO_USERS = [
    ("admin@example.com", "Avery Admin", Role.ADMIN, ["en"]),
    ("maria@example.com", "Maria Lopez", Role.SPECIALIST, ["en", "es"]),
    ("james@example.com", "James Carter", Role.SPECIALIST, ["en"]),
    ("priya@example.com", "Priya Shah", Role.SPECIALIST, ["en", "hi"]),
]
DEMO_STATES = ["FL", "CA", "NY", "PA", "OH", "MI", "IL", "AZ", "CO", "MA", "NJ", "WA"]
PATIENT_EXTRA_STATES = ["TX", "ID"]  # no full program: shows "not eligible" reasons
DEMO_SOURCE_SLUG = "wordpress"
DEMO_SOURCE_SECRET = "whsec_" + base64.b64encode(b"appointment-desk-demo-secret-32b").decode()

FIRST = """
Olivia Liam Emma Noah Ava Elijah Sophia James Isabella Lucas Mia Mateo Amelia Levi Harper Ezra Evelyn Luca
Aria Asher Ella Leo Chloe Jack Nora Owen Zoe Caleb Layla Ryan Grace Aaron Rosa Diego Mei Omar Fatima Ivan
""".split()
LAST = """
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson
Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis
Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall
""".split()
STREETS = "Main Oak Maple Cedar Pine Elm Washington Lake Hill Park Sunset Lincoln Jackson Highland Church".split()
PRACTICE_WORDS = ["Wellness", "Integrative Care", "Family Medicine", "Health Partners", "Medical Group", "Clinic"]


def _zips_by_state(states: list[str]) -> dict[str, list[dict]]:
    out = {}
    for st in states:
        rows = [
            z
            for z in zipcodes.filter_by(state=st, active=True)
            if z["zip_code_type"] == "STANDARD" and z["lat"] not in ("0", "", None)
        ]
        out[st] = rows
    return out


def _npi(rng: random.Random, used: set[str]) -> str:
    while True:
        stem = "1" + "".join(str(rng.randint(0, 9)) for _ in range(8))
        npi = stem + check_digit(stem)
        if npi not in used:
            used.add(npi)
            return npi


def demo_steps(physicians: int, leads: int) -> int:
    """How many steps ``load_demo`` reports: one per physician, and two per lead (made, then
    enriched)."""
    return physicians + 2 * leads


def load_demo(progress: Callable[[int], None] | None = None, *, physicians: int = 300, leads: int = 60) -> dict:
    """Create demo users, physicians, a webhook source and leads unless the demo admin exists.
    ``progress(n)`` is told of every ``n`` steps done (``demo_steps`` in all)."""
    advance = progress or (lambda _n: None)
    report = load_reference_data()
    if db.session.scalar(sa.select(User.id).where(User.email == DEMO_USERS[0][0])):
        report["skipped"] = True
        return report
    rng = random.Random(2026)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    users = [
        accounts.create_user(email, name, DEMO_PASSWORD, role, languages=langs, on_shift=role == Role.SPECIALIST)
        for email, name, role, langs in DEMO_USERS
    ]
    specialists = [u for u in users if u.role == Role.SPECIALIST]
    conditions = list(db.session.scalars(sa.select(Condition).order_by(Condition.slug)))
    zips = _zips_by_state(DEMO_STATES + PATIENT_EXTRA_STATES)

    doctors = _demo_physicians(rng, physicians, zips, conditions, now, advance)
    source = WebhookSource(
        name="Website form (WordPress)",
        slug=DEMO_SOURCE_SLUG,
        field_mapping={
            "first_name": "first_name",
            "last_name": "last_name",
            "email": "email",
            "phone": "phone",
            "zip": "zip",
            "condition": "condition",
            "message": "message",
            "consent": "consent",
        },
    )
    source.secrets.append(WebhookSecret(secret=DEMO_SOURCE_SECRET))
    db.session.add(source)
    db.session.flush()
    created = _demo_leads(rng, leads, zips, conditions, doctors, specialists, source, now, advance)
    from crm.services.enrichment import enrich_lead  # eligibility + match list on every demo lead

    for lead in db.session.scalars(sa.select(Lead).order_by(Lead.id)):
        enrich_lead(lead, now)
        advance(1)
    report.update({"users": len(users), "physicians": len(doctors), "leads": created, "skipped": False})
    return report


def _in_calling_window(lead: Lead, due: datetime) -> datetime:
    """A demo call-back at a time the app itself would accept: inside the patient's calling window."""
    from flask import current_app

    from crm.services.calling_window import is_allowed, next_allowed, window_from_config
    from crm.services.followups import patient_timezone

    tz, window = patient_timezone(lead.patient)[0], window_from_config(current_app.config)
    return due if is_allowed(due, tz, window) else next_allowed(due, tz, window)


def _office_hours(when: datetime, salt: int) -> datetime:
    """The same day between 15:00 and 20:30 UTC (mid-morning to mid-afternoon across the US), so
    demo visits are not at night whenever the demo happens to be loaded."""
    return when.replace(hour=15 + salt % 6, minute=30 * (salt % 2), second=0, microsecond=0)


def _demo_physicians(rng, count, zips, conditions, now, advance) -> list[Physician]:
    used: set[str] = set()
    doctors = []
    today = now.date()
    for i in range(count):
        st = DEMO_STATES[i % len(DEMO_STATES)]
        z = rng.choice(zips[st])
        first, last = rng.choice(FIRST), rng.choice(LAST)
        telehealth = rng.random() < 0.55
        doc = Physician(
            npi=_npi(rng, used),
            first_name=first,
            last_name=last,
            credential=rng.choices(list(Credential), weights=[6, 2, 2, 1])[0],
            practice_name=f"{z['city']} {rng.choice(PRACTICE_WORDS)}",
            street=f"{rng.randint(10, 9999)} {rng.choice(STREETS)} St",
            city=z["city"],
            state=st,
            zip=z["zip_code"],
            latitude=float(z["lat"]),
            longitude=float(z["long"]),
            geocode_precision=GeocodePrecision.ZIP,
            geocode_status=GeocodeStatus.OK,
            timezone=z["timezone"],
            phone=f"+1{rng.choice(z['area_codes'] or ['555'])}555{rng.randint(1000, 1999)}",
            email=f"{first.lower()}.{last.lower()}{i}@example.org",
            website="",
            offers_in_person=not telehealth or rng.random() < 0.7,
            offers_telehealth=telehealth,
            languages=["en", "es"] if rng.random() < 0.25 else ["en"],
            accepting_new=rng.random() > 0.08,
            active=rng.random() > 0.03,
            priority=rng.choices([1, 2, 3], weights=[2, 6, 2])[0],
            weekly_capacity=rng.choice([5, 10, 15, 20]),
        )
        if rng.random() < 0.3:
            doc.conditions = rng.sample(conditions, k=min(len(conditions), rng.randint(3, 8)))
        roll = rng.random()
        if roll < 0.05:
            expires = today - timedelta(days=rng.randint(5, 200))  # expired: excluded from matching
        elif roll < 0.12:
            expires = today + timedelta(days=rng.randint(3, 29))  # expiring soon: warning
        else:
            expires = today + timedelta(days=rng.randint(60, 720))
        doc.registrations.append(
            Registration(state=st, number=f"{st}-{rng.randint(100000, 999999)}", expires_on=expires)
        )
        if rng.random() < 0.1:
            other = rng.choice([s for s in DEMO_STATES if s != st])
            doc.registrations.append(
                Registration(state=other, number=f"{other}-{rng.randint(100000, 999999)}", expires_on=expires)
            )
        db.session.add(doc)
        doctors.append(doc)
        advance(1)
    db.session.flush()
    return doctors


STATUS_PLAN = (
    [LeadStatus.NEW] * 14
    + [LeadStatus.ATTEMPTING] * 10
    + [LeadStatus.CONTACTED] * 10
    + [LeadStatus.BOOKED] * 8
    + [LeadStatus.COMPLETED] * 8
    + [LeadStatus.LOST] * 10
)


def _demo_leads(rng, count, zips, conditions, doctors, specialists, source, now, advance) -> int:
    published = [c for c in conditions if c.published] or conditions
    delivered = []
    for i in range(count):
        status = STATUS_PLAN[i % len(STATUS_PLAN)]
        st = rng.choice(PATIENT_EXTRA_STATES) if rng.random() < 0.08 else rng.choice(DEMO_STATES)
        z = rng.choice(zips[st])
        first, last = rng.choice(FIRST), rng.choice(LAST)
        # New leads are recent, inside the 15-minute speed-to-lead target, except a few left
        # waiting for hours (so the SLA alerts have something to show, not one per lead); the
        # others are older.
        if status == LeadStatus.NEW and i % 5:
            created = now - timedelta(minutes=rng.randint(2, 12))
        elif status == LeadStatus.NEW:
            created = now - timedelta(minutes=rng.randint(60, 60 * 30))
        else:
            # A completed lead is old enough for its calls, booking and visit to lie in the past.
            days = rng.randint(6 if status == LeadStatus.COMPLETED else 1, 29)
            created = now - timedelta(days=days, minutes=rng.randint(0, 600))
        patient = Patient(
            first_name=first,
            last_name=last,
            email=f"{first.lower()}.{last.lower()}.{i}@example.com",
            phone=f"+1{rng.choice(z['area_codes'] or ['555'])}555{rng.randint(100, 199):04d}",
            age_confirmed=True,
            zip=z["zip_code"],
            city=z["city"],
            state=st,
            latitude=float(z["lat"]),
            longitude=float(z["long"]),
            geocode_precision=GeocodePrecision.ZIP,
            geocode_status=GeocodeStatus.OK,
            timezone=z["timezone"],
            preferred_contact_method=rng.choice(list(ContactMethod)),
            language="es" if rng.random() < 0.15 else "en",
            consent_text="I agree to be contacted by phone, text or email about my appointment request.",
            consent_at=created,
            consent_ip="203.0.113.10",
            created_at=created,
        )
        condition = rng.choice(published)
        lead = Lead(
            patient=patient,
            condition=condition,
            condition_text=condition.name,
            message=rng.choice(["", "Prefer afternoons.", "Looking for a telehealth visit if possible.", ""]),
            source_kind=LeadSourceKind.WEBHOOK if i % 3 == 0 else LeadSourceKind.FORM,
            webhook_source=source if i % 3 == 0 else None,
            landing_page_url=f"https://directory.example.com/conditions/{condition.slug}",
            utm_source=rng.choice(["google", "facebook", "newsletter", ""]),
            utm_medium=rng.choice(["cpc", "organic", "email", ""]),
            status=LeadStatus.NEW,
            created_at=created,
            sla_due_at=created + timedelta(minutes=15),
        )
        db.session.add(lead)
        db.session.flush()
        _event(lead, None, EventKind.CREATED, {"channel": lead.source_kind.value}, created)
        delivered.append((lead, i))
        if status != LeadStatus.NEW or rng.random() < 0.4:
            _advance(rng, lead, status, specialists, doctors, created, now)
        advance(1)
    for lead, i in sorted(delivered, key=lambda pair: pair[0].created_at):  # ids in arrival order
        _inbox_item(lead, source, i)
    _inbox_extras(rng, source, now)
    # As intake keeps it: the source page's "Last received" agrees with its recent deliveries.
    db.session.flush()
    source.last_received_at = db.session.scalar(
        sa.select(sa.func.max(InboxItem.received_at)).where(InboxItem.source_id == source.id)
    )
    db.session.flush()
    return count


def _delivery(lead, i: int) -> tuple[InboxChannel, dict, str, dict]:
    """What the form or the WordPress plugin sent for a demo lead: channel, body, id, headers."""
    p = lead.patient
    fields = {
        "first_name": p.first_name,
        "last_name": p.last_name,
        "email": p.email,
        "phone": p.phone,
        "zip": p.zip,
        "condition": lead.condition.slug,
        "message": lead.message,
    }
    if lead.source_kind == LeadSourceKind.WEBHOOK:
        msg_id = f"msg_demo{i:04d}"
        headers = {
            "content-type": "application/json",
            "user-agent": "WordPress/6.6; https://directory.example.com",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(lead.created_at.timestamp())),
        }
        return InboxChannel.WEBHOOK, {**fields, "consent": True}, msg_id, headers
    # The form's item holds the validated fields under our names, as intake stores them.
    token = f"{random.Random(i).getrandbits(128):032x}"  # the form's idempotency token
    body = {
        **fields,
        "condition": lead.condition.name,
        "consent": True,
        "consent_text": p.consent_text,
        "language": p.language,
        "landing_page_url": lead.landing_page_url,
        "utm_source": lead.utm_source,
        "utm_medium": lead.utm_medium,
    }
    headers = {"content-type": "application/x-www-form-urlencoded", "user-agent": "Mozilla/5.0"}
    return InboxChannel.FORM, body, token, headers


def _inbox_item(lead, source, i: int) -> None:
    """The inbox row intake would have stored for a demo lead, so /admin/inbox has history."""
    channel, body, key, headers = _delivery(lead, i)
    webhook = channel == InboxChannel.WEBHOOK
    db.session.add(
        InboxItem(
            channel=channel,
            source_id=source.id if webhook else None,
            source_slug=source.slug if webhook else "form",
            webhook_id=key,
            dedupe_key=f"webhook:{source.id}:{key}" if webhook else f"form:{key}",
            received_at=lead.created_at,
            remote_ip="192.0.2.44" if webhook else "203.0.113.10",
            headers=headers,
            content_type="application/json",
            body=json.dumps(body, sort_keys=True),
            status=InboxStatus.ACCEPTED,
            attempts=1,
            processed_at=lead.created_at,
            lead_id=lead.id,
        )
    )


def _inbox_extras(rng, source, now) -> None:
    """A resent delivery (duplicate) and one signed with a retired secret (rejected): what an
    admin meets in a real inbox."""
    first = db.session.scalar(
        sa.select(InboxItem).where(InboxItem.channel == InboxChannel.WEBHOOK).order_by(InboxItem.received_at.desc())
    )
    if first is not None:
        db.session.add(
            InboxItem(
                channel=InboxChannel.WEBHOOK,
                source_id=source.id,
                source_slug=source.slug,
                webhook_id=first.webhook_id,
                received_at=first.received_at + timedelta(seconds=30),
                remote_ip=first.remote_ip,
                headers=first.headers,
                content_type=first.content_type,
                body=first.body,
                status=InboxStatus.DUPLICATE,
                attempts=1,
                processed_at=first.received_at + timedelta(seconds=30),
                lead_id=first.lead_id,
            )
        )
    sent = now - timedelta(hours=rng.randint(2, 20))
    body = {"first_name": "Test", "last_name": "Submission", "email": "", "zip": "", "condition": "", "consent": True}
    db.session.add(
        InboxItem(
            channel=InboxChannel.WEBHOOK,
            source_id=source.id,
            source_slug=source.slug,
            webhook_id="msg_demo_retired_secret",
            received_at=sent,
            remote_ip="192.0.2.44",
            headers={"content-type": "application/json", "webhook-id": "msg_demo_retired_secret"},
            content_type="application/json",
            body=json.dumps(body),
            status=InboxStatus.REJECTED,
            error="[401] invalid signature",
            processed_at=sent,
        )
    )


def _event(lead, actor, kind, data, at):
    db.session.add(
        LeadEvent(lead_id=lead.id, actor_id=actor.id if actor else None, kind=kind, data=data, created_at=at)
    )


def _transition(lead, actor, to, at, reason=None):
    data = {"from": lead.status.value, "to": to.value}
    if reason:
        data["reason"] = reason.value
    _event(lead, actor, EventKind.STATUS_CHANGED, data, at)
    lead.status = to
    lead.last_activity_at = at
    if to in REACHED and lead.reached_at is None:
        lead.reached_at = at  # as workflow.change_status: the funnel's "contacted" (docs/reports.md)


def _flag_if_late(lead, created: datetime, first_contact: datetime) -> None:
    """As the SLA sweep would have: a first attempt after the business-hours deadline was flagged
    then (the reports count it as a missed target)."""
    from flask import current_app

    from crm.services.followups import patient_timezone
    from crm.services.sla import SlaConfig, sla_deadline

    due = sla_deadline(created, SlaConfig.from_config(current_app.config), patient_timezone(lead.patient)[0])
    lead.sla_due_at = due
    if first_contact > due:
        lead.sla_breached_at = lead.escalated_at = due


def _advance(rng, lead, target, specialists, doctors, created, now):
    latest = now - timedelta(minutes=1)

    def after(t: datetime, **delta) -> datetime:
        """A step later, but never in the future: a lead received minutes ago was shown assigned
        half an hour from now."""
        return max(t, min(t + timedelta(**delta), latest))

    owner = rng.choice(specialists)
    t = after(created, minutes=rng.randint(2, 40))
    lead.assignee, lead.assigned_at = owner, t
    _event(lead, None, EventKind.ASSIGNED, {"to": owner.id, "by": "auto"}, t)
    if target == LeadStatus.NEW:
        return
    t = after(t, minutes=rng.randint(1, 30))
    lead.attempts += 1
    lead.first_contact_at = t  # the first call attempt meets the speed-to-lead target, as in the app
    _flag_if_late(lead, created, t)
    _event(lead, owner, EventKind.CALL_ATTEMPT, {"outcome": CallOutcome.NO_ANSWER.value}, t)
    _transition(lead, owner, LeadStatus.ATTEMPTING, t)
    if target == LeadStatus.ATTEMPTING:
        due = _in_calling_window(lead, now + timedelta(hours=rng.randint(-3, 30)))
        db.session.add(FollowUp(lead=lead, owner=owner, due_at=due, note="Try again", created_at=t))
        lead.next_follow_up_at = due
        return
    if target == LeadStatus.LOST:
        reason = rng.choice(list(LostReason))
        closed = after(t, days=1)
        _transition(lead, owner, LeadStatus.LOST, closed, reason)
        lead.lost_reason, lead.closed_at = reason, closed
        return
    t = after(t, hours=rng.randint(1, 20))
    lead.attempts += 1
    _event(lead, owner, EventKind.CALL_ATTEMPT, {"outcome": CallOutcome.REACHED.value}, t)
    _transition(lead, owner, LeadStatus.CONTACTED, t)
    _event(lead, owner, EventKind.NOTE, {"text": "Spoke with the patient; looking for a physician nearby."}, t)
    if target == LeadStatus.CONTACTED:
        due = _in_calling_window(lead, now + timedelta(hours=rng.randint(-2, 48)))
        db.session.add(FollowUp(lead=lead, owner=owner, due_at=due, note="Send physician options", created_at=t))
        lead.next_follow_up_at = due
        return
    # Booked as the app books: a physician registered in the patient's state past the visit.
    valid_until = (now + timedelta(days=30)).date()
    registered = [
        d
        for d in doctors
        if d.active and any(r.state == lead.patient.state and r.expires_on >= valid_until for r in d.registrations)
    ]
    same_state = [d for d in registered if d.state == lead.patient.state] or registered or doctors
    doctor = rng.choice(same_state)
    t = after(t, hours=rng.randint(1, 24))
    if target == LeadStatus.COMPLETED:
        starts = t + timedelta(days=rng.randint(1, 5))
        starts = min(starts, now - timedelta(hours=2))
    else:
        starts = now + timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 6))
    starts = _office_hours(starts, lead.id)
    if target == LeadStatus.COMPLETED and starts > now - timedelta(hours=2):
        starts -= timedelta(days=1)
    mode = VisitMode.TELEHEALTH if doctor.offers_telehealth and rng.random() < 0.5 else VisitMode.IN_PERSON
    appt = Appointment(lead=lead, physician=doctor, starts_at=starts, mode=mode, created_by_id=owner.id, created_at=t)
    db.session.add(appt)
    db.session.flush()
    booked = {"appointment_id": appt.id, "physician_id": doctor.id, "physician": doctor.full_name}
    booked.update(starts_at=appt.starts_at.isoformat(), mode=mode.value)  # as booking.book writes it
    _event(lead, owner, EventKind.APPOINTMENT_BOOKED, booked, t)
    _transition(lead, owner, LeadStatus.BOOKED, t)
    if target == LeadStatus.COMPLETED:
        appt.status, appt.outcome_at = AppointmentStatus.COMPLETED, starts + timedelta(hours=1)
        _transition(lead, owner, LeadStatus.COMPLETED, starts + timedelta(hours=1))
        lead.closed_at = starts + timedelta(hours=1)


def demo_logins() -> list[tuple[str, str, str]]:
    return [(email, DEMO_PASSWORD, role.value) for email, _, role, _ in DEMO_USERS]


__all__ = ["DEMO_PASSWORD", "demo_logins", "load_demo"]
