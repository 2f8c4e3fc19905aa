"""Playwright in Debian's Chromium: sign in to the queue; ten wrong passwords lock the account."""

from __future__ import annotations

import pytest

from tests.factories import PASSWORD

pytestmark = pytest.mark.browser


def test_specialist_signs_in_and_reaches_the_queue(live_server, page, specialist, screenshot):
    page.goto(f"{live_server.url}/queue")
    assert "/login" in page.url  # anonymous users are sent to sign in
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")
    assert page.get_by_role("heading", name="Lead queue").is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    screenshot("queue-after-login")


def test_ten_wrong_passwords_show_the_lockout_message(live_server, page, specialist, screenshot):
    page.goto(f"{live_server.url}/login")
    for _ in range(10):
        page.get_by_label("Email").fill(specialist.email)
        page.get_by_label("Password").fill("definitely-wrong")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
    assert page.get_by_text("Too many failed sign-in attempts").is_visible()
    # Even the right password is refused now.
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("Too many failed sign-in attempts").is_visible()
    assert "/login" in page.url
    screenshot("login-locked")
