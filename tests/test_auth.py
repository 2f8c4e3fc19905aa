"""Sign-in, sessions, lockout and the security baseline (SPEC 12)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from crm.models import AuditLog, User
from tests.conftest import AuthActions
from tests.factories import PASSWORD, UserFactory


def audit_actions(db):
    return [a.action for a in db.session.scalars(sa.select(AuditLog).order_by(AuditLog.id))]


def test_login_page_renders(client):
    resp = client.get("/login")
    assert resp.status_code == 200
    assert b"Sign in" in resp.data
    # The cursor waits in the email field; after a refusal (the email kept), in the password field.
    page = resp.get_data(as_text=True)
    assert re.search(r'<input[^>]*autofocus[^>]*id="email"', page), page
    assert not re.search(r'<input[^>]*autofocus[^>]*id="password"', page)


def test_after_a_wrong_password_the_cursor_waits_in_the_password_field(client, auth, specialist):
    page = auth.login(password="not the password").get_data(as_text=True)
    assert re.search(r'<input[^>]*autofocus[^>]*id="password"', page), page
    assert not re.search(r'<input[^>]*autofocus[^>]*id="email"', page)


def test_login_success_redirects_to_queue_and_audits(client, auth, specialist, db):
    resp = auth.login()
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/queue")
    assert client.get("/queue").status_code == 200
    assert "login" in audit_actions(db)
    db.session.refresh(specialist)
    assert specialist.last_login_at is not None


def test_wrong_password_and_unknown_email_get_the_same_answer(client, auth, specialist, db):
    wrong = auth.login(password="not the password")
    unknown = auth.login(email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 200
    assert b"Invalid email or password." in wrong.data
    assert b"Invalid email or password." in unknown.data
    assert audit_actions(db).count("login_failed") == 2


def test_account_locks_after_repeated_failures(client, auth, specialist, db, app):
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        resp = auth.login(password="wrong password!")
    assert b"locked" in resp.data
    # The right password is refused while locked.
    resp = auth.login()
    assert resp.status_code == 200 and b"locked" in resp.data
    db.session.refresh(specialist)
    assert specialist.locked_until is not None
    assert "account_locked" in audit_actions(db)
    # After the lockout passes, the right password works again.
    with time_machine.travel(datetime.now(UTC) + app.config["LOGIN_LOCKOUT"] + timedelta(minutes=1)):
        assert auth.login().status_code == 302


def test_unknown_email_is_throttled_like_a_real_account(make_app, db):
    app = make_app(RATELIMIT_ENABLED=True)
    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        resp = client.post("/login", data={"email": "ghost@example.com", "password": "whatever123"})
    resp = client.post("/login", data={"email": "ghost@example.com", "password": "whatever123"})
    assert b"locked" in resp.data
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0  # when to come back


def test_login_rate_limited_per_ip(make_app, db):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
    client = app.test_client()
    codes = [
        client.post("/login", data={"email": f"u{i}@example.com", "password": "x" * 12}).status_code for i in range(4)
    ]
    assert codes[-1] == 429
    assert client.post("/login", data={"email": "a@example.com", "password": "x"}).headers.get("Retry-After")


def test_inactive_user_cannot_sign_in(client, auth, db):
    UserFactory(email="gone@example.com", active=False)
    db.session.commit()
    resp = auth.login(email="gone@example.com")
    assert resp.status_code == 200 and b"Invalid email or password." in resp.data


def test_logout_requires_post_and_kills_the_session_cookie(client, auth, specialist, db):
    auth.as_user(specialist)
    stolen = client.get_cookie("appointment_desk").value
    assert client.get("/logout").status_code == 405
    resp = auth.logout()
    assert resp.status_code == 302
    assert "logout" in audit_actions(db)
    # Replaying the cookie captured before logout gets the login page, not the queue.
    client.set_cookie("appointment_desk", stolen)
    resp = client.get("/queue")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_signing_out_ends_the_shift_so_no_lead_is_dealt_to_an_empty_desk(client, auth, specialist, db):
    specialist.on_shift = True
    db.session.commit()
    auth.as_user(specialist)
    resp = auth.logout()
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(type(specialist), specialist.id).on_shift is False
    assert "shift_end" in audit_actions(db)
    assert "You are signed out and your shift has ended." in client.get("/login").get_data(as_text=True)
    # Off shift already: the sign-out says nothing about a shift, and writes no shift entry.
    auth.as_user(specialist)
    auth.logout()
    assert audit_actions(db).count("shift_end") == 1


ENDED = "You were signed out: your password was changed or reset"
IDLE = "without activity"


def test_signing_in_on_a_second_device_keeps_the_first_session(app, client, auth, admin, specialist, db):
    """Signing in rotated the session token, so the admin's desk PC was signed out the moment they
    signed in on the laptop, and the form they then saved was lost under an idle message."""
    auth.as_user(admin)
    assert client.get(f"/admin/users/{specialist.id}").status_code == 200  # the form is open in browser A
    AuthActions(app.test_client()).as_user(admin)  # browser B
    saved = client.post(
        f"/admin/users/{specialist.id}",
        data={"name": "Sam Saved", "email": specialist.email, "capacity": "40", "languages": "en"}
        | {"timezone": "America/New_York"},
    )
    assert saved.status_code == 302 and "/login" not in saved.headers["Location"]
    db.session.expire_all()
    assert db.session.get(User, specialist.id).name == "Sam Saved"
    assert client.get("/queue").status_code == 200


def test_a_cookie_from_the_sign_in_answer_is_held_to_the_idle_limit(app, client, auth, specialist):
    """With no rotation at sign-in, a cookie copied from the sign-in answer and never used must not
    stay good for ever: the idle clock starts at sign-in."""
    auth.as_user(specialist)
    copied = client.get_cookie("appointment_desk").value
    other = app.test_client()
    other.set_cookie("appointment_desk", copied)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=16)):
        assert other.get("/queue").status_code == 302
    assert client.get("/queue").status_code == 200  # the copy's idleness is its own


def test_idleness_in_one_browser_does_not_end_the_other(app, client, auth, specialist, monkeypatch):
    """The idle sign-out rotated the token: the desk PC's next request ended the laptop's session."""
    monkeypatch.setitem(app.config, "PERMANENT_SESSION_LIFETIME", timedelta(hours=1))  # the server signs it out
    auth.as_user(specialist)
    laptop = app.test_client()
    AuthActions(laptop).as_user(specialist)
    start = datetime.now(UTC)
    for minutes in (10, 20):
        with time_machine.travel(start + timedelta(minutes=minutes)):
            assert laptop.get("/queue").status_code == 200
    with time_machine.travel(start + timedelta(minutes=21)):
        idle = client.get("/queue")  # the desk PC, untouched for 21 minutes
        assert idle.status_code == 302 and IDLE in client.get("/login").get_data(as_text=True)
        assert laptop.get("/queue").status_code == 200  # still signed in


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_session_ended_by_a_password_change_says_so_not_idleness(app, client, auth, specialist, db, method):
    auth.as_user(specialist)
    other = app.test_client()
    AuthActions(other).as_user(specialist)
    new = "a brand new password"
    assert (
        other.post("/account/password", data={"current": PASSWORD, "password": new, "confirm": new}).status_code == 302
    )
    resp = (
        client.get("/queue")
        if method == "GET"
        else client.post("/shift", headers={"Referer": "http://localhost/queue"})
    )
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    page = client.get("/login").get_data(as_text=True)
    assert ENDED in page and IDLE not in page and "Please sign in to continue" not in page
    assert ("was not saved" in page) == (method == "POST")
    assert ENDED not in client.get("/login").get_data(as_text=True)  # said once; the dead token is dropped
    assert client.get("/queue").status_code == 302


def test_sessions_ended_by_an_admins_reset_or_deactivation_say_so(app, client, auth, admin, specialist, db):
    from crm.services import users_admin

    theirs = app.test_client()
    for end in (
        lambda u: users_admin.reset_password(u, "reset by the admin", by=db.session.get(User, admin.id)),
        lambda u: users_admin.deactivate(u, by=db.session.get(User, admin.id)),
    ):
        AuthActions(theirs).as_user(specialist)
        end(db.session.get(User, specialist.id))
        db.session.commit()
        resp = theirs.post("/session/keepalive")
        assert resp.status_code == 401  # the page then opens itself (static/app.js)
        back = theirs.get("/queue")
        assert back.status_code == 302 and "/login" in back.headers["Location"]
        page = theirs.get("/login").get_data(as_text=True)
        assert ENDED in page and IDLE not in page
        user = db.session.get(User, specialist.id)
        users_admin.accounts.set_password(user, PASSWORD)  # for the next round
        user.must_change_password = False
        db.session.commit()


def test_signing_out_ends_the_accounts_other_sessions_and_they_are_told_why(app, client, auth, specialist):
    """Decided (docs/admin.md, "Sessions"): sessions live in the signed cookie, so a sign-out rotates
    the user's token to make a copied cookie useless, which ends their other browsers' sessions too."""
    auth.as_user(specialist)
    other = app.test_client()
    AuthActions(other).as_user(specialist)
    auth.logout()
    assert other.get("/queue").status_code == 302
    assert ENDED in other.get("/login").get_data(as_text=True)


def test_deactivation_ends_live_sessions(client, auth, specialist, db):
    from crm.services.accounts import deactivate

    auth.as_user(specialist)
    assert client.get("/queue").status_code == 200
    deactivate(db.session.get(User, specialist.id))
    db.session.commit()
    resp = client.get("/queue")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_idle_timeout_signs_out_after_15_minutes(client, auth, specialist):
    auth.as_user(specialist)
    assert client.get("/queue").status_code == 200
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=16)):
        resp = client.get("/queue")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert client.get("/queue").status_code == 302


def test_activity_keeps_the_session_alive(client, auth, specialist):
    auth.as_user(specialist)
    start = datetime.now(UTC)
    for minutes in (10, 20, 30):
        with time_machine.travel(start + timedelta(minutes=minutes)):
            assert client.get("/queue").status_code == 200


def test_page_activity_reported_by_keepalive_keeps_the_session(client, auth, specialist):
    """Typing in a page makes no request; app.js reports it to /session/keepalive, which counts."""
    auth.as_user(specialist)
    page = client.get("/queue")
    assert b'data-keepalive-url="/session/keepalive"' in page.data and b'data-idle-seconds="900"' in page.data
    start = datetime.now(UTC)
    for minutes in (10, 20):
        with time_machine.travel(start + timedelta(minutes=minutes)):
            assert client.post("/session/keepalive").status_code == 204
    with time_machine.travel(start + timedelta(minutes=30)):
        assert client.get("/queue").status_code == 200
    with time_machine.travel(start + timedelta(minutes=46)):
        resp = client.post("/session/keepalive")  # too late: signed out, and told so without a redirect
    assert resp.status_code == 401
    assert client.get("/queue").status_code == 302


def test_keepalive_needs_a_signed_in_user(client):
    resp = client.post("/session/keepalive")
    assert resp.status_code == 401
    assert b"data-keepalive-url" not in client.get("/login").data


@pytest.mark.parametrize("cookie_outlives_idle_limit", [False, True])
def test_form_posted_after_the_idle_limit_comes_back_to_its_page(
    client, auth, specialist, db, app, monkeypatch, cookie_outlives_idle_limit
):
    """Either the browser dropped the cookie (the default: it lasts as long as the idle limit) or
    it still sends it and the server signs the session out; both come back to the page."""
    from tests.test_queue_helpers import make_lead

    if cookie_outlives_idle_limit:
        monkeypatch.setitem(app.config, "PERMANENT_SESSION_LIFETIME", timedelta(hours=1))
    lead = make_lead(db, assignee=specialist)
    auth.as_user(specialist)
    client.get(f"/leads/{lead.id}")
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=16)):
        resp = client.post(
            f"/leads/{lead.id}/notes",
            data={"text": "called back"},
            headers={"Referer": f"http://localhost/leads/{lead.id}"},
        )
        assert resp.status_code == 302
        assert resp.headers["Location"].endswith(f"/login?next=/leads/{lead.id}")
        login_page = client.get(resp.headers["Location"]).get_data(as_text=True)
        assert "signed out after 15 minutes without activity" in login_page and "was not saved" in login_page
        signed_in = client.post(
            "/login", data={"email": specialist.email, "password": PASSWORD, "next": f"/leads/{lead.id}"}
        )
        assert signed_in.headers["Location"].endswith(f"/leads/{lead.id}")


def test_expired_session_form_post_goes_to_sign_in_not_a_dead_end(make_app, db, specialist):
    """The browser dropped the session cookie with the idle limit, so the form's token fails:
    a staff page sends the user to sign in (and back), not to a 400 page; the sign-in page and
    the public form keep their own handling."""
    from tests.test_queue_helpers import make_lead

    lead = make_lead(db)
    app = make_app(WTF_CSRF_ENABLED=True, IDLE_TIMEOUT=timedelta(minutes=30))
    client = app.test_client()
    resp = client.post(
        f"/leads/{lead.id}/notes", data={"text": "x"}, headers={"Referer": f"http://localhost/leads/{lead.id}?tab=2"}
    )
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith(f"/login?next=/leads/{lead.id}?tab%3D2")
    assert "signed out after 30 minutes without activity" in client.get("/login").get_data(as_text=True)
    evil = client.post(f"/leads/{lead.id}/notes", data={"text": "x"}, headers={"Referer": "https://evil.example.com/x"})
    assert evil.status_code == 302 and evil.headers["Location"].endswith("/login")
    assert client.post("/login", data={"email": specialist.email, "password": PASSWORD}).status_code == 400


def test_keepalive_needs_the_pages_csrf_token(make_app, db, specialist):
    import re

    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login).group(1)
    client.post("/login", data={"email": specialist.email, "password": PASSWORD, "csrf_token": token})
    page = client.get("/queue").get_data(as_text=True)
    page_token = re.search(r'data-csrf-token="([^"]+)"', page).group(1)
    assert client.post("/session/keepalive").status_code == 400  # another site cannot keep it alive
    assert client.post("/session/keepalive", headers={"X-CSRFToken": page_token}).status_code == 204


def test_the_way_back_after_sign_out_is_a_page_not_a_post_address(client, auth, db, specialist):
    """A lead page re-shown after a refused form sits at the form's address (POST only): its
    way back is the lead page the form was sent from."""
    import re

    from tests.test_queue_helpers import make_lead

    lead = make_lead(db, assignee=specialist)
    auth.as_user(specialist)
    assert f'data-return-url="/leads/{lead.id}"' in client.get(f"/leads/{lead.id}").get_data(as_text=True)
    refused = client.post(
        f"/leads/{lead.id}/calls",
        data={"version": str(lead.version)},
        headers={"Referer": f"http://localhost/leads/{lead.id}"},
    )
    assert refused.status_code == 422
    assert re.search(rf'data-return-url="/leads/{lead.id}"', refused.get_data(as_text=True))
    from_a_post_address = client.post(
        f"/leads/{lead.id}/calls",
        data={"version": str(lead.version)},
        headers={"Referer": f"http://localhost/leads/{lead.id}/calls"},
    )
    assert 'data-return-url="/queue"' in from_a_post_address.get_data(as_text=True)


def test_safe_next_redirects_only(client, specialist):
    ok = client.post("/login", data={"email": specialist.email, "password": PASSWORD, "next": "/queue?view=mine"})
    assert ok.headers["Location"].endswith("/queue?view=mine")
    client.post("/logout")
    for evil in ("https://evil.example.com/", "//evil.example.com/x", "/\\evil.example.com", "javascript:alert(1)"):
        resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD, "next": evil})
        assert resp.headers["Location"].endswith("/queue"), evil
        client.post("/logout")


def test_csrf_is_required_on_forms(make_app, db, specialist):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD})
    assert resp.status_code == 400 and b"form expired" in resp.data
    assert client.get("/queue").status_code == 302  # not signed in
    import re

    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD, "csrf_token": token.group(1)})
    assert resp.status_code == 302
    # Staff POST buttons (logout, shift) need the token too.
    assert client.post("/shift").status_code == 400


def test_security_headers_on_every_response(client, specialist, auth):
    for resp in (client.get("/login"), client.get("/no-such-page")):
        h = resp.headers
        assert "script-src 'self'" in h["Content-Security-Policy"]
        assert "unsafe-inline" not in h["Content-Security-Policy"].split("script-src")[1].split(";")[0]
        assert h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"]
        assert h["Strict-Transport-Security"].startswith("max-age=")


def test_session_cookie_flags(make_app, db, specialist):
    app = make_app(SESSION_COOKIE_SECURE=True)
    client = app.test_client()
    resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie


def test_no_inline_scripts_in_pages(client, auth, specialist):
    import re

    auth.as_user(specialist)
    for url in ("/login", "/queue"):
        html = client.get(url).get_data(as_text=True)
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag, tag
        assert "onclick=" not in html and "onload=" not in html


def test_error_pages_html_and_json(client):
    assert b"could not find" in client.get("/nothing-here").data
    resp = client.get("/api/nothing")
    assert resp.status_code == 404 and resp.is_json and "error" in resp.get_json()
    resp = client.get("/webhooks/nothing")
    assert resp.is_json


def test_shift_toggle(client, auth, specialist, db):
    auth.as_user(specialist)
    assert not specialist.on_shift
    client.post("/shift")
    db.session.refresh(specialist)
    assert specialist.on_shift
    assert "shift_start" in audit_actions(db)
    client.post("/shift")
    db.session.refresh(specialist)
    assert not specialist.on_shift


def test_signed_in_pages_are_not_cached_and_machine_endpoints_leave_the_session_alone(client, auth, specialist):
    auth.as_user(specialist)
    queue = client.get("/queue")
    assert queue.status_code == 200
    assert queue.headers["Cache-Control"] == "no-store"
    with client.session_transaction() as sess:
        seen = sess["last_seen"]
    # /healthz (and the webhook) never load the user: a probe is not activity that keeps a
    # session alive, and its answer holds no patient data.
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.headers.get("Cache-Control") != "no-store"
    with client.session_transaction() as sess:
        assert sess["last_seen"] == seen


def test_a_signed_in_session_with_no_activity_stamp_counts_as_idle(client, auth, specialist):
    """Sign-in stamps last_seen; a session cookie without one (from before that, or made up) has
    nothing to show it was active, and the token no longer rotates at the next sign-in."""
    auth.as_user(specialist)
    with client.session_transaction() as sess:
        del sess["last_seen"]
    resp = client.get("/queue")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert IDLE in client.get("/login").get_data(as_text=True)


def test_sign_in_goes_on_when_the_rate_limit_store_fails_mid_request(make_app, db, specialist, monkeypatch):
    from limits.errors import StorageError

    from crm.extensions import limiter

    app = make_app(RATELIMIT_ENABLED=True)
    strategy = type(limiter.limiter)

    def failing_for_the_email_throttle(original):
        def call(self, item, *identifiers, **kwargs):
            if "login-email" in identifiers:  # the per-IP limit before it was counted fine
                raise StorageError(ConnectionError("store went away"))
            return original(self, item, *identifiers, **kwargs)

        return call

    monkeypatch.setattr(strategy, "test", failing_for_the_email_throttle(strategy.test))
    monkeypatch.setattr(strategy, "hit", failing_for_the_email_throttle(strategy.hit))
    client = app.test_client()
    wrong = client.post("/login", data={"email": specialist.email, "password": "wrong password!"})
    assert wrong.status_code == 200 and b"Invalid email or password." in wrong.data
    db.session.refresh(specialist)
    assert specialist.failed_logins == 1  # the account lockout still counted it
    right = client.post("/login", data={"email": specialist.email, "password": PASSWORD})
    assert right.status_code == 302


def test_a_real_account_and_an_unknown_email_answer_alike_attempt_by_attempt(make_app, db, specialist):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="100 per minute")
    client = app.test_client()

    def answers(email):
        seen = []
        for _ in range(app.config["LOGIN_MAX_FAILURES"] + 2):
            resp = client.post("/login", data={"email": email, "password": "wrong password!"})
            seen.append((resp.status_code, b"locked" in resp.data, b"Invalid email or password." in resp.data))
        return seen

    real, unknown = answers(specialist.email), answers("nobody-here@example.com")
    assert real == unknown  # SPEC 12: lockout without revealing whether an email exists
    assert real[app.config["LOGIN_MAX_FAILURES"] - 1] == (200, True, False)  # locked on the last allowed failure


def test_every_refused_sign_in_costs_one_password_hash(client, auth, specialist, db, app, monkeypatch):
    """No answer comes back sooner than another (SPEC 12, no tell that an email exists): an unknown
    email is checked against a dummy hash, a deactivated or locked account against a hash too."""
    from crm.services import accounts

    checked = []
    real = accounts.verify_password
    monkeypatch.setattr(accounts, "verify_password", lambda h, p: checked.append(h) or real(h, p))
    UserFactory(email="gone@example.com", active=False)
    db.session.commit()
    attempts = {
        "unknown email": ("nobody@example.com", PASSWORD),
        "wrong password": (specialist.email, "wrong password!"),
        "deactivated, right password": ("gone@example.com", PASSWORD),
        "deactivated, wrong password": ("gone@example.com", "wrong password!"),
    }
    for what, (email, password) in attempts.items():
        checked.clear()
        resp = auth.login(email=email, password=password)
        assert resp.status_code == 200 and b"Invalid email or password." in resp.data, what
        assert len(checked) == 1, what
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        auth.login(password="wrong password!")
    checked.clear()
    assert b"locked" in auth.login().data
    assert len(checked) == 1, "locked account"


@pytest.mark.parametrize("minutes_apart", [0, 4, 20])
def test_failures_spread_over_time_answer_alike_for_a_real_account_and_an_unknown_email(
    make_app, db, specialist, minutes_apart
):
    """A real account's failures were counted on its user row and never forgotten, an unknown
    email's only for the throttle's window: five failures an hour apart locked the real account
    alone, which told that the email has one (SPEC 12). Both are counted alike now."""
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="100 per minute")
    client = app.test_client()
    start = datetime.now(UTC)

    def answers(email, offset):
        seen = []
        for i in range(app.config["LOGIN_MAX_FAILURES"] + 1):
            with time_machine.travel(start + offset + timedelta(minutes=minutes_apart * i)):
                resp = client.post("/login", data={"email": email, "password": "wrong password!"})
            seen.append((resp.status_code, b"locked" in resp.data))
        return seen

    real = answers(specialist.email, timedelta(0))
    unknown = answers("nobody-here@example.com", timedelta(0))
    assert real == unknown
    spread_out = (
        minutes_apart * (app.config["LOGIN_MAX_FAILURES"] - 1) > app.config["LOGIN_LOCKOUT"].total_seconds() / 60
    )
    assert any(locked for _, locked in real) is not spread_out


@pytest.mark.parametrize("minutes_apart", [20, 300])
def test_slow_guessing_under_the_short_limit_locks_the_email_for_a_day(make_app, db, specialist, minutes_apart):
    """Four failures every quarter of an hour never reached the short window's five: about 380
    guesses a day. The 24-hour count locks the email for 24 hours once it reaches
    LOGIN_DAILY_MAX_FAILURES, alike for a real account and an unknown email; failures spread over
    more than a day start a new count."""
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="100 per minute", LOGIN_DAILY_MAX_FAILURES=6)
    client = app.test_client()
    start = datetime.now(UTC)
    daily = app.config["LOGIN_DAILY_MAX_FAILURES"]

    def answers(email):
        seen = []
        for i in range(daily):
            with time_machine.travel(start + timedelta(minutes=minutes_apart * i)):
                resp = client.post("/login", data={"email": email, "password": "wrong password!"})
            locked, refused = b"locked for 24 hours" in resp.data, b"Invalid email or password." in resp.data
            seen.append((resp.status_code, locked, refused))
        return seen

    real = answers(specialist.email)
    unknown = answers("nobody-here@example.com")
    assert real == unknown  # SPEC 12: no answer tells which emails have accounts
    last_failure = start + timedelta(minutes=minutes_apart * (daily - 1))
    if minutes_apart * (daily - 1) > 24 * 60:
        assert real == [(200, False, True)] * daily  # the count started afresh: never locked
        return
    assert real == [(200, False, True)] * (daily - 1) + [(200, True, False)]
    # The right password is refused for the day; hammering on meets the per-email throttle, which
    # names the same 24 hours.
    with time_machine.travel(last_failure + timedelta(hours=1)):
        right = client.post("/login", data={"email": specialist.email, "password": PASSWORD})
        assert b"locked for 23 hours" in right.data
        codes = [
            client.post("/login", data={"email": specialist.email, "password": "wrong password!"})
            for _ in range(app.config["LOGIN_MAX_FAILURES"] + 1)
        ]
        assert codes[-1].status_code == 429 and b"locked for 23 hours" in codes[-1].data
    with time_machine.travel(last_failure + timedelta(hours=24, minutes=1)):
        assert client.post("/login", data={"email": specialist.email, "password": PASSWORD}).status_code == 302


def test_an_admins_password_reset_lifts_the_daily_lock(make_app, db, specialist, admin):
    app = make_app(LOGIN_MAX_FAILURES=2, LOGIN_DAILY_MAX_FAILURES=2)
    theirs, admins = app.test_client(), app.test_client()
    for _ in range(2):
        resp = theirs.post("/login", data={"email": specialist.email, "password": "wrong password!"})
    assert b"locked for 24 hours" in resp.data
    AuthActions(admins).as_user(admin)
    new = {"password": "a brand new password 1", "confirm": "a brand new password 1"}
    assert admins.post(f"/admin/users/{specialist.id}/password", data=new).status_code == 302
    resp = theirs.post("/login", data={"email": specialist.email, "password": "a brand new password 1"})
    assert resp.status_code == 302


def test_the_day_count_outlives_short_locks_and_the_owners_own_sign_in(make_app, db, specialist):
    """Neither a 15-minute lock nor the owner signing in starts the 24-hour count again: a sign-in
    clearing it would make the next failure's answer tell a real account from an unknown email."""
    app = make_app(LOGIN_DAILY_MAX_FAILURES=8)
    client = app.test_client()
    start = datetime.now(UTC)

    def answers(email, owner_signs_in):
        seen = []
        for i in range(app.config["LOGIN_MAX_FAILURES"]):  # fast: the last one locks for 15 minutes
            with time_machine.travel(start + timedelta(seconds=i)):
                seen.append(
                    b"locked for 15 minutes" in client.post("/login", data={"email": email, "password": "x" * 12}).data
                )
        later = start + app.config["LOGIN_LOCKOUT"] + timedelta(minutes=1)
        if owner_signs_in:
            with time_machine.travel(later):
                assert client.post("/login", data={"email": email, "password": PASSWORD}).status_code == 302
                client.post("/logout")
        for i in range(3):  # 5 + 3 = 8 within the day
            with time_machine.travel(later + timedelta(minutes=1 + i)):
                resp = client.post("/login", data={"email": email, "password": "x" * 12})
            seen.append(b"locked for 24 hours" in resp.data)
        return seen

    real = answers(specialist.email, owner_signs_in=True)
    assert real == [False] * 4 + [True] + [False, False, True]
    assert answers("nobody-at-all@example.com", owner_signs_in=False) == real


def test_the_failure_count_keeps_no_email_in_clear(client, auth, db):
    from crm.models import LoginThrottle

    auth.login(email="Someone.Typed@Example.com", password="wrong password!")
    keys = db.session.scalars(sa.select(LoginThrottle.key)).all()
    assert len(keys) == 1 and "someone" not in keys[0].lower() and len(keys[0]) == 64


def test_a_user_replaces_the_temporary_password_an_admin_gave_them(app, client, auth, specialist, db):
    """There was no way for anyone to change their own password: the admin who set a 'temporary'
    one knew it for good."""
    other = app.test_client()
    AuthActions(other).as_user(specialist, password=PASSWORD)  # signed in on another device too
    auth.as_user(specialist, password=PASSWORD)
    page = client.get("/queue").get_data(as_text=True)
    assert 'href="/account/password"' in page
    new = "only mine, 2026 edition"
    wrong = client.post("/account/password", data={"current": "not it at all", "password": new, "confirm": new})
    assert wrong.status_code == 200 and "not your current password" in wrong.get_data(as_text=True)
    differ = client.post("/account/password", data={"current": PASSWORD, "password": new, "confirm": new + "x"})
    assert "The two passwords differ" in differ.get_data(as_text=True)
    same = client.post("/account/password", data={"current": PASSWORD, "password": PASSWORD, "confirm": PASSWORD})
    html = same.get_data(as_text=True)
    at = html.index("Choose a password different from the current one.")
    assert html.index('name="password"') < at < html.index('name="confirm"')  # under New password, not Current
    short = client.post("/account/password", data={"current": PASSWORD, "password": "short", "confirm": "short"})
    assert "at least 10 characters" in short.get_data(as_text=True)
    done = client.post("/account/password", data={"current": PASSWORD, "password": new, "confirm": new})
    assert done.status_code == 302
    assert client.get("/queue").status_code == 200  # this session goes on
    gone = other.get("/queue")
    assert gone.status_code == 302 and "/login" in gone.headers["Location"]  # the other one ended
    assert "change_password" in audit_actions(db)
    client.post("/logout")
    assert auth.login(specialist.email, PASSWORD).status_code == 200  # the old one is refused
    assert auth.login(specialist.email, new).status_code == 302


def test_guessing_the_current_password_on_the_change_page_locks_the_account(app, client, auth, specialist, db):
    """Someone at an unattended desk could try passwords here without end (nothing was counted or
    audited), then change it and sign the owner out everywhere."""
    from crm.models import User

    auth.as_user(specialist, password=PASSWORD)
    new = "only mine, 2026 edition"
    limit = app.config["LOGIN_MAX_FAILURES"]
    for n in range(limit - 1):
        wrong = client.post("/account/password", data={"current": f"guess {n}", "password": new, "confirm": new})
        assert wrong.status_code == 200 and "not your current password" in wrong.get_data(as_text=True)
    assert audit_actions(db).count("change_password_failed") == limit - 1
    last = client.post("/account/password", data={"current": "one more guess", "password": new, "confirm": new})
    assert last.status_code == 302 and last.headers["Location"].endswith("/login")
    assert client.get("/queue").status_code == 302  # the session guessing is over
    db.session.expire_all()
    assert db.session.get(User, specialist.id).locked_until is not None
    assert "account_locked" in audit_actions(db)
    # Locked like a sign-in lock: the right password is refused until it ends.
    assert auth.login(specialist.email, PASSWORD).status_code == 200
