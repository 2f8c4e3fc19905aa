"""Playwright in Debian's Chromium: an admin opens /reports and the SVG charts render under the CSP."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from crm.models import Appointment
from crm.models.enums import AppointmentStatus, LeadSourceKind, LeadStatus, LostReason, VisitMode
from tests.factories import (
    PASSWORD,
    ConditionFactory,
    LeadFactory,
    PatientFactory,
    PhysicianFactory,
    UserFactory,
    WebhookSourceFactory,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def busy_month(db):
    rng = random.Random(3)
    now = datetime.now(UTC)
    people = [UserFactory(name=n) for n in ("Maria Lopez", "James Carter", "Priya Shah")]
    conditions = [ConditionFactory(name=n) for n in ("Chronic pain", "Dystonia", "Epilepsy", "PTSD")]
    partner = WebhookSourceFactory(name="Partner directory")
    doctors = [PhysicianFactory(last_name=n, weekly_capacity=5) for n in ("Reyes", "Okafor", "Lind")]
    statuses = [LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED, LeadStatus.BOOKED, LeadStatus.COMPLETED]
    for k in range(90):
        created = now - timedelta(days=rng.randrange(30), minutes=rng.randrange(600))
        status = rng.choice(statuses + [LeadStatus.LOST])
        who = rng.choice(people) if status != LeadStatus.NEW else None
        lead = LeadFactory(
            patient=PatientFactory(state=rng.choice(["FL", "NY", "CA", "PA"])),
            created_at=created,
            status=status,
            lost_reason=LostReason.NOT_INTERESTED if status == LeadStatus.LOST else None,
            assignee=who,
            first_contact_at=created + timedelta(minutes=rng.randrange(2, 90)) if who else None,
            condition=rng.choice(conditions),
            source_kind=LeadSourceKind.WEBHOOK if k % 3 == 0 else LeadSourceKind.FORM,
            webhook_source=partner if k % 3 == 0 else None,
        )
        if status in (LeadStatus.BOOKED, LeadStatus.COMPLETED):
            db.session.add(
                Appointment(
                    lead=lead,
                    physician=rng.choice(doctors),
                    starts_at=created + timedelta(days=2),
                    mode=VisitMode.TELEHEALTH,
                    status=AppointmentStatus.COMPLETED if status == LeadStatus.COMPLETED else AppointmentStatus.BOOKED,
                )
            )
    db.session.commit()


def test_admin_sees_the_reports_with_charts(live_server, page, admin, busy_month, screenshot):
    blocked = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("requestfailed", lambda r: blocked.append(r.url))
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")
    page.get_by_role("link", name="Reports").click()
    page.wait_for_url(f"{live_server.url}/reports**")
    assert page.get_by_role("heading", name="Reports").is_visible()
    page.wait_for_load_state("networkidle")
    charts = page.locator("img.report-chart")
    assert charts.count() == 2
    for k in range(2):
        img = charts.nth(k)
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")
        assert img.bounding_box()["width"] > 300
    assert page.get_by_role("cell", name="Maria Lopez").is_visible()
    assert page.get_by_text("Webhook: Partner directory").is_visible()
    assert not blocked, blocked
    screenshot("reports")
    # A bad date shows a form error next to the field, not a crash.
    page.goto(f"{live_server.url}/reports?from=2026-13-01&to=2026-10-01")
    assert page.get_by_text("is not a date: use YYYY-MM-DD").is_visible()
    screenshot("reports-bad-date")


def test_chart_alone_renders_in_the_browser(live_server, page, admin, busy_month):
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")
    page.goto(f"{live_server.url}/reports/chart/funnel.svg")
    svg = page.locator("svg").first
    assert svg.is_visible()
    assert svg.bounding_box()["width"] > 300  # sized by its viewBox, no script needed
