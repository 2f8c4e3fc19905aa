"""/admin/physicians, the CSV upload flow, expiry warnings and the specialists' /physicians directory."""

from __future__ import annotations

import csv
import html
import io
import re
import sys
import types
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from crm.models import AuditLog, Notification, Physician, Registration
from crm.services import directory, physician_csv
from tests.factories import ConditionFactory, PhysicianFactory, UserFactory, committed_meanwhile, valid_npi
from tests.test_geocoding import fake_online  # noqa: F401 - a fixture used below
from tests.test_physician_csv import row, to_csv

TODAY = date.today()


@pytest.fixture
def fake_geocoder(monkeypatch):
    """Stand-in for crm.services.geocoding (another helper's module): records calls."""
    calls = []
    fake = types.ModuleType("crm.services.geocoding")

    def geocode_physician(p, *args, **kwargs):
        calls.append(p.zip)
        p.latitude, p.longitude, p.geocode_precision, p.geocode_status = 27.95, -82.46, "zip", "ok"
        return True

    fake.geocode_physician = geocode_physician
    monkeypatch.setitem(sys.modules, "crm.services.geocoding", fake)
    return calls


def form_data(**overrides):
    data = {
        "npi": valid_npi(500),
        "first_name": "Nora",
        "last_name": "Quinn",
        "credential": "DO",
        "practice_name": "Quinn Family Medicine",
        "street": "1 Bay St",
        "city": "Tampa",
        "state": "FL",
        "zip": "33602",
        "phone": "813-555-0142",
        "email": "nora@example.com",
        "website": "",
        "offers_in_person": "y",
        "accepting_new": "y",
        "languages": "en; es",
        "priority": "2",
        "weekly_capacity": "12",
        "latitude": "",
        "longitude": "",
        "notes": "",
        "registrations-0-state": "FL",
        "registrations-0-number": "FL-777",
        "registrations-0-expires_on": (TODAY + timedelta(days=200)).isoformat(),
        "registrations-1-state": "",
        "registrations-1-number": "",
        "registrations-1-expires_on": "",
    }
    data.update(overrides)
    return data


def test_specialist_cannot_use_admin_physicians(client, auth, specialist):
    auth.as_user(specialist)
    for url in (
        "/admin/physicians",
        "/admin/physicians/new",
        "/admin/physicians/import",
        "/admin/physicians/export.csv",
    ):
        assert client.get(url).status_code == 403, url
    assert client.post("/admin/physicians/import/commit", data={"token": "x" * 30}).status_code == 403


def test_create_geocodes_and_audits(client, auth, admin, db, fake_geocoder):
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data())
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    doc = db.session.scalar(sa.select(Physician))
    assert doc.phone == "+18135550142" and doc.languages == ["en", "es"] and doc.credential == "DO"
    assert [(r.state, r.number) for r in doc.registrations] == [("FL", "FL-777")]
    assert fake_geocoder == ["33602"] and doc.latitude == 27.95
    assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "create_physician")).object_id == str(doc.id)


def test_create_geocodes_with_the_real_offline_geocoder(client, auth, admin, db):
    """No stand-in: the shipped ZIP dataset locates the new physician on save."""
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data())
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    doc = db.session.scalar(sa.select(Physician))
    assert doc.geocode_status == "ok" and doc.geocode_precision == "zip"
    assert doc.latitude == pytest.approx(27.95, abs=0.1) and doc.longitude == pytest.approx(-82.46, abs=0.1)
    assert doc.timezone == "America/New_York"


def test_an_address_placed_only_in_its_state_is_saved_unlocated_with_a_warning(client, auth, admin, db):
    """ZIP 00000 is in no dataset: the state's centre is no practice location, so the admin is told to
    check the ZIP and the physician gets no in-person distance until it is fixed."""
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data(zip="00000", street="", city=""), follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert "The address could only be placed somewhere in FL (is the ZIP right?)" in page
    doc = db.session.scalar(sa.select(Physician))
    assert doc.latitude is None and doc.geocode_status == "failed"


def test_explicit_coordinates_skip_geocoding(client, auth, admin, db, fake_geocoder):
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data(latitude="28.5383", longitude="-81.3792"))
    assert resp.status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    assert fake_geocoder == [] and doc.latitude == pytest.approx(28.5383) and doc.timezone == "America/New_York"


def test_address_change_geocodes_again(client, auth, admin, db, fake_geocoder):
    doc = PhysicianFactory(zip="33101")
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/physicians/{doc.id}/edit")
    assert page.status_code == 200 and b"FL-1" in page.data
    data = form_data(
        npi=doc.npi,
        first_name=doc.first_name,
        last_name=doc.last_name,
        zip="33602",
        latitude=f"{doc.latitude:.6f}",
        longitude=f"{doc.longitude:.6f}",
    )
    assert client.post(f"/admin/physicians/{doc.id}/edit", data=data).status_code == 302
    assert fake_geocoder == ["33602"]
    # Same address, coordinates emptied: locate it again.
    data.update(latitude="", longitude="")
    resp = client.post(f"/admin/physicians/{doc.id}/edit", data=data, follow_redirects=True)
    assert fake_geocoder == ["33602", "33602"] and "Located at" in resp.get_data(as_text=True)
    # Nothing changed at all: no geocoding, and the page says so.
    data.update(latitude="27.950000", longitude="-82.460000")
    resp = client.post(f"/admin/physicians/{doc.id}/edit", data=data, follow_redirects=True)
    assert fake_geocoder == ["33602", "33602"] and "Nothing changed" in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("npi", "1234567890", "check digit"),
        ("npi", "12345", "10 digits"),
        # Other scripts' digits pass str.isdigit(): refused (a ZIP in them was stored and never geocoded).
        ("npi", valid_npi(500).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")), "10 digits"),
        ("zip", "٣٣٦٠٢", "5-digit ZIP"),
        # Tampa's ZIP with Georgia: it would be located in Florida while listed and filtered as Georgia.
        ("state", "GA", "ZIP 33602 is in FL, not GA"),
        ("zip", "ABCDE", "5-digit ZIP"),
        ("zip", "", "Enter a ZIP code (or latitude and longitude)"),
        ("state", "XX", "Not a valid choice"),
        ("email", "nope", "email"),
        ("phone", "555", "phone number"),
        ("latitude", "28.1", "both latitude and longitude"),
        ("registrations-0-expires_on", "", "expiry date"),
        ("website", "https://example.com/" + "a" * 290, "longer than 300 characters"),
        ("registrations-0-number", "FL-1;2", "cannot contain &#39;;&#39;"),
    ],
)
def test_validation_errors_keep_input(client, auth, admin, db, field, value, message):
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data(**{field: value}))
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert message.lower() in body.lower()
    assert "Not saved" not in body  # caught by the form, next to the field
    assert "Quinn Family Medicine" in body  # nothing typed is lost
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0


def test_duplicate_npi_is_refused(client, auth, admin, db):
    other = PhysicianFactory(npi=valid_npi(500))
    db.session.commit()
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data())
    assert resp.status_code == 200 and f"already belongs to {other.full_name}" in resp.get_data(as_text=True)


def test_registrations_edited_inline(client, auth, admin, db, fake_geocoder):
    doc = PhysicianFactory(registered_in=["FL", "GA"])
    db.session.commit()
    auth.as_user(admin)
    later = (TODAY + timedelta(days=400)).isoformat()
    data = form_data(
        npi=doc.npi,
        last_name=doc.last_name,
        zip=doc.zip,
        latitude=f"{doc.latitude:.6f}",
        longitude=f"{doc.longitude:.6f}",
        **{
            "registrations-0-state": "FL",
            "registrations-0-number": "FL-NEW",
            "registrations-0-expires_on": later,
            "registrations-1-state": "GA",
            "registrations-1-number": "GA-1",
            "registrations-1-expires_on": later,
            "registrations-1-remove": "y",
            "registrations-2-state": "NY",
            "registrations-2-number": "NY-5",
            "registrations-2-expires_on": later,
        },
    )
    assert client.post(f"/admin/physicians/{doc.id}/edit", data=data).status_code == 302
    db.session.expire_all()
    regs = {r.state: r.number for r in db.session.get(Physician, doc.id).registrations}
    assert regs == {"FL": "FL-NEW", "NY": "NY-5"}
    dup = dict(data, **{"registrations-2-state": "FL"})
    resp = client.post(f"/admin/physicians/{doc.id}/edit", data=dup)
    assert resp.status_code == 200 and "FL is listed twice" in resp.get_data(as_text=True)


def test_a_registration_row_with_a_bad_date_shows_its_error_in_the_row_and_no_empty_alert(client, auth, admin, db):
    auth.as_user(admin)
    data = form_data(**{"registrations-0-expires_on": "99999-01-01"})
    body = client.post("/admin/physicians/new", data=data).get_data(as_text=True)
    registrations = body.split("State registrations", 1)[1].split("</table>", 1)[0]
    assert "table-danger" in registrations and "Not a valid date value" in registrations
    assert not re.search(r'<div class="alert alert-danger[^"]*">\s*</div>', body)  # the empty red bar
    assert "alert-danger" not in registrations.split("<table", 1)[0]
    # A row-level message (from the form's own check) is still shown above the table.
    data = form_data(**{"registrations-0-expires_on": "", "registrations-0-number": "FL-9"})
    body = client.post("/admin/physicians/new", data=data).get_data(as_text=True)
    assert re.search(r'<div class="alert alert-danger[^"]*">Check the highlighted registration rows.</div>', body)


def test_invisible_characters_in_physician_names_are_dropped_and_control_characters_refused(client, auth, admin, db):
    auth.as_user(admin)
    data = form_data(first_name="\u202eevil\u200b", last_name="Qu\u2066inn\u2069", practice_name="\ufeffCare\u200e")
    assert client.post("/admin/physicians/new", data=data).status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    assert (doc.first_name, doc.last_name, doc.practice_name) == ("evil", "Quinn", "Care")
    listing = client.get("/admin/physicians").get_data(as_text=True)
    assert "Quinn, evil" in listing and "\u202e" not in listing
    # Nothing but invisible characters is no name; a tab or a C1 control is refused on the field.
    for first, message in (("\u200b\u202e", "This field is required"), ("Ann\tMarie", "First name contains a control")):
        resp = client.post("/admin/physicians/new", data=form_data(npi=valid_npi(501), first_name=first))
        assert resp.status_code == 200 and message in resp.get_data(as_text=True), first
    resp = client.post("/admin/physicians/new", data=form_data(npi=valid_npi(501), last_name="Quinn\x85"))
    assert resp.status_code == 200 and "Last name contains a control character" in resp.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 1


def test_invisible_characters_in_imported_physician_names_are_dropped(db):
    from crm.services import physician_csv

    physician_csv.import_csv(to_csv([row(first_name="\u202eAna\u200b", last_name="Ruiz\u2069")]))
    doc = db.session.scalar(sa.select(Physician))
    assert (doc.first_name, doc.last_name) == ("Ana", "Ruiz")


def test_deactivate_never_deletes(client, auth, admin, db):
    doc = PhysicianFactory()
    db.session.commit()
    auth.as_user(admin)
    assert client.post(f"/admin/physicians/{doc.id}/deactivate").status_code == 302
    db.session.expire_all()
    assert db.session.get(Physician, doc.id).active is False
    listing = client.get("/admin/physicians").get_data(as_text=True)
    assert f"{doc.last_name}, {doc.first_name}" not in listing  # default filter: active
    assert f"{doc.last_name}, {doc.first_name}" in client.get("/admin/physicians?active=no").get_data(as_text=True)
    assert client.post(f"/admin/physicians/{doc.id}/reactivate").status_code == 302
    db.session.expire_all()
    assert db.session.get(Physician, doc.id).active is True
    actions = set(db.session.scalars(sa.select(AuditLog.action)))
    assert {"deactivate_physician", "reactivate_physician"} <= actions


def test_list_search_filters_and_expiry_banner(client, auth, admin, db):
    tele = PhysicianFactory(last_name="Telly", offers_telehealth=True, city="Orlando")
    PhysicianFactory(last_name="Georgian", state="GA", city="Atlanta", registered_in=["GA"])
    soon = PhysicianFactory(last_name="Soonexp")
    soon.registrations[0].expires_on = TODAY + timedelta(days=10)
    gone = PhysicianFactory(last_name="Gonexp")
    gone.registrations[0].expires_on = TODAY - timedelta(days=3)
    db.session.commit()
    auth.as_user(admin)
    body = client.get("/admin/physicians").get_data(as_text=True)
    assert "Registrations need attention" in body and "1 expired" in body and "1 expires within 30 days" in body
    assert "reg-expired" in body and "reg-expiring" in body

    def names(query):
        html = client.get("/admin/physicians?" + query).get_data(as_text=True)
        return {n for n in ("Telly", "Georgian", "Soonexp", "Gonexp") if f"{n}, Dana</a>" in html}

    assert names("telehealth=yes") == {"Telly"}
    assert names("state=GA") == {"Georgian"}
    assert names("q=orlando") == {"Telly"}
    assert names(f"q={tele.npi}") == {"Telly"}
    # The office calls, or writes: found by phone as people type it, or by email.
    tele.phone, tele.email = "+13055550188", "front.desk@telly-clinic.example"
    db.session.commit()
    for query in ("(305) 555-0188", "305.555.0188", "+1 305 555 0188", "3055550188", "555-0188", "front.desk@telly"):
        assert names("q=" + quote(query)) == {"Telly"}, query
    assert names("expiring=soon") == {"Soonexp"}
    assert names("expiring=expired") == {"Gonexp"}
    assert names("expiring=any") == {"Soonexp", "Gonexp"}
    assert names("located=no") == set() and "not located yet" not in body
    tele.geocode_status = "failed"
    db.session.commit()
    assert names("located=no") == {"Telly"}
    assert "not located yet" in client.get("/admin/physicians").get_data(as_text=True)
    assert client.get("/admin/physicians?state=ZZ&active=maybe&page=abc").status_code == 200


def test_search_takes_percent_underscore_and_slash_as_typed_not_as_wildcards(client, auth, admin, specialist, db):
    PhysicianFactory(last_name="Plain", practice_name="Care Point Clinic")
    PhysicianFactory(last_name="Under", practice_name="Care_Point Clinic")
    PhysicianFactory(last_name="Percent", practice_name="100% Wellness")
    PhysicianFactory(last_name="Slash", practice_name="A/B Health")
    db.session.commit()
    auth.as_user(admin)

    def names(url, query):
        html = client.get(url + "?q=" + quote(query)).get_data(as_text=True)
        return {n for n in ("Plain", "Under", "Percent", "Slash") if f"{n}, Dana" in html}

    for url in ("/admin/physicians", "/physicians"):
        assert names(url, "%") == {"Percent"}, url  # every physician before
        assert names(url, "_") == {"Under"}, url
        assert names(url, "100%") == {"Percent"}, url
        assert names(url, "care_point") == {"Under"}, url  # not "Care Point" too
        assert names(url, "/") == {"Slash"}, url  # the escape character is escaped as well
        assert names(url, "care point") == {"Plain"}, url
    auth.logout()
    auth.as_user(specialist)
    assert names("/physicians", "%") == {"Percent"}


def test_list_paginates(client, auth, admin, db):
    PhysicianFactory.create_batch(55)
    db.session.commit()
    auth.as_user(admin)
    assert "Page 1 of 2" in client.get("/admin/physicians").get_data(as_text=True)
    assert client.get("/admin/physicians?page=2").status_code == 200


def test_upload_preview_then_commit(client, auth, admin, db, app, tmp_path):
    app.config["UPLOAD_FOLDER"] = str(tmp_path)
    try:
        existing = PhysicianFactory(npi=valid_npi(900), first_name="Rosa", last_name="Alvarez")
        db.session.commit()
        auth.as_user(admin)
        data = to_csv(
            [row(accepting_new="false"), row(npi=valid_npi(901), last_name="Newman"), row(npi="1", last_name="Broken")]
        )
        resp = client.post(
            "/admin/physicians/import",
            data={"file": (io.BytesIO(data), "doctors.csv")},
            content_type="multipart/form-data",
        )
        body = resp.get_data(as_text=True)
        assert resp.status_code == 200 and "Import preview" in body
        assert "would be created" in body and "Nothing is saved yet" in body
        assert "10 digits" in body and ">4<" in body  # the bad line, with its number
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 1
        token = next(iter(tmp_path.iterdir())).name.split("-", 2)[2].removesuffix(".csv")
        assert token in body

        # Someone else cannot commit this upload with the token.
        other = UserFactory(email="other-admin@example.com", role="admin")
        db.session.commit()
        done = client.post("/admin/physicians/import/commit", data={"token": token})
        assert done.status_code == 200, done.get_data(as_text=True)[:500]
        text = done.get_data(as_text=True)
        assert "Import finished" in text and "1 created, 1 updated, 0 unchanged, 1 line(s) with errors" in text
        db.session.expire_all()
        assert db.session.get(Physician, existing.id).accepting_new is False
        assert db.session.scalar(sa.select(Physician).where(Physician.last_name == "Newman"))
        # The kept upload is gone; its refused lines are kept for the result page's download.
        assert [f.name.split("-")[1] for f in tmp_path.iterdir()] == ["errors"]
        assert "Download the 1 line with errors (CSV)" in text
        errors_token = re.search(r'name="token" type="hidden" value="([^"]+)"', text).group(1)
        assert errors_token != token
        download = client.post("/admin/physicians/import/errors.csv", data={"token": errors_token})
        assert download.status_code == 200 and download.mimetype == "text/csv"
        lines = download.get_data(as_text=True).lstrip("\ufeff").splitlines()
        assert lines[0].startswith("import_errors,npi,") and len(lines) == 2
        assert "Line 4: npi: NPI must be 10 digits" in lines[1] and ",Broken," in lines[1]
        # The refused lines are no upload: their token cannot be committed.
        assert client.post("/admin/physicians/import/commit", data={"token": errors_token}).status_code == 302
        again = client.post("/admin/physicians/import/commit", data={"token": token})
        assert again.status_code == 302
        assert other.id
        actions = list(db.session.scalars(sa.select(AuditLog.action)))
        assert "import_preview" in actions and "import_physicians" in actions
    finally:
        app.config.pop("UPLOAD_FOLDER", None)


def test_preview_says_a_moved_physician_is_geocoded_again(client, auth, admin, db, fake_geocoder):
    PhysicianFactory(npi=valid_npi(900))  # at 25.7617, -80.1918 (Miami)
    db.session.commit()
    auth.as_user(admin)
    data = to_csv([row(zip="33602", city="Tampa", latitude="25.761700", longitude="-80.191800")])
    body = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(data), "doctors.csv")}, content_type="multipart/form-data"
    ).get_data(as_text=True)
    assert "new address geocoded (the file&#39;s latitude/longitude are the old address&#39;s)" in body
    assert fake_geocoder == []  # a preview geocodes nothing


def test_upload_of_another_admin_cannot_be_committed(client, auth, admin, db, app, tmp_path):
    from crm.services import physician_csv

    other = UserFactory(email="other-admin@example.com", role="admin")
    db.session.commit()
    token = physician_csv.store_upload(str(tmp_path), other.id, to_csv([row()]))
    app.config["UPLOAD_FOLDER"] = str(tmp_path)
    try:
        auth.as_user(admin)
        assert client.post("/admin/physicians/import/commit", data={"token": token}).status_code == 302
        assert client.post("/admin/physicians/import/commit", data={"token": "../../etc/passwd"}).status_code == 302
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0
    finally:
        app.config.pop("UPLOAD_FOLDER", None)


def test_upload_errors_are_shown_not_500(client, auth, admin, db):
    auth.as_user(admin)
    latin = to_csv([row(first_name="José")]).decode().encode("latin-1")
    resp = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(latin), "x.csv")}, content_type="multipart/form-data"
    )
    assert resp.status_code == 200 and "not UTF-8" in resp.get_data(as_text=True)
    resp = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(b"x"), "x.xlsx")}, content_type="multipart/form-data"
    )
    assert "Upload a .csv file" in resp.get_data(as_text=True)
    resp = client.post("/admin/physicians/import", data={})
    assert resp.status_code == 200 and "Choose a CSV file" in resp.get_data(as_text=True)


def test_commit_imports_the_good_lines_of_a_file_with_unstorable_values(client, auth, admin, db, app, tmp_path):
    """A NUL byte or an over-long website is a line error in the preview and at commit; the
    other lines go in (on PostgreSQL they used to fail the whole commit with a 400)."""
    app.config["UPLOAD_FOLDER"] = str(tmp_path)
    try:
        auth.as_user(admin)
        data = to_csv(
            [
                row(npi=valid_npi(940), last_name="Nul", street="1 Bay\x00St"),
                row(npi=valid_npi(941), last_name="Longsite", website="https://example.com/" + "a" * 300),
                row(npi=valid_npi(942), last_name="Fine"),
            ]
        )
        preview = client.post(
            "/admin/physicians/import",
            data={"file": (io.BytesIO(data), "doctors.csv")},
            content_type="multipart/form-data",
        ).get_data(as_text=True)
        assert "street: contains a control character" in preview and "longer than 300 characters" in preview
        token = next(iter(tmp_path.iterdir())).name.split("-", 2)[2].removesuffix(".csv")
        done = client.post("/admin/physicians/import/commit", data={"token": token})
        assert done.status_code == 200
        assert "1 created, 0 updated, 0 unchanged, 2 line(s) with errors" in done.get_data(as_text=True)
        assert list(db.session.scalars(sa.select(Physician.last_name))) == ["Fine"]
    finally:
        app.config.pop("UPLOAD_FOLDER", None)


def test_upload_over_the_size_limit_gets_the_413_page(make_app, admin, db):
    """As in production (no TESTING, exceptions not propagated, CSRF on): the error page's nav
    must not read the too-large body again, which made the 413 a 500."""
    import re

    app = make_app(TESTING=False, PROPAGATE_EXCEPTIONS=False, WTF_CSRF_ENABLED=True)
    client = app.test_client()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    signed_in = client.post(
        "/login", data={"email": admin.email, "password": "correct horse battery", "csrf_token": token.group(1)}
    )
    assert signed_in.status_code == 302
    big = b"npi\n" + b"1" * app.config["MAX_CONTENT_LENGTH"]
    resp = client.post(
        "/admin/physicians/import",
        data={"file": (io.BytesIO(big), "doctors.csv"), "csrf_token": token.group(1)},
        content_type="multipart/form-data",
    )
    body = resp.get_data(as_text=True)
    assert resp.status_code == 413 and "larger than the 2 MB upload limit" in body
    assert "flask --app wsgi crm physicians import FILE" in body
    assert 'href="/admin/physicians/import">Back to the form</a>' in body  # not the start page
    assert "Sign out" in body  # the signed-in page, nav included


def test_export_download_is_audited_and_reimports_unchanged(client, auth, admin, db):
    from crm.services import physician_csv

    PhysicianFactory.create_batch(3)
    PhysicianFactory(active=False)
    db.session.commit()
    auth.as_user(admin)
    resp = client.get("/admin/physicians/export.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv" and resp.is_streamed
    assert "attachment" in resp.headers["Content-Disposition"]
    # Named by the admin's own clock, not UTC.
    local = datetime.now(ZoneInfo(admin.timezone)).strftime("%Y%m%d-")
    assert f'filename="physicians-{local}' in resp.headers["Content-Disposition"]
    assert resp.data.startswith("\ufeff".encode())  # a BOM, as the report CSVs: Excel reads the names right
    assert len(resp.data.decode("utf-8-sig").strip().splitlines()) == 5  # header + all four, inactive too
    text, _ = physician_csv.export_csv()
    assert resp.data.decode("utf-8-sig") == text
    pieces = list(physician_csv.export_chunks(size=200))  # streamed in pieces, the same bytes
    assert len(pieces) > 2 and "".join(pieces) == text
    report = physician_csv.plan_import(resp.data)
    assert report.counts["unchanged"] == 4 and not report.changes
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "export"))
    assert entry.user_id == admin.id and entry.detail["rows"] == 4


def test_warn_expiring_registrations_once_per_admin(db):
    now = datetime.now(UTC)
    admin1 = UserFactory(role="admin")
    admin2 = UserFactory(role="admin")
    UserFactory(role="admin", active=False)
    UserFactory()  # specialists are not told
    soon = PhysicianFactory()
    soon.registrations[0].expires_on = now.date() + timedelta(days=12)
    PhysicianFactory()  # a year away
    old = PhysicianFactory()
    old.registrations[0].expires_on = now.date() - timedelta(days=2)  # already expired: not "expiring"
    inactive = PhysicianFactory(active=False)
    inactive.registrations[0].expires_on = now.date() + timedelta(days=5)
    db.session.commit()

    assert directory.warn_expiring_registrations(now) == 1
    db.session.commit()
    notes = db.session.scalars(sa.select(Notification)).all()
    assert {n.user_id for n in notes} == {admin1.id, admin2.id}
    assert all(soon.npi in n.message and n.dedupe_key for n in notes)
    reg = db.session.scalar(sa.select(Registration).where(Registration.physician_id == soon.id))
    assert reg.expiry_warned_at is not None
    # Running again changes nothing.
    assert directory.warn_expiring_registrations(now + timedelta(hours=1)) == 0
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 2
    # Renewal (a new expiry date) resets the warning, so the next expiry is warned about again.
    directory.save_physician(
        directory.PhysicianData(
            **{
                **vars(directory.physician_data(soon)),
                "registrations": [directory.RegistrationData("FL", "FL-1", now.date() + timedelta(days=20))],
            }
        ),
        soon,
    )
    db.session.commit()
    assert directory.warn_expiring_registrations(now) == 1
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 4


def test_expiry_warning_waits_for_an_active_admin(db):
    """With no active admin nobody is told, so the registration stays unwarned for the first one."""
    now = datetime.now(UTC)
    UserFactory(role="admin", active=False)
    soon = PhysicianFactory()
    soon.registrations[0].expires_on = now.date() + timedelta(days=12)
    db.session.commit()
    assert directory.warn_expiring_registrations(now) == 0
    db.session.commit()
    assert soon.registrations[0].expiry_warned_at is None
    admin = UserFactory(role="admin")
    db.session.commit()
    assert directory.warn_expiring_registrations(now + timedelta(hours=1)) == 1
    db.session.commit()
    note = db.session.scalar(sa.select(Notification))
    assert note.user_id == admin.id and soon.npi in note.message
    assert soon.registrations[0].expiry_warned_at is not None


def test_directory_for_specialists(client, auth, specialist, db):
    cond = ConditionFactory(name="Glaucoma")
    doc = PhysicianFactory(last_name="Visible", offers_telehealth=True, registered_in=["FL", "GA"])
    doc.conditions = [cond]
    hidden = PhysicianFactory(last_name="Hidden", active=False)
    PhysicianFactory(last_name="Texan", state="TX", city="Austin", registered_in=["TX"])
    db.session.commit()
    auth.as_user(specialist)
    body = client.get("/physicians").get_data(as_text=True)
    assert "Visible," in body and "Texan," in body and "Hidden," not in body
    assert "Edit" not in body.split("<main", 1)[1].split("Visible", 1)[0] or "Manage in admin" not in body
    assert "Texan," not in client.get("/physicians?state=GA").get_data(as_text=True)
    assert "Texan," in client.get("/physicians?q=austin").get_data(as_text=True)
    assert "Texan," not in client.get("/physicians?telehealth=yes").get_data(as_text=True)
    assert "Visible," in client.get(f"/physicians?q={doc.npi}").get_data(as_text=True)
    detail = client.get(f"/physicians/{doc.id}").get_data(as_text=True)
    assert "Glaucoma" in detail and "GA" in detail and f"/admin/physicians/{doc.id}/edit" not in detail
    assert client.get(f"/physicians/{hidden.id}").status_code == 404
    nav = client.get("/queue").get_data(as_text=True)
    assert 'href="/physicians"' in nav


def test_directory_detail_has_edit_link_for_admins(client, auth, admin, db):
    doc = PhysicianFactory()
    db.session.commit()
    auth.as_user(admin)
    detail = client.get(f"/physicians/{doc.id}").get_data(as_text=True)
    assert f"/admin/physicians/{doc.id}/edit" in detail and ">Edit<" in detail


def test_directory_requires_login(client):
    assert client.get("/physicians").status_code == 302


def test_with_an_online_geocoder_the_web_import_leaves_addresses_to_the_retry_job(
    client,
    auth,
    admin,
    db,
    app,
    tmp_path,
    fake_online,  # noqa: F811 - the fixture imported above
):
    """An online service answers about once a second: a file of new addresses located line by line
    would outlast the request. The import saves them pending and the geocode_retry job locates them."""
    from crm import jobs
    from crm.models.enums import GeocodeStatus
    from tests.test_geocoding import FakeOnline

    saved = {k: app.config.get(k) for k in (*fake_online, "UPLOAD_FOLDER")}
    app.config.update(fake_online, UPLOAD_FOLDER=str(tmp_path))
    try:
        auth.as_user(admin)
        data = to_csv(
            [
                row(latitude="", longitude=""),
                row(npi=valid_npi(901), last_name="Newman", street="200 Bay St", latitude="", longitude=""),
            ]
        )
        preview = client.post(
            "/admin/physicians/import",
            data={"file": (io.BytesIO(data), "doctors.csv")},
            content_type="multipart/form-data",
        ).get_data(as_text=True)
        assert "address geocoded in the background, within minutes" in preview
        assert "2 addresses will be located in the background" in preview
        token = next(iter(tmp_path.iterdir())).name.split("-", 2)[2].removesuffix(".csv")
        done = client.post("/admin/physicians/import/commit", data={"token": token}).get_data(as_text=True)
        assert "2 created" in done and "2 addresses are located in the background" in done
        assert FakeOnline.queries == []  # nothing asked in the request
        doctors = list(db.session.scalars(sa.select(Physician)))
        assert {d.geocode_status for d in doctors} == {GeocodeStatus.PENDING}

        FakeOnline.answers = type("Any", (dict,), {"get": lambda self, q, default=None: (25.77, -80.19, {})})()
        with app.test_request_context():
            jobs.geocode_retry(datetime.now(UTC))
        db.session.expire_all()
        assert len(FakeOnline.queries) == 2
        assert {d.geocode_status for d in db.session.scalars(sa.select(Physician))} == {GeocodeStatus.OK}
    finally:
        app.config.update(saved)


def test_preview_of_a_file_full_of_errors_lists_the_first_500(client, auth, admin, db):
    """Every line of a 2 MB file wrong (a state column in full names, say) made a 2 MB page that took
    seconds to render: the first 500 are listed, and the rest counted."""
    auth.as_user(admin)
    data = to_csv([row(npi=valid_npi(1000 + i), state="Florida", languages="en") for i in range(620)])
    resp = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(data), "x.csv")}, content_type="multipart/form-data"
    )
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Lines with errors (620)" in body
    assert body.count("Unknown state code") == 500 and "… and 120 more lines with errors" in body


def test_preview_of_a_semicolon_separated_file_says_how_it_was_read(client, auth, admin, db):
    auth.as_user(admin)
    data = to_csv([row(languages="en")]).decode().replace(",", ";").encode("utf-8")
    resp = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(data), "excel.csv")}, content_type="multipart/form-data"
    )
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "separated by semicolons" in body
    assert "The file was not imported" not in body and "Import 1 change" in body


def test_full_width_digits_in_npi_and_zip_are_stored_as_ascii(client, auth, admin, db):
    auth.as_user(admin)
    wide = str.maketrans("0123456789", "０１２３４５６７８９")
    resp = client.post("/admin/physicians/new", data=form_data(npi=valid_npi(500).translate(wide), zip="３３６０２"))
    assert resp.status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    assert (doc.npi, doc.zip) == (valid_npi(500), "33602")


def test_deactivating_a_physician_with_upcoming_appointments_lists_them(client, auth, admin, db):
    from crm.models import Appointment
    from crm.models.enums import AppointmentStatus, VisitMode
    from tests.factories import LeadFactory

    doc = PhysicianFactory(last_name="Booked")
    soon, later, past, gone = (LeadFactory() for _ in range(4))
    now = datetime.now(UTC)
    for lead, when, status in (
        (soon, now + timedelta(days=1), AppointmentStatus.BOOKED),
        (later, now + timedelta(days=9), AppointmentStatus.CONFIRMED),
        (past, now - timedelta(days=1), AppointmentStatus.BOOKED),
        (gone, now + timedelta(days=2), AppointmentStatus.CANCELLED),
    ):
        db.session.add(Appointment(lead=lead, physician=doc, starts_at=when, mode=VisitMode.IN_PERSON, status=status))
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    assert "Their 2 upcoming appointments stay booked." in page  # in the Deactivate confirmation
    resp = client.post(f"/admin/physicians/{doc.id}/deactivate", follow_redirects=True)
    body = resp.get_data(as_text=True)
    assert "Their 2 upcoming appointments stay booked" in body
    assert f"lead #{soon.id}" in body and f"lead #{later.id}" in body
    assert f"lead #{past.id}" not in body and f"lead #{gone.id}" not in body
    assert body.index(f"lead #{soon.id}") < body.index(f"lead #{later.id}")  # soonest first
    assert soon.patient.last_name not in body  # no patient names on the physician's page


def test_a_save_over_someone_elses_change_is_refused_not_silent(client, auth, admin, db):
    """Two admins (or an admin and a CSV import) on one physician: the later save used to put back
    every value its page was opened with, undoing the other change without a word."""
    import html
    import re

    auth.as_user(admin)
    assert client.post("/admin/physicians/new", data=form_data()).status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    token = html.unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', page).group(1))
    # Meanwhile: another admin changes the practice name; the geocoder locating the address is no conflict.
    doc.practice_name, doc.latitude, doc.longitude = "Quinn & Partners", 27.95, -82.46
    db.session.commit()
    mine = form_data(phone="813-555-0199", loaded=token)
    resp = client.post(f"/admin/physicians/{doc.id}/edit", data=mine)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "someone else changed this physician" in body and "(practice name)" in body
    assert "813-555-0199" in body  # what this admin typed is kept
    db.session.expire_all()
    assert (doc.practice_name, doc.phone) == ("Quinn & Partners", "+18135550142")
    # Saving again from that page is a deliberate overwrite.
    again = html.unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', body).group(1))
    assert client.post(f"/admin/physicians/{doc.id}/edit", data=dict(mine, loaded=again)).status_code == 302
    db.session.expire_all()
    assert (doc.practice_name, doc.phone) == ("Quinn Family Medicine", "+18135550199")
    # A page opened with the current values saves at once.
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    token = html.unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', page).group(1))
    ok = client.post(f"/admin/physicians/{doc.id}/edit", data=form_data(phone="813-555-0100", loaded=token))
    assert ok.status_code == 302


def test_a_registration_valid_through_today_is_not_shown_expired_once_the_utc_date_turns(client, auth, admin, db):
    """At 21:00 in New York the UTC date is already tomorrow: the admin list, its filter, the
    directory and the expiry warning go by the desk's date (BUSINESS_TIMEZONE), as booking and
    matching let the registration be used through its last day."""
    import time_machine

    doc = PhysicianFactory(last_name="Lastday")
    doc.registrations[0].expires_on = date(2026, 12, 1)
    db.session.commit()
    evening = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # Dec 1, 21:00 EST
    with time_machine.travel(evening, tick=False):
        auth.as_user(admin)
        listed = client.get("/admin/physicians?q=Lastday").get_data(as_text=True)
        expired = client.get("/admin/physicians?expiring=expired").get_data(as_text=True)
        directory_page = client.get(f"/physicians/{doc.id}").get_data(as_text=True)
        warned = directory.warn_expiring_registrations(evening)
    assert "reg-expiring" in listed and "reg-expired" not in listed and "FL · today" in listed
    assert "Lastday, Dana</a>" not in expired
    assert "expires today (valid through today)" in directory_page and "cannot certify" not in directory_page
    assert warned == 1


def test_long_notes_in_another_script_still_save(client, auth, admin, db):
    """The page's snapshot of the physician escaped every non-ASCII character six-fold, so 4,000
    characters of Cyrillic notes overflowed it and Save failed with no field marked."""
    import html
    import re

    auth.as_user(admin)
    notes = "Принимает пациентов по субботам. " * 120  # about 4,000 characters
    notes = notes[:4900].strip()
    assert client.post("/admin/physicians/new", data=form_data(notes=notes)).status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    token = html.unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', page).group(1))
    resp = client.post(
        f"/admin/physicians/{doc.id}/edit", data=form_data(notes=notes, phone="813-555-0177", loaded=token)
    )
    assert resp.status_code == 302
    db.session.expire_all()
    assert doc.phone == "+18135550177"


def test_the_lines_with_errors_download_with_their_reasons_and_go_back_in_as_they_are(
    app, client, auth, admin, db, tmp_path
):
    """Errors were only on the page (500 at most): the admin downloads the refused lines, fixes them
    in a spreadsheet and uploads that file without deleting the reasons column."""
    app.config["UPLOAD_FOLDER"] = str(tmp_path)
    auth.as_user(admin)
    data = to_csv([row(), row(npi="1", last_name="Broken"), row(npi=valid_npi(902), last_name="Formula", zip="=1+2")])
    resp = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(data), "doctors.csv")}, content_type="multipart/form-data"
    )
    body = resp.get_data(as_text=True)
    assert "Download the 2 lines with errors (CSV)" in body
    token = next(iter(tmp_path.iterdir())).name.split("-", 2)[2].removesuffix(".csv")
    got = client.post("/admin/physicians/import/errors.csv", data={"token": token})
    assert got.status_code == 200 and got.mimetype == "text/csv"
    assert "physicians-lines-with-errors.csv" in got.headers["Content-Disposition"]
    lines = list(csv.reader(io.StringIO(got.get_data(as_text=True).lstrip("\ufeff"))))
    assert lines[0][:3] == ["import_errors", "npi", "first_name"] and len(lines) == 3
    assert (
        lines[1][0].startswith("Line 3: ") and "10 digits" in lines[1][0] and lines[1][1:4] == ["1", "Rosa", "Broken"]
    )
    assert lines[2][0].startswith("Line 4: ") and "'=1+2" in lines[2]  # a formula is not run by the spreadsheet
    # Fixed in the spreadsheet, reasons column left in: the file imports.
    lines[1][1] = valid_npi(903)
    lines[2][lines[0].index("zip")] = "33101"
    fixed = io.StringIO()
    csv.writer(fixed).writerows(lines)
    report = physician_csv.plan_import(fixed.getvalue().encode("utf-8"))
    assert not report.file_error and not report.errors and len(report.changes) == 2
    # An expired or foreign token: back to the upload page, no 500.
    assert client.post("/admin/physicians/import/errors.csv", data={"token": "x" * 30}).status_code == 302


# --- QA walkthrough, December 2026 ----------------------------------------------------------------


def test_an_npi_typed_with_spaces_or_dashes_is_taken_as_its_digits(client, auth, admin, db, fake_geocoder):
    npi = valid_npi(501)
    auth.as_user(admin)
    typed = f"{npi[:3]} {npi[3:6]}-{npi[6:]}"
    resp = client.post("/admin/physicians/new", data=form_data(npi=typed))
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    assert db.session.scalar(sa.select(Physician.npi)) == npi
    # Anything else than spaces and dashes is still refused; a typo still fails the check digit.
    assert directory.clean_npi(f" {npi[:5]}\u2013{npi[5:]} ") == npi
    for bad in (f"{npi[:3]}.{npi[3:]}", f"{npi[:3]} {npi[3:6]}-{npi[6:9]}0" if npi[9] != "0" else npi[:9] + " 1"):
        with pytest.raises(ValueError):
            directory.clean_npi(bad)
    # The same physician typed another way is the duplicate it is.
    again = client.post("/admin/physicians/new", data=form_data(npi=f"{npi[:5]}-{npi[5:]}"))
    assert again.status_code == 200 and "already belongs to" in again.get_data(as_text=True)


def test_update_audit_keeps_the_old_values_so_a_wiped_phone_can_be_read_back(client, auth, admin, db, fake_geocoder):
    auth.as_user(admin)
    assert client.post("/admin/physicians/new", data=form_data()).status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    loaded = html_unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', page).group(1))
    resp = client.post(
        f"/admin/physicians/{doc.id}/edit", data=form_data(phone="", weekly_capacity="15", loaded=loaded)
    )
    assert resp.status_code == 302
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "update_physician"))
    assert sorted(entry.detail["fields"]) == ["geocoded", "phone", "weekly_capacity"]  # empty coordinates: geocoded
    assert entry.detail["changes"] == {"phone": ["+18135550142", ""], "weekly_capacity": [12, 15]}
    text = " ".join(re.sub(r"<[^>]+>", "", client.get("/admin/audit").get_data(as_text=True)).split())
    assert "phone +18135550142 → none" in text


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_an_already_expired_registration_is_saved_with_a_warning(client, auth, admin, db, fake_geocoder):
    auth.as_user(admin)
    data = form_data(**{"registrations-1-state": "CO", "registrations-1-number": "CO-1"})
    data["registrations-1-expires_on"] = "2020-01-01"
    body = client.post("/admin/physicians/new", data=data, follow_redirects=True).get_data(as_text=True)
    assert "Registration already expired: CO CO-1 expired on 2020-01-01" in body
    doc = db.session.scalar(sa.select(Physician))
    assert sorted(r.state for r in doc.registrations) == ["CO", "FL"]  # saved: an admin may record history
    # Saving again without touching it does not warn again.
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    loaded = html_unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', page).group(1))
    again = client.post(
        f"/admin/physicians/{doc.id}/edit", data=dict(data, weekly_capacity="13", loaded=loaded), follow_redirects=True
    )
    assert "already expired" not in again.get_data(as_text=True)


def test_deactivating_a_physician_with_one_upcoming_appointment_says_it_stays_booked(client, auth, admin, db):
    from crm.models import Appointment
    from crm.models.enums import VisitMode
    from tests.factories import LeadFactory

    doc = PhysicianFactory()
    soon = datetime.now(UTC) + timedelta(days=2)
    db.session.add(Appointment(lead=LeadFactory(), physician=doc, starts_at=soon, mode=VisitMode.IN_PERSON))
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    assert "Their 1 upcoming appointment stays booked." in page
    body = client.post(f"/admin/physicians/{doc.id}/deactivate", follow_redirects=True).get_data(as_text=True)
    assert "Their 1 upcoming appointment stays booked: rebook or cancel it from the lead listed below." in body


def test_a_list_page_past_the_end_goes_to_the_last_page(client, auth, admin, db):
    PhysicianFactory.create_batch(55, city="Tampa")
    db.session.commit()
    auth.as_user(admin)
    resp = client.get("/admin/physicians?page=99&q=tampa")
    assert resp.status_code == 302 and "page=2" in resp.location and "q=tampa" in resp.location
    body = client.get(resp.location).get_data(as_text=True)
    assert "Page 2 of 2" in body and "No physician matches" not in body
    assert client.get("/admin/physicians?page=3&q=nobody-here").status_code == 200  # no matches: no loop


def test_preview_shows_old_and_new_values_and_what_an_empty_cell_blanks(client, auth, admin, db):
    doc = PhysicianFactory(npi=valid_npi(900), first_name="Rosa", last_name="Alvarez", phone="+13055550100")
    doc.street, doc.email = "100 Main St", "rosa@example.com"
    db.session.commit()
    auth.as_user(admin)
    text, _ = physician_csv.export_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    rows[0].update(phone="", email="", weekly_capacity="14")
    expired = dict(rows[0], npi=valid_npi(901), last_name="Oldreg", registrations="CO:CO-1:2020-01-01")
    short = "1,Ana,Short\n"  # too few cells: still named
    data = to_csv([rows[0], expired]) + short.encode()
    resp = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(data), "d.csv")}, content_type="multipart/form-data"
    )
    body = " ".join(resp.get_data(as_text=True).split())
    flat = re.sub(r"<[^>]+>", "", body)
    assert "phone: +13055550100 → empty" in flat and "email: rosa@example.com → empty" in flat
    assert "weekly capacity: 10 → 14" in flat
    assert "registration already expired: CO CO-1 expired on 2020-01-01" in flat
    errors = body.split("import-errors", 1)[1].split("</table>", 1)[0]
    assert "Ana Short" in errors


def test_the_lists_export_link_holds_what_the_list_shows_inactive_left_out_by_default(client, auth, admin, db):
    from crm.services import directory

    shown, hidden = PhysicianFactory(state="FL"), PhysicianFactory(state="FL")
    directory.set_physician_active(hidden, False)
    db.session.commit()
    auth.as_user(admin)
    page = client.get("/admin/physicians?state=FL").get_data(as_text=True)
    link = re.search(r'href="(/admin/physicians/export\.csv[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "active=yes" in link and "state=FL" in link
    exported = client.get(link).get_data(as_text=True)
    assert shown.npi in exported and hidden.npi not in exported
    everyone = client.get("/admin/physicians/export.csv").get_data(as_text=True)  # the import page's link
    assert shown.npi in everyone and hidden.npi in everyone


def test_search_takes_a_name_written_last_name_first_as_the_list_writes_it(client, auth, admin, db):
    omar = PhysicianFactory(first_name="Omar", last_name="Garcia")
    PhysicianFactory(first_name="Garcia", last_name="Lopez")
    db.session.commit()
    auth.as_user(admin)
    for q in ("Garcia, Omar", "garcia omar", "Omar Garcia", "GARCIA,OMAR"):
        page = client.get("/admin/physicians", query_string={"q": q}).get_data(as_text=True)
        assert omar.npi in page and "Lopez" not in page, q


def test_an_npi_not_starting_with_1_or_2_is_named_for_that_not_for_its_check_digit():
    from crm.services import directory
    from crm.services.npi import check_digit

    stem = "555000111"
    well_checked = stem + check_digit(stem)  # its check digit is right: the first digit is wrong
    with pytest.raises(ValueError, match=f"NPI {well_checked} starts with 5: every NPI starts with 1 or 2"):
        directory.clean_npi(well_checked)
    with pytest.raises(ValueError, match="fails the check digit"):
        directory.clean_npi("1234567890")


def test_the_web_import_takes_a_few_thousand_lines_at_a_time_and_names_the_command(
    client, auth, admin, db, app, tmp_path, monkeypatch
):
    from crm.admin import physicians as admin_physicians

    monkeypatch.setattr(admin_physicians, "WEB_IMPORT_MAX_LINES", 2)
    app.config["UPLOAD_FOLDER"] = str(tmp_path)
    auth.as_user(admin)
    data = to_csv([row(npi=valid_npi(960 + i), last_name=f"Doc{i}") for i in range(3)])
    page = client.post(
        "/admin/physicians/import", data={"file": (io.BytesIO(data), "big.csv")}, content_type="multipart/form-data"
    ).get_data(as_text=True)
    assert "This file has 3 lines; the import here takes at most 2 at a time." in page
    assert "flask crm physicians import FILE" in page
    assert list(tmp_path.iterdir()) == []  # nothing kept to commit
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0


def test_two_admins_saving_one_physician_at_the_same_moment_cannot_both_win(app, client, auth, admin, db, monkeypatch):
    """Both pages were opened with the same values. The first save's check and write hold a lock
    until its commit; the second save, arriving in between, waits for it, then sees the first
    one's values and is refused, where it used to pass the same check and overwrite them."""
    import html
    import threading
    import time

    from crm.admin import physicians as physician_routes

    auth.as_user(admin)
    assert client.post("/admin/physicians/new", data=form_data()).status_code == 302
    doc = db.session.scalar(sa.select(Physician))
    page = client.get(f"/admin/physicians/{doc.id}/edit").get_data(as_text=True)
    token = html.unescape(re.search(r'name="loaded" type="hidden" value="([^"]*)"', page).group(1))
    other = UserFactory(role="admin", email="second.admin@example.com")
    db.session.commit()
    doc_id, emails = doc.id, (admin.email, other.email)
    db.session.remove()

    first_checked = threading.Event()
    npi_taken = physician_routes._npi_taken

    def slow_after_the_first_check(*args, **kwargs):
        # Runs after the edit check, before the write: the first save lingers there.
        if threading.current_thread().name == "first" and not first_checked.is_set():
            first_checked.set()
            time.sleep(0.8)
        return npi_taken(*args, **kwargs)

    monkeypatch.setattr(physician_routes, "_npi_taken", slow_after_the_first_check)
    outcomes: dict[str, tuple[int, str]] = {}

    def save(name: str, email: str, phone: str) -> None:
        web = app.test_client()
        assert web.post("/login", data={"email": email, "password": "correct horse battery"}).status_code == 302
        if name == "second":
            assert first_checked.wait(timeout=30)
        resp = web.post(f"/admin/physicians/{doc_id}/edit", data=form_data(phone=phone, loaded=token))
        outcomes[name] = (resp.status_code, resp.get_data(as_text=True))

    threads = [
        threading.Thread(target=save, name="first", args=("first", emails[0], "813-555-0101")),
        threading.Thread(target=save, name="second", args=("second", emails[1], "813-555-0102")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes["first"][0] == 302
    status, body = outcomes["second"]
    assert status == 200 and "someone else changed this physician" in body and "(phone)" in body
    assert db.session.get(Physician, doc_id).phone == "+18135550101"


def _writer_blocked(db) -> bool:
    """Whether another connection, now, would have to wait to write the physicians table."""
    if db.engine.dialect.name == "sqlite":
        import sqlite3

        other = sqlite3.connect(db.engine.url.database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            other.close()
    with db.engine.connect() as other:
        try:
            other.execute(sa.text("SELECT id FROM physicians FOR UPDATE NOWAIT"))
            return False
        except sa.exc.OperationalError:
            return True
        finally:
            other.rollback()


@pytest.fixture
def online_geocoder(app, fake_online):  # noqa: F811 - the fixture imported above
    from tests.test_geocoding import FakeOnline

    saved = {k: app.config.get(k) for k in fake_online}
    app.config.update(fake_online)
    yield FakeOnline
    app.config.update(saved)


def _edit_zip(client, doc, zip_code):
    client.get(f"/admin/physicians/{doc.id}/edit")
    data = form_data(npi=doc.npi, first_name=doc.first_name, last_name=doc.last_name, zip=zip_code)
    return client.post(f"/admin/physicians/{doc.id}/edit", data=data, follow_redirects=True)


def test_an_online_geocoder_is_asked_after_the_save_holding_no_lock(client, auth, admin, db, online_geocoder):
    """On SQLite the edit's transaction held the database's write lock while the service answered
    (seconds), so every intake delivery waited on an admin's save."""
    from crm.models.enums import GeocodeStatus

    doc = PhysicianFactory(zip="33101")
    db.session.commit()
    blocked = []

    def answer(query):
        blocked.append(_writer_blocked(db))
        return (27.95, -82.46, {"type": "postcode"})

    online_geocoder.answers = type("Any", (dict,), {"get": lambda self, q, default=None: answer(q)})()
    auth.as_user(admin)
    resp = _edit_zip(client, doc, "33602")
    assert blocked == [False]
    assert "Located at 27.9500, -82.4600" in resp.get_data(as_text=True)
    db.session.expire_all()
    doc = db.session.get(Physician, doc.id)
    assert (doc.zip, doc.latitude, doc.geocode_status) == ("33602", 27.95, GeocodeStatus.OK)
    assert doc.geocode_next_at is None and doc.geocode_attempts == 1


def test_an_address_saved_again_during_the_lookup_keeps_its_own_coordinates(client, auth, admin, db, online_geocoder):
    from crm.models.enums import GeocodeStatus

    doc = PhysicianFactory(zip="33101")
    db.session.commit()

    def answer(query):
        # Another admin saves another ZIP while the service answers for 33602.
        with db.engine.begin() as other:
            other.execute(sa.text("UPDATE physicians SET zip = '32801' WHERE id = :id"), {"id": doc.id})
        return (27.95, -82.46, {"type": "postcode"})

    online_geocoder.answers = type("Any", (dict,), {"get": lambda self, q, default=None: answer(q)})()
    auth.as_user(admin)
    resp = _edit_zip(client, doc, "33602")
    assert "Its address is being located" in resp.get_data(as_text=True)
    db.session.expire_all()
    doc = db.session.get(Physician, doc.id)
    # Tampa's coordinates are not written under an Orlando ZIP; the job locates 32801.
    assert doc.zip == "32801" and doc.latitude is None and doc.geocode_status == GeocodeStatus.PENDING


def test_an_online_geocoder_down_at_save_leaves_it_for_the_retry_job(client, auth, admin, db, online_geocoder):
    from crm.models.enums import GeocodeStatus

    doc = PhysicianFactory(zip="33101")
    db.session.commit()
    online_geocoder.fail = True
    auth.as_user(admin)
    resp = _edit_zip(client, doc, "33602")
    assert "The geocoder is unavailable right now" in resp.get_data(as_text=True)
    db.session.expire_all()
    doc = db.session.get(Physician, doc.id)
    assert doc.geocode_status == GeocodeStatus.PENDING and doc.geocode_attempts == 1
    assert doc.geocode_next_at is not None and doc.latitude is None


def test_a_physician_added_twice_at_once_gets_a_field_error_not_a_500(client, auth, admin, db):
    auth.as_user(admin)
    with committed_meanwhile(lambda: PhysicianFactory.build(npi=valid_npi(500), last_name="First")):
        resp = client.post("/admin/physicians/new", data=form_data())
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and f"NPI {valid_npi(500)} was saved a moment ago for" in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 1


@pytest.mark.parametrize(
    ("lat", "lon", "miles"),
    [("-80.1978", "25.7791", "8,3"), ("34.05", "-118.24", "2,14")],  # swapped; Los Angeles for a Tampa ZIP
)
def test_typed_coordinates_far_from_the_zip_are_refused(client, auth, admin, db, lat, lon, miles):
    """Matching measures in-person distances from the typed point while the list shows the ZIP's town:
    a point hundreds of miles off (swapped, another address's) is a typo, caught on the form and the CSV."""
    auth.as_user(admin)
    resp = client.post("/admin/physicians/new", data=form_data(latitude=lat, longitude=lon))
    page = html.unescape(resp.get_data(as_text=True))
    assert resp.status_code == 200 and "miles from ZIP 33602 (FL): check them (latitude first" in page
    assert miles in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0
    report = physician_csv.import_csv(to_csv([row(latitude=lat, longitude=lon)]))
    (line,) = report.lines
    assert line.action == physician_csv.ERROR and "miles from ZIP 33101 (FL)" in line.errors[0]


def test_a_registration_expiry_alert_opens_the_physician(client, auth, admin, db):
    soon = PhysicianFactory()
    soon.registrations[0].expires_on = datetime.now(UTC).date() + timedelta(days=12)
    db.session.commit()
    assert directory.warn_expiring_registrations(datetime.now(UTC)) == 1
    db.session.commit()
    note = db.session.scalar(sa.select(Notification).where(Notification.user_id == admin.id))
    auth.as_user(admin)
    page = client.get("/notifications").get_data(as_text=True)
    assert "Open the physician" in page
    resp = client.post(f"/notifications/{note.id}/read", data={"open": "physician"})
    assert resp.headers["Location"].endswith(f"/admin/physicians/{soon.id}/edit")
    db.session.expire_all()
    assert db.session.get(Notification, note.id).read_at is not None


def test_a_physician_who_can_never_be_matched_is_saved_with_a_warning_and_flagged(client, auth, admin, db):
    auth.as_user(admin)
    data = form_data(offers_in_person="", **{"registrations-0-state": "", "registrations-0-number": ""})
    data["registrations-0-expires_on"] = ""
    page = client.post("/admin/physicians/new", data=data, follow_redirects=True).get_data(as_text=True)
    assert (
        "Nora Quinn, DO offers neither in-person nor telehealth visits and has no state registration"
        in html.unescape(page)
    )
    listing = client.get("/admin/physicians").get_data(as_text=True)
    assert ">no visits</span>" in listing and "no registration" in listing


def test_an_online_answer_that_is_only_the_state_is_not_stored_as_a_location(client, auth, admin, db, online_geocoder):
    """The lookup after the save's commit follows the same rule as every other path (docs/matching.md)."""
    doc = PhysicianFactory(zip="33101")
    db.session.commit()
    online_geocoder.answers = type(
        "Any", (dict,), {"get": lambda self, q, default=None: (27.8, -81.7, {"type": "state"})}
    )()
    auth.as_user(admin)
    page = html.unescape(_edit_zip(client, doc, "33602").get_data(as_text=True))
    assert "The address could only be placed somewhere in FL (is the ZIP right?)" in page
    db.session.expire_all()
    doc = db.session.get(Physician, doc.id)
    assert doc.latitude is None and doc.geocode_status == "failed" and doc.geocode_precision is None
