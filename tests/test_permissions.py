"""Route x role matrix: anonymous, specialist and admin against every route.

Built from the app's URL map, so a route added later is covered automatically:
public routes answer everyone, staff routes send anonymous users to sign in, and
/admin routes refuse specialists with 403.
"""

from __future__ import annotations

import pytest

PUBLIC_PREFIXES = (
    "/static",
    "/bootstrap/static",
    "/login",
    "/conditions",
    "/request",
    "/thank-you",
    "/webhooks",
    "/healthz",
)
ADMIN_PREFIXES = ("/admin", "/reports")


def classify(rule: str) -> str:
    if rule.startswith(PUBLIC_PREFIXES):
        return "public"
    if rule.startswith(ADMIN_PREFIXES):
        return "admin"
    return "staff"


def concrete(rule) -> str:
    url = rule.rule
    for arg in rule.arguments:
        conv = rule._converters[arg].__class__.__name__
        url = url.replace(f"<{arg}>", "x").replace(f"<{conv}:{arg}>", "1")
        url = url.replace(f"<int:{arg}>", "1").replace(f"<string:{arg}>", "x").replace(f"<path:{arg}>", "x")
    return url


def staff_rules(app):
    for rule in app.url_map.iter_rules():
        if classify(rule.rule) == "public" or rule.endpoint in ("static", "auth.logout"):
            continue  # logout would end the session mid-matrix; test_auth covers it
        methods = sorted(m for m in rule.methods if m in ("GET", "POST"))
        for method in methods:
            yield rule, method


def test_matrix_covers_routes(app):
    assert len(list(staff_rules(app))) >= 5


@pytest.mark.parametrize("role", ["anonymous", "specialist", "admin"])
def test_route_role_matrix(app, client, auth, specialist, admin, role):
    if role != "anonymous":
        auth.as_user(specialist if role == "specialist" else admin)
    failures = []
    for rule, method in staff_rules(app):
        url = concrete(rule)
        resp = client.open(url, method=method)
        kind = classify(rule.rule)
        if role == "anonymous":
            ok = resp.status_code in (302, 401) and (resp.status_code == 401 or "/login" in resp.headers["Location"])
        elif role == "specialist" and kind == "admin":
            ok = resp.status_code == 403
        else:
            ok = resp.status_code not in (401, 403, 500)
        if not ok:
            failures.append(f"{method} {url} as {role}: {resp.status_code}")
    assert not failures, "\n".join(failures)


def test_admin_home_forbidden_for_specialist(client, auth, specialist):
    auth.as_user(specialist)
    assert client.get("/admin/").status_code == 403


def test_admin_home_for_admin(client, auth, admin):
    auth.as_user(admin)
    resp = client.get("/admin/")
    assert resp.status_code == 200 and b"Admin" in resp.data
