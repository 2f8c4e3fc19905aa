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


def test_typing_keeps_the_session_and_an_idle_page_signs_itself_out(
    live_server, page, app, db, specialist, monkeypatch, screenshot
):
    """SPEC 12's automatic sign-out as a specialist meets it (idle limit shortened to 12 s): typing
    a note for longer than the limit is activity and the note is saved; left alone, the page
    warns, then goes to the sign-in page, which leads back to the lead."""
    from datetime import timedelta

    from tests.test_queue_helpers import make_lead

    # 12 s, not less: the warning shows for the last quarter of the limit, checked once a second,
    # and a loaded machine can skip a window of two ticks (this test failed under load at 8 s).
    monkeypatch.setitem(app.config, "IDLE_TIMEOUT", timedelta(seconds=12))
    monkeypatch.setitem(app.config, "PERMANENT_SESSION_LIFETIME", timedelta(seconds=60))  # outlives it, as by default
    lead = make_lead(db, assignee=specialist, first_name="Nora")
    page.goto(f"{live_server.url}/login?next=/leads/{lead.id}")
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/leads/{lead.id}")

    note = page.get_by_placeholder("Add a note for the team…")
    note.click()
    for word in "patient asked us to call back after her evening shift ends today".split():  # ~15 s of typing
        note.press_sequentially(word + " ")
        page.wait_for_timeout(1200)
    note.press("Control+Enter")  # sends the note, as the Add note button does
    page.wait_for_url(f"{live_server.url}/leads/{lead.id}**")
    assert page.get_by_text("patient asked us to call back after her evening shift ends today").first.is_visible()

    note.fill("started a second note")  # typed, never sent
    # A warning first, saying what is at stake. The typing above reports itself after up to a third
    # of the limit, and the warning starts at three quarters of it: up to 13 s from here.
    page.get_by_text("You will be signed out in").wait_for(timeout=30_000)
    assert page.get_by_text("what you typed and have not saved will be lost").is_visible()
    screenshot("idle-warning")
    page.wait_for_url(lambda url: "/login" in url, timeout=15_000)
    assert page.get_by_text("signed out after 1 minute without activity").is_visible()
    assert page.get_by_text("Nora").count() == 0  # the patient is no longer on screen
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/leads/{lead.id}")


def test_a_new_colleague_replaces_the_admins_password_at_first_sign_in(make_app, page, admin, db, screenshot):
    """An admin creates the account in the browser; the colleague signs in with that password and
    is asked for their own before the queue, then works with it."""
    from tests.conftest import LiveServer
    from tests.test_admin_browser import sign_in

    app = make_app(WTF_CSRF_ENABLED=True)  # as in production: every form carries its token
    server = LiveServer(app).start()
    try:
        base = server.url
        sign_in(page, base, admin)
        page.goto(f"{base}/admin/users/new")
        page.get_by_label("Email").fill("dana.new@example.com")
        page.get_by_label("Name").fill("Dana New")
        page.get_by_label("Temporary password").fill("given by the admin")
        page.get_by_role("button", name="Create user").click()
        page.wait_for_load_state()
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/login**")

        page.get_by_label("Email").fill("dana.new@example.com")
        page.get_by_label("Password").fill("given by the admin")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/account/password**")
        assert page.get_by_text("Choose one only you know before you go on").is_visible()
        screenshot("choose-own-password")
        page.goto(f"{base}/queue")  # no way around it
        page.wait_for_url(f"{base}/account/password**")
        page.get_by_label("Current password").fill("given by the admin")
        page.locator("#password").fill("dana's own secret")
        page.get_by_label("Repeat the new password").fill("dana's own secret")
        page.get_by_role("button", name="Change password").click()
        page.wait_for_url(f"{base}/queue**")
        assert page.get_by_role("heading", name="Lead queue").is_visible()
    finally:
        server.stop()


def test_a_second_sign_in_keeps_the_first_browser_and_an_ended_session_says_why(
    make_app, browser, page, admin, specialist, db, screenshot
):
    """The QA walkthrough: the admin's form open in browser A, a sign-in in browser B, Save in A.
    A used to land on the sign-in page told it had been idle, its change lost."""
    from tests.conftest import LiveServer
    from tests.test_admin_browser import sign_in

    app = make_app(WTF_CSRF_ENABLED=True)
    server = LiveServer(app).start()
    laptop = browser.new_context().new_page()
    try:
        base = server.url
        sign_in(page, base, admin)
        page.goto(f"{base}/admin/users/{specialist.id}")
        page.get_by_label("Capacity (open leads)").fill("33")
        sign_in(laptop, base, admin)
        page.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_url(f"{base}/admin/users/{specialist.id}")
        assert page.get_by_text("Saved Sam Specialist.").is_visible()

        laptop.goto(f"{base}/account/password")  # the password changed on the laptop ends browser A
        laptop.get_by_label("Current password").fill(PASSWORD)
        laptop.locator("#password").fill("the admin's new one")
        laptop.get_by_label("Repeat the new password").fill("the admin's new one")
        laptop.get_by_role("button", name="Change password").click()
        laptop.wait_for_url(f"{base}/queue**")
        page.get_by_label("Capacity (open leads)").fill("34")
        page.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_url(lambda url: "/login" in url)
        assert page.get_by_text("You were signed out: your password was changed or reset").is_visible()
        assert page.get_by_text("without activity").count() == 0
        screenshot("session-ended-elsewhere")
    finally:
        laptop.context.close()
        server.stop()


def test_promoting_a_user_to_admin_asks_first(make_app, page, admin, specialist, db):
    from crm.models import User
    from tests.conftest import LiveServer
    from tests.test_admin_browser import sign_in

    app = make_app(WTF_CSRF_ENABLED=True)
    server = LiveServer(app).start()
    try:
        base = server.url
        sign_in(page, base, admin)
        page.goto(f"{base}/admin/users/{specialist.id}")
        asked = []

        def answer(dialog, accept):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", lambda d: answer(d, False))
        page.get_by_role("button", name="Make admin").click()
        page.wait_for_timeout(300)
        db.session.expire_all()
        assert db.session.get(User, specialist.id).role == "specialist"  # cancelled: nothing sent
        page.once("dialog", lambda d: answer(d, True))
        page.get_by_role("button", name="Make admin").click()
        page.get_by_text("Sam Specialist is now admin.").wait_for()
        assert len(asked) == 2 and asked[0].startswith("Make Sam Specialist an admin?")
        db.session.expire_all()
        assert db.session.get(User, specialist.id).role == "admin"
    finally:
        server.stop()
