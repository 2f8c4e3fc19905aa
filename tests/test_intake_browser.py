"""Playwright in Debian's Chromium: a patient requests an appointment; a specialist finds the lead."""

from __future__ import annotations

import json

import pytest

from crm.services.sources import sign_payload
from tests.conftest import LiveServer
from tests.factories import PASSWORD, ConditionFactory, WebhookSourceFactory

pytestmark = pytest.mark.browser

BODY = (
    "## What dystonia is\n\nDystonia makes muscles contract on their own, twisting the neck, hand or foot.\n\n"
    "## How a physician can help\n\nA certified physician reviews your history and explains the options "
    "your state allows.\n\n- Bring a list of your medicines\n- Note when the spasms are worst"
)


@pytest.fixture
def site(make_app, db):
    ConditionFactory(
        name="Dystonia",
        slug="dystonia",
        synonyms=["muscle spasms"],
        summary="Involuntary muscle contractions.",
        body=BODY,
    )
    ConditionFactory(name="Chronic pain", slug="chronic-pain", summary="Pain lasting longer than three months.")
    ConditionFactory(name="Multiple sclerosis", slug="multiple-sclerosis", summary="Spasticity and nerve pain.")
    db.session.commit()
    app = make_app(WTF_CSRF_ENABLED=True)  # CSRF on, as in production
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_patient_requests_on_the_dystonia_page_and_a_specialist_finds_the_lead(site, page, specialist, screenshot):
    base = site.url
    page.goto(f"{base}/conditions")
    screenshot("intake-conditions")
    page.get_by_role("link", name="Dystonia").click()
    page.wait_for_url(f"{base}/conditions/dystonia")
    assert page.get_by_label("Condition").input_value() == "dystonia"
    screenshot("intake-condition-page")

    # first a mistake: the form comes back with the error and everything typed kept
    page.get_by_role("textbox", name="First name", exact=True).fill("Jordan")
    page.get_by_role("textbox", name="Last name", exact=True).fill("Whitfield")
    page.get_by_role("textbox", name="Email", exact=True).fill("jordan.whitfield@example.com")
    page.get_by_role("textbox", name="Phone", exact=True).fill("(305) 555-0164")
    page.get_by_role("textbox", name="ZIP code", exact=True).fill("331")
    page.get_by_label("Telehealth (video)").check()
    page.get_by_role("button", name="Book Appointment").click()
    page.wait_for_selector(".invalid-feedback")
    # the keyboard focus lands on the summary of what went wrong, which links to each field
    page.wait_for_load_state("load")
    assert page.evaluate("document.activeElement.matches('.alert[data-focus-on-load]')")
    page.locator(".form-error-list a", has_text="ZIP code").click()
    assert page.evaluate("document.activeElement.id") == "zip"
    assert page.get_by_role("textbox", name="Email", exact=True).input_value() == "jordan.whitfield@example.com"
    assert page.get_by_label("Telehealth (video)").is_checked()
    screenshot("intake-form-errors")

    page.get_by_role("textbox", name="ZIP code", exact=True).fill("33101")
    page.locator("#consent").check()
    page.get_by_role("button", name="Book Appointment").click()
    page.wait_for_url(f"{base}/thank-you**")
    assert page.get_by_text("what happens next").is_visible()
    screenshot("intake-thank-you")

    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/queue**")
    page.goto(f"{base}/queue")
    assert page.get_by_text("Whitfield").first.is_visible()
    screenshot("intake-queue-has-lead")


def test_phone_layout_of_the_condition_page(site, browser, screenshot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = context.new_page()
    try:
        pg.goto(f"{site.url}/conditions/dystonia")
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
        pg.screenshot(path="tests/artifacts/intake-phone.png", full_page=True)
        pg.goto(f"{site.url}/conditions")
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        pg.screenshot(path="tests/artifacts/intake-phone-list.png", full_page=True)
    finally:
        context.close()


def test_admin_inbox_pages(site, page, admin, db, screenshot):
    src = WebhookSourceFactory(slug="typeform", name="Typeform")
    db.session.commit()
    for i, payload in enumerate(
        [{"first_name": "Ana", "last_name": "Ruiz", "email": "ana@example.com", "zip": "33101"}, {"first_name": "x"}]
    ):
        signed = sign_payload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", json.dumps(payload), msg_id=f"m{i}")
        site.app.test_client().post(f"/webhooks/intake/{src.slug}", data=signed.body, headers=signed.headers)
    page.goto(f"{site.url}/login")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/queue**")
    page.goto(f"{site.url}/admin/inbox")
    screenshot("intake-admin-inbox")
    page.get_by_role("link", name="Rejected").click()
    page.locator("tbody a").first.click()
    assert page.get_by_role("button", name="Replay").is_visible()
    screenshot("intake-admin-inbox-item")
