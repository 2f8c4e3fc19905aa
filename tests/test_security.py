"""The security baseline of SPEC 12 across routes: safe redirects, CSRF on every POST route,
security headers. (Sign-in, lockout and sessions: test_auth.py; route x role: test_permissions.py.)"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine

from tests.factories import PASSWORD

# Ways a "next" (or a Referer, or a page's own address) has been used to send people elsewhere.
EVIL_TARGETS = [
    "https://evil.example.com/",
    "http://evil.example.com",
    "//evil.example.com",
    "///evil.example.com",
    "/\\evil.example.com",
    "\\\\evil.example.com",
    "/\\/evil.example.com",
    "https:evil.example.com",
    "https:/evil.example.com",
    "javascript:alert(1)",
    " //evil.example.com",
    "\t//evil.example.com",
    "/\t/evil.example.com",
    "/\n/evil.example.com",
    "/\r\n/evil.example.com",
    "/\x00/evil.example.com",
    "/\x0b/evil.example.com",
    "/\u3000/evil.example.com",
    "//localhost@evil.example.com",
    "evil.example.com",
    "http://[::1",  # no URL at all: urlsplit raises on it
    "//[evil",
]


# What can travel in a Referer header (no line breaks or NUL).
EVIL_REFERERS = [t for t in EVIL_TARGETS if not re.search(r"[\r\n\x00]", t)]


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def sign_in_with_token(client, user) -> None:
    token = csrf_token(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302, resp.status_code


def where_a_browser_goes(target: str) -> str:
    """What a browser makes of a relative URL (WHATWG): tabs and newlines vanish, surrounding
    spaces and control characters are dropped, a backslash is a slash."""
    target = re.sub(r"[\t\n\r]", "", target).strip("\x00- ").replace("\\", "/")
    return urlsplit(target).netloc


def stays_here(target: str | None) -> bool:
    if not target:
        return True
    return target.startswith("/") and where_a_browser_goes(target) == ""


def login_next(location: str) -> str | None:
    """The ``next`` of a redirect to the sign-in page."""
    parts = urlsplit(location)
    assert parts.path == "/login", location
    return parse_qs(parts.query).get("next", [None])[0]


def return_url(page: str) -> str:
    found = re.search(r'data-return-url="([^"]*)"', page)
    assert found, "no data-return-url on the page"
    return html.unescape(found.group(1))


# --- safe redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", EVIL_TARGETS)
def test_safe_next_refuses_every_other_host(app, target):
    from crm.security import is_safe_next, safe_next

    with app.test_request_context("/"):
        assert not is_safe_next(target)
        assert safe_next(target) == "/queue"
        assert safe_next(target, "/leads/3") == "/leads/3"


def test_safe_next_keeps_our_own_pages(app):
    from crm.security import is_safe_next

    with app.test_request_context("/"):
        for ok in ("/queue", "/queue?view=mine&page=2", "/leads/7#notes", "/conditions/caf%C3%A9"):
            assert is_safe_next(ok), ok


def test_sign_in_goes_to_next_only_on_this_site(client, specialist):
    for target in EVIL_TARGETS:
        # The sign-in page keeps ?next= in its form; what is posted back is checked.
        client.get("/login", query_string={"next": target})
        resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD, "next": target})
        # (A form with control characters in it is refused before sign-in: crm/errors.py.)
        assert resp.status_code == 400 or resp.headers["Location"] == "/queue", repr(target)
        client.post("/logout")
    resp = client.post("/login", data={"email": specialist.email, "password": PASSWORD, "next": "/leads/4?tab=2"})
    assert resp.headers["Location"] == "/leads/4?tab=2"


def test_shift_toggle_goes_back_only_to_our_pages(client, auth, specialist):
    auth.as_user(specialist)
    for target in EVIL_TARGETS:
        resp = client.post("/shift", data={"next": target})
        assert resp.status_code == 400 or resp.headers["Location"] == "/queue", repr(target)
    for target in EVIL_REFERERS:
        resp = client.post("/shift", headers={"Referer": target})
        assert resp.headers["Location"] == "/queue", repr(target)
    # No next (the button on a page re-shown after a post): back to the page it was pressed on.
    resp = client.post("/shift", headers={"Referer": "http://localhost/queue?view=due"})
    assert resp.headers["Location"] == "/queue?view=due"
    resp = client.post("/shift", data={"next": "/queue?view=mine"}, headers={"Referer": "https://evil.example.com/"})
    assert resp.headers["Location"] == "/queue?view=mine"


def test_a_refused_sign_out_form_goes_back_only_to_our_pages(make_app, db, specialist):
    """With the global CSRF check off (WTF_CSRF_CHECK_DEFAULT=False) the sign-out form checks its
    own token: a refused one goes back to the page it came from, never to another site."""
    app = make_app(WTF_CSRF_ENABLED=True, WTF_CSRF_CHECK_DEFAULT=False)
    client = app.test_client()
    sign_in_with_token(client, specialist)
    assert client.get("/queue").status_code == 200
    for target in EVIL_REFERERS:
        resp = client.post("/logout", headers={"Referer": target})
        assert resp.headers["Location"] == "/queue", target
    resp = client.post("/logout", headers={"Referer": "http://localhost/queue?view=all"})
    assert resp.headers["Location"] == "/queue?view=all"
    assert client.get("/queue").status_code == 200  # still signed in


# Page addresses that, copied into a link back, would take a browser to another host.
EVIL_PATHS = ["/\\evil.example.com", "/%5Cevil.example.com", "/\\/evil.example.com", "/%09/evil.example.com"]
RAW_EVIL_PATHS = ["/\t/evil.example.com", "/\n/evil.example.com", "//evil.example.com", "/ /evil.example.com"]


def _open(client, path: str):
    if path in RAW_EVIL_PATHS:  # the test client would read "//host" as a host: set the path itself
        return client.get("/", environ_overrides={"PATH_INFO": path})
    return client.get(path)


@pytest.mark.parametrize("path", EVIL_PATHS + RAW_EVIL_PATHS)
def test_the_way_back_after_an_automatic_sign_out_stays_on_this_site(client, auth, specialist, path):
    """static/app.js leaves an idle page for its data-return-url; the shift button posts the
    page's address as next; an expired session sends the user to sign in with next= that page."""
    auth.as_user(specialist)
    page = _open(client, path).get_data(as_text=True)
    assert stays_here(return_url(page)), return_url(page)
    shift_next = re.search(r'name="next" value="([^"]*)"', page).group(1)
    assert stays_here(html.unescape(shift_next)), shift_next
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=16)):
        resp = _open(client, path)
    assert resp.status_code == 302
    assert stays_here(login_next(resp.headers["Location"]))
    # Signed out: the sign-in redirect for a staff page that needs it.
    resp = client.get("/queue?view=mine")
    assert login_next(resp.headers["Location"]) == "/queue?view=mine"


def test_the_way_back_keeps_the_pages_own_address(client, auth, specialist):
    auth.as_user(specialist)
    page = client.get("/queue?view=all&source=O%27Brien").get_data(as_text=True)
    assert return_url(page) == "/queue?view=all&source=O%27Brien"


def test_a_signed_out_form_post_from_another_site_gets_no_next(make_app, db, specialist):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    for referer in EVIL_REFERERS:
        resp = client.post("/leads/1/notes", data={"text": "x"}, headers={"Referer": referer})
        assert resp.status_code == 302
        assert stays_here(login_next(resp.headers["Location"])), referer


# --- CSRF on every POST route ---------------------------------------------------------------------

# Routes that take a POST without the session's CSRF token, and why. (The intake webhook is not a
# Flask route: it is answered in front of Flask, crm/intake/webhook.py; each delivery is signed with
# the source's secret instead, test_webhooks.py::test_csrf_is_not_required.)
CSRF_EXEMPT: dict[str, str] = {}


def test_every_post_route_refuses_a_request_without_its_csrf_token(make_app, db, admin):
    """Built from the URL map: a POST route added later is covered, and only the routes in
    CSRF_EXEMPT (each with its reason) may take a post without the token (SPEC 12)."""
    from crm.errors import CSRF_MESSAGE
    from tests.test_permissions import concrete

    app = make_app(WTF_CSRF_ENABLED=True)
    assert set(CSRF_EXEMPT) <= {r.endpoint for r in app.url_map.iter_rules()}, "a stale exemption"
    client = app.test_client()
    sign_in_with_token(client, admin)
    checked, failures = [], []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.endpoint in CSRF_EXEMPT:
            continue
        url = concrete(rule)
        resp = client.post(url, data={"anything": "1"})
        text = resp.get_data(as_text=True)
        # Staff and sign-in: the CSRF error; the public request form: itself again, with a notice.
        refused = resp.status_code == 400 and (CSRF_MESSAGE in text or "for your security" in text.lower())
        if not refused:
            failures.append(f"POST {url} ({rule.endpoint}): {resp.status_code}")
        checked.append(rule.endpoint)
    assert not failures, "\n".join(failures)
    assert {"auth.login", "auth.logout", "auth.keepalive", "intake.request_form"} <= set(checked)
    assert len(checked) >= 40, checked
    assert client.get("/queue").status_code == 200  # nothing above signed the admin out


def test_the_exempt_webhook_still_refuses_an_unsigned_post(make_app, db):
    from tests.factories import WebhookSourceFactory

    WebhookSourceFactory(slug="site")
    db.session.commit()
    client = make_app(WTF_CSRF_ENABLED=True).test_client()
    resp = client.post("/webhooks/intake/site", json={"first_name": "A"})
    assert resp.status_code == 401 and "error" in resp.get_json()


# --- security headers -----------------------------------------------------------------------------


def _assert_security_headers(resp, *, hsts: bool) -> None:
    h = resp.headers
    csp = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in h["Content-Security-Policy"].split(";")) if d}
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"], "no inline or eval'd scripts"
    assert csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"] and csp["form-action"] == ["'self'"]
    assert h["X-Frame-Options"] == "DENY"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "strict-origin-when-cross-origin"
    if hsts:
        assert h["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    else:
        assert "Strict-Transport-Security" not in h


def test_security_headers_on_staff_public_and_machine_responses(client, auth, specialist, db):
    from tests.factories import ConditionFactory

    ConditionFactory(slug="dystonia", name="Dystonia")
    db.session.commit()
    public = {url: client.get(url) for url in ("/conditions", "/conditions/dystonia", "/request", "/login")}
    webhook = client.post("/webhooks/intake/no-such-source", json={})
    auth.as_user(specialist)
    staff = {url: client.get(url) for url in ("/queue", "/queue?view=all")}
    for url, resp in {**public, **staff, "webhook": webhook}.items():
        assert resp.status_code in (200, 404), (url, resp.status_code)
        _assert_security_headers(resp, hsts=True)
    assert all(r.headers["Cache-Control"] == "no-store" for r in staff.values())  # patient data
    assert public["/conditions"].headers.get("Cache-Control") != "no-store"  # no form on it


def test_the_request_form_is_never_cached_least_of_all_re_shown_with_what_was_typed(client, db):
    from tests.factories import ConditionFactory

    ConditionFactory(slug="dystonia", name="Dystonia")
    db.session.commit()
    typed = {"first_name": "Quillon", "last_name": "Vexmarten", "email": "qv@example.com", "message": "tremor at night"}
    for url in ("/request", "/conditions/dystonia"):
        assert client.get(url).headers["Cache-Control"] == "no-store"
        refused = client.post(url, data=typed)  # no ZIP, no consent: the form again, values kept
        assert refused.status_code == 200 and "Vexmarten" in refused.get_data(as_text=True)
        assert refused.headers["Cache-Control"] == "no-store", url


def test_hsts_is_left_out_of_the_debug_server(make_app, db):
    """The dev server speaks plain http on 127.0.0.1: HSTS there would pin localhost to https."""
    client = make_app(DEBUG=True).test_client()
    _assert_security_headers(client.get("/login"), hsts=False)


def test_a_referer_that_is_no_url_never_makes_a_500(client, auth, db, specialist):
    """A page shown again after a refused post links back through the Referer; the public form
    asks where a post came from through the Origin: "http://[::1" makes urlsplit raise."""
    from tests.test_queue_helpers import make_lead

    lead = make_lead(db, assignee=specialist)
    auth.as_user(specialist)
    resp = client.post(f"/leads/{lead.id}/notes", data={"version": str(lead.version), "text": ""},
                       headers={"Referer": "http://[::1"})  # fmt: skip
    assert resp.status_code == 422
    assert client.post("/shift", headers={"Referer": "http://[::1"}).status_code == 302


def test_a_way_back_address_never_carries_the_patient_search(client, auth, db, specialist):
    """After an automatic sign-out the sign-in page's address showed the searched patient's name
    (and the browser kept it in its history) on a screen nobody was watching."""
    resp = client.get("/queue?view=all&q=Zorblat+Quixenhoff&status=new")
    assert resp.status_code == 302
    assert "Zorblat" not in resp.headers["Location"] and "status%3Dnew" in resp.headers["Location"]
    auth.as_user(specialist)
    page = client.get("/queue?view=all&q=Zorblat+Quixenhoff&state=FL").get_data(as_text=True)
    assert return_url(page) == "/queue?view=all&state=FL"


# A JSON body on a page's form: Flask-WTF read it as the form's fields, and anything but an object of
# strings failed inside the form (a 500). No page takes JSON (the webhook is answered before Flask).
JSON_BODIES = ["[1]", "5", '"x"', "{", '{"version": 1, "text": 5}', '{"version": 1, "text": {"a": 1}}']


@pytest.mark.parametrize("body", JSON_BODIES)
def test_a_json_body_on_a_form_is_refused_with_415_not_a_500(client, auth, db, specialist, body):
    from crm.models import LeadEvent
    from crm.models.enums import EventKind
    from tests.test_queue_helpers import make_lead

    lead = make_lead(db, assignee=specialist)
    for path in ("/request", "/conditions/dystonia", "/login"):
        resp = client.post(path, data=body, content_type="application/json")
        assert resp.status_code == 415, (path, resp.status_code)
        assert "not JSON" in resp.get_data(as_text=True)
    auth.as_user(specialist)
    resp = client.post(
        f"/leads/{lead.id}/notes", data=body, content_type="application/json", headers={"Accept": "application/json"}
    )
    assert resp.status_code == 415 and "not JSON" in resp.get_json()["error"]
    assert not [e for e in lead.events if e.kind == EventKind.NOTE]
    assert db.session.query(LeadEvent).filter_by(kind=EventKind.NOTE).count() == 0


def test_a_json_body_is_refused_before_the_csrf_check_reads_it(make_app, db):
    client = make_app(WTF_CSRF_ENABLED=True).test_client()
    for body in ("[1]", "{"):
        resp = client.post("/request", data=body, content_type="application/json")
        assert resp.status_code == 415, resp.status_code
    # A form as browsers send it is still answered by the CSRF check (expired form, kept input).
    assert client.post("/request", data={"first_name": "Ann"}).status_code in (200, 400)
