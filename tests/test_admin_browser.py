"""Playwright in Debian's Chromium: an admin imports physicians from a CSV through the dry-run preview."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from tests.conftest import LiveServer
from tests.factories import (
    PASSWORD,
    ConditionFactory,
    PhysicianFactory,
    StateProgramFactory,
    WebhookSourceFactory,
    valid_npi,
)
from tests.test_physician_csv import row, to_csv

pytestmark = pytest.mark.browser


def sign_in(page, base, user):
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/queue**")


def test_admin_imports_csv_with_preview_and_finds_the_physician(make_app, page, admin, db, screenshot, tmp_path):
    # CSRF on, as in production: every form on the way must carry its token.
    app = make_app(WTF_CSRF_ENABLED=True, UPLOAD_FOLDER=str(tmp_path / "uploads"))
    live_server = LiveServer(app).start()
    try:
        ConditionFactory(slug="dystonia", name="Dystonia")
        PhysicianFactory(npi=valid_npi(900), first_name="Rosa", last_name="Alvarez", practice_name="Bayfront Clinic")
        soon = PhysicianFactory(first_name="Ida", last_name="Expiring", city="Orlando")
        soon.registrations[0].expires_on = date.today() + timedelta(days=9)
        PhysicianFactory.create_batch(4)
        db.session.commit()
        csv_file = tmp_path / "new-doctors.csv"
        csv_file.write_bytes(
            to_csv(
                [
                    row(accepting_new="false"),  # update
                    row(
                        npi=valid_npi(951),
                        first_name="Wendell",
                        last_name="Okafor",
                        city="Tampa",
                        conditions="dystonia",
                    ),
                    row(npi=valid_npi(952), first_name="Mei", last_name="Lindqvist", offers_telehealth="true"),
                    row(npi="1234567890", last_name="Typo"),  # bad check digit
                    row(npi=valid_npi(953), last_name="Nowhere", state="XX"),
                ]
            )
        )
        sign_in(page, live_server.url, admin)
        page.goto(f"{live_server.url}/admin/physicians")
        assert page.get_by_text("Registrations need attention").is_visible()
        page.get_by_role("link", name="Import CSV").click()
        page.get_by_label("CSV file").set_input_files(str(csv_file))
        page.get_by_role("button", name="Check the file").click()
        page.get_by_role("heading", name="Import preview").wait_for()
        errors = page.locator("table.import-errors")
        assert errors.get_by_text("fails the check digit").is_visible()
        assert errors.get_by_text("Unknown state code").is_visible()
        changes = page.locator("table.import-changes")
        assert changes.get_by_text("Okafor").is_visible() and changes.get_by_text("accepting new").is_visible()
        screenshot("admin-import-preview")

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Import 3 changes").click()
        page.get_by_role("heading", name="Import finished").wait_for()
        assert page.get_by_text("2 created, 1 updated, 0 unchanged, 2 line(s) with errors").first.is_visible()
        screenshot("admin-import-finished")

        page.get_by_role("link", name="Back to physicians").click()
        page.get_by_label("Search name, NPI, city, practice, ZIP, phone or email").fill("Okafor")
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("link", name="Okafor, Wendell").click()
        page.get_by_role("heading", name="Wendell Okafor, MD").wait_for()
        assert page.get_by_label("Dystonia").is_checked()
        screenshot("admin-physician-edit")

        page.goto(f"{live_server.url}/admin/physicians")
        screenshot("admin-physicians-list")
    finally:
        live_server.stop()


def test_admin_pages_render(live_server, page, admin, specialist, db, screenshot):
    """Look at every admin page once (screenshots in tests/artifacts/)."""
    cond = ConditionFactory(name="Dystonia", slug="dystonia", body="## About\n\nMuscles contract **involuntarily**.")
    fl = StateProgramFactory(registry_url="https://example.com/fl")
    fl.qualifying_conditions = [cond]
    StateProgramFactory(state="ID", name="Idaho", program_type="none", telehealth_allowed=False, reviewed_on=None)
    doc = PhysicianFactory(first_name="Rosa", last_name="Alvarez", registered_in=["FL", "GA"], offers_telehealth=True)
    PhysicianFactory.create_batch(3)
    src = WebhookSourceFactory(
        name="WordPress condition pages", slug="wordpress", field_mapping={"email": "contact.email"}
    )
    db.session.commit()
    sign_in(page, live_server.url, admin)
    for name, path, heading in [
        ("admin-states", "/admin/states", "State programs"),
        ("admin-state-edit", "/admin/states/FL/edit", "Florida (FL)"),
        ("admin-conditions", "/admin/conditions", "Conditions"),
        ("admin-condition-edit", f"/admin/conditions/{cond.id}/edit", "Dystonia"),
        ("admin-users", "/admin/users", "Users"),
        ("admin-user-edit", f"/admin/users/{specialist.id}", specialist.name),
        ("admin-audit", "/admin/audit", "Audit log"),
        ("directory-list", "/physicians", "Physicians"),
        ("directory-detail", f"/physicians/{doc.id}", doc.full_name),
        ("admin-physician-new", "/admin/physicians/new", "New physician"),
        ("admin-import-form", "/admin/physicians/import", "Import physicians from CSV"),
        ("admin-sources", "/admin/sources", "Webhook sources"),
        ("admin-source-detail", f"/admin/sources/{src.id}", "WordPress condition pages"),
    ]:
        page.goto(live_server.url + path)
        assert page.get_by_role("heading", name=heading, exact=True).is_visible(), path
        screenshot(name)

    # The test delivery from the source page shows its result.
    page.goto(f"{live_server.url}/admin/sources/{src.id}")
    page.get_by_role("button", name="Send test delivery").click()
    page.locator(".test-result").wait_for()
    screenshot("admin-source-test-delivery")


def test_add_a_row_lets_an_admin_enter_several_registrations_in_one_save(live_server, page, admin, db, screenshot):
    """The form had one empty row (two for a new physician), so a physician licensed in eight
    states needed a save per state."""
    from crm.models import Physician

    doc = PhysicianFactory(first_name="Ines", last_name="Okoro", state="FL", zip="33101", registered_in=["FL"])
    db.session.commit()
    sign_in(page, live_server.url, admin)
    page.goto(f"{live_server.url}/admin/physicians/{doc.id}/edit")
    page.get_by_role("button", name="Add a row").click()
    page.get_by_role("button", name="Add a row").click()
    rows = page.locator("#registrations-table tbody tr")
    assert rows.count() == 4  # FL, the empty row, two added
    for i, state in enumerate(["GA", "NY", "TX"], start=1):
        page.locator(f"select[name='registrations-{i}-state']").select_option(state)
        page.locator(f"input[name='registrations-{i}-number']").fill(f"{state}-{1000 + i}")
        page.locator(f"input[name='registrations-{i}-expires_on']").fill("2031-06-30")
    screenshot("admin-physician-registrations-added")
    page.get_by_role("button", name=re.compile("^Save")).first.click()
    page.wait_for_load_state()
    db.session.expire_all()
    saved = db.session.get(Physician, doc.id)
    assert sorted(r.state for r in saved.registrations) == ["FL", "GA", "NY", "TX"]
    assert {r.number for r in saved.registrations if r.state == "TX"} == {"TX-1003"}
