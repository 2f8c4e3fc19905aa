"""Reports (SPEC 10) against a hand-computed fixture; CSV exports, audit, permissions, bad dates.

Desk time zone America/New_York (EDT, UTC-4, in October 2026). The range is
2026-10-01..2026-10-10; lead numbers below are the ``n`` of ``make_world``.

| n | created (UTC)    | local day | status      | who  | first contact | state | condition | source  | stage     |
|---|------------------|-----------|-------------|------|---------------|-------|-----------|---------|-----------|
| 1 | 10-01 14:00      | 10-01     | new         | -    | -             | FL    | dystonia  | form    | new       |
| 2 | 10-02 03:30      | 10-01     | attempting  | Ann  | +600 s        | FL    | dystonia  | form    | new       |
| 3 | 10-03 15:00      | 10-03     | contacted   | Ann  | +300 s        | NY    | epilepsy  | partner | contacted |
| 4 | 10-03 16:00      | 10-03     | booked      | Ann  | +1200 s       | NY    | dystonia  | partner | booked    |
| 5 | 10-05 12:00      | 10-05     | completed   | Bo   | +3600 s       | CA    | epilepsy  | form    | completed |
| 6 | 10-05 13:00      | 10-05     | lost/not_interested | Bo | +1800 s | FL    | -         | form    | contacted |
| 7 | 10-06 10:00      | 10-06     | lost/unreachable    | Bo | +120 s  | FL    | dystonia  | form    | new       |
| 8 | 10-07 10:00      | 10-07     | contacted (appt cancelled) | Bo | +900 s | CA | epilepsy | partner | booked |
| 9 | 10-01 03:00      | 09-30     | completed   | Ann  | +60 s         | (outside the range)                 |
|10 | 10-11 04:30      | 10-11     | new         | -    | -             | (outside the range)                 |
"""

from __future__ import annotations

import csv
import io
import re
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from crm.extensions import db as _db
from crm.models import Appointment, AuditLog, Registration, ReportChange, ReportRollupState, User
from crm.models.enums import AppointmentStatus, GeocodeStatus, LeadSourceKind, LeadStatus, LostReason, VisitMode
from crm.services import charts, report_rollups, reports
from crm.services.reports import ReportRange
from tests.factories import (
    ConditionFactory,
    LeadFactory,
    PatientFactory,
    PhysicianFactory,
    UserFactory,
    WebhookSourceFactory,
)

TZ = "America/New_York"
RANGE = ReportRange(date(2026, 10, 1), date(2026, 10, 10), TZ)
ARGS = "from=2026-10-01&to=2026-10-10"


def utc(month, day, hour, minute=0):
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def world(db):
    ann = UserFactory(name="Ann Able")
    bo = UserFactory(name="Bo Baker")
    UserFactory(name="Cy Idle")  # an active specialist with no leads still gets a row
    UserFactory(name="Old Timer", active=False)  # inactive and no leads: no row
    dystonia = ConditionFactory(name="Dystonia")
    epilepsy = ConditionFactory(name="Epilepsy")
    partner = WebhookSourceFactory(name="Partner site")
    doc = PhysicianFactory(first_name="Dana", last_name="Weekly", weekly_capacity=7)
    PhysicianFactory(last_name="Unbooked")
    plan = [
        # n, created, status, lost_reason, assignee, first contact seconds, state, condition, partner source
        (1, utc(10, 1, 14), LeadStatus.NEW, None, None, None, "FL", dystonia, False),
        (2, utc(10, 2, 3, 30), LeadStatus.ATTEMPTING, None, ann, 600, "FL", dystonia, False),
        (3, utc(10, 3, 15), LeadStatus.CONTACTED, None, ann, 300, "NY", epilepsy, True),
        (4, utc(10, 3, 16), LeadStatus.BOOKED, None, ann, 1200, "NY", dystonia, True),
        (5, utc(10, 5, 12), LeadStatus.COMPLETED, None, bo, 3600, "CA", epilepsy, False),
        (6, utc(10, 5, 13), LeadStatus.LOST, LostReason.NOT_INTERESTED, bo, 1800, "FL", None, False),
        (7, utc(10, 6, 10), LeadStatus.LOST, LostReason.UNREACHABLE, bo, 120, "FL", dystonia, False),
        (8, utc(10, 7, 10), LeadStatus.CONTACTED, None, bo, 900, "CA", epilepsy, True),
        (9, utc(10, 1, 3), LeadStatus.COMPLETED, None, ann, 60, "FL", dystonia, False),
        (10, utc(10, 11, 4, 30), LeadStatus.NEW, None, None, None, "FL", dystonia, False),
    ]
    leads = {}
    for n, created, status, reason, who, first, state, condition, via_partner in plan:
        leads[n] = LeadFactory(
            patient=PatientFactory(state=state),
            created_at=created,
            status=status,
            lost_reason=reason,
            assignee=who,
            assigned_at=created + timedelta(seconds=30) if who else None,
            first_contact_at=created + timedelta(seconds=first) if first is not None else None,
            condition=condition,
            source_kind=LeadSourceKind.WEBHOOK if via_partner else LeadSourceKind.FORM,
            webhook_source=partner if via_partner else None,
        )
    for n, starts, status in [
        (4, utc(10, 6, 15), AppointmentStatus.BOOKED),
        (5, utc(10, 7, 15), AppointmentStatus.COMPLETED),
        (8, utc(10, 8, 15), AppointmentStatus.CANCELLED),
        (9, utc(9, 20, 15), AppointmentStatus.COMPLETED),
    ]:
        db.session.add(
            Appointment(lead=leads[n], physician=doc, starts_at=starts, mode=VisitMode.IN_PERSON, status=status)
        )
    db.session.commit()
    return {"ann": ann, "bo": bo, "doc": doc, "leads": leads}


def test_leads_per_day_in_the_desk_time_zone(db, world):
    per_day = dict(reports.leads_per_day(db.session, RANGE))
    assert len(per_day) == 10  # zero days present too
    assert per_day == {
        date(2026, 10, 1): 2,  # lead 2 was created 23:30 local on Oct 1 (03:30 UTC Oct 2)
        date(2026, 10, 2): 0,
        date(2026, 10, 3): 2,
        date(2026, 10, 4): 0,
        date(2026, 10, 5): 2,
        date(2026, 10, 6): 1,
        date(2026, 10, 7): 1,
        date(2026, 10, 8): 0,
        date(2026, 10, 9): 0,
        date(2026, 10, 10): 0,
    }


def test_funnel(db, world):
    f = reports.funnel(db.session, RANGE)
    assert f.stages == {"new": 8, "contacted": 5, "booked": 3, "completed": 1}
    assert (f.open, f.lost, f.unassigned) == (5, 2, 1)
    rows = {r["stage"]: r for r in f.rows()}
    assert rows["new"]["from_previous_pct"] is None and rows["new"]["from_new_pct"] == 100.0
    assert (rows["contacted"]["from_previous_pct"], rows["contacted"]["from_new_pct"]) == (62.5, 62.5)
    assert (rows["booked"]["from_previous_pct"], rows["booked"]["from_new_pct"]) == (60.0, 37.5)
    assert (rows["completed"]["from_previous_pct"], rows["completed"]["from_new_pct"]) == (33.3, 12.5)


def test_speed_to_lead_median_and_p90(db, world):
    s = reports.speed_to_lead(db.session, RANGE)
    # 120, 300, 600, 900, 1200, 1800, 3600: nearest rank 4 and 7
    assert (s.contacted, s.waiting, s.median_seconds, s.p90_seconds) == (7, 1, 900, 3600)


def test_specialists(db, world):
    rows = {r.name: r for r in reports.specialists(db.session, RANGE)}
    assert set(rows) == {"Ann Able", "Bo Baker", "Cy Idle"}
    ann, bo, cy = rows["Ann Able"], rows["Bo Baker"], rows["Cy Idle"]

    def numbers(r):
        return (r.assigned, r.contacted, r.booked, r.conversion, r.median_first_contact_seconds)

    assert numbers(ann) == (3, 2, 1, 33.3, 600)
    assert numbers(bo) == (4, 3, 2, 50.0, 900)
    assert (cy.assigned, cy.conversion, cy.median_first_contact_seconds) == (0, None, None)
    assert [r.name for r in reports.specialists(db.session, RANGE)][0] == "Bo Baker"  # most leads first


def test_breakdowns(db, world):
    assert [(r["label"], r["leads"], r["share_pct"]) for r in reports.by_source(db.session, RANGE)] == [
        ("Request form", 5, 62.5),
        ("Webhook: Partner site", 3, 37.5),
    ]
    assert [(r["label"], r["leads"]) for r in reports.by_state(db.session, RANGE)] == [("FL", 4), ("CA", 2), ("NY", 2)]
    assert [(r["label"], r["leads"]) for r in reports.by_condition(db.session, RANGE)] == [
        ("Dystonia", 4),
        ("Epilepsy", 3),
        ("Not specified", 1),
    ]


def test_utilisation_counts_live_appointments_in_the_range(db, world):
    rows = reports.utilisation(db.session, RANGE)
    assert len(rows) == 1  # the unbooked physician is not listed; cancelled and out-of-range don't count
    row = rows[0]
    assert (row["physician"], row["bookings"], row["weekly_capacity"], row["capacity_in_range"]) == (
        "Dana Weekly, MD",
        2,
        7,
        10.0,
    )
    assert row["utilisation_pct"] == 20.0


def test_utilisation_of_a_short_range_is_computed_from_the_exact_capacity(client, auth, admin, db):
    """A weekly capacity of 10 is 10/7 = 1.43 visits a day: one visit on one day is 70 %, not the
    71.4 % of dividing by the 1.4 shown (and 1 a week over 3 days: 3/7 = 0.43, one visit 233.3 %,
    not 250 %). The capacity column is rounded for reading; the percentage is not built on it."""
    lead = LeadFactory(created_at=utc(10, 1, 12))
    busy = PhysicianFactory(first_name="Ten", last_name="Weekly", weekly_capacity=10)
    rare = PhysicianFactory(first_name="One", last_name="Weekly", weekly_capacity=1)
    for doc in (busy, rare):
        db.session.add(Appointment(lead=lead, physician=doc, starts_at=utc(10, 6, 15), mode=VisitMode.IN_PERSON))
    db.session.commit()
    one_day = ReportRange(date(2026, 10, 6), date(2026, 10, 6), TZ)
    three_days = ReportRange(date(2026, 10, 5), date(2026, 10, 7), TZ)
    for counts in (None, rolled_up(db)):
        by_name = {r["physician"]: r for r in reports.utilisation(db.session, one_day, counts)}
        assert (by_name["Ten Weekly, MD"]["capacity_in_range"], by_name["Ten Weekly, MD"]["utilisation_pct"]) == (
            1.4,
            70.0,
        )
        assert by_name["One Weekly, MD"]["utilisation_pct"] == 700.0
        by_name = {r["physician"]: r for r in reports.utilisation(db.session, three_days, counts)}
        assert (by_name["One Weekly, MD"]["capacity_in_range"], by_name["One Weekly, MD"]["utilisation_pct"]) == (
            0.4,
            233.3,
        )
    auth.as_user(admin)
    rows = read_csv(client.get("/reports/export/utilisation.csv?from=2026-10-06&to=2026-10-06"))
    assert [str(busy.id), "Ten Weekly, MD", "FL", "10", "1.4", "1", "70.0"] in rows[1:]


def test_empty_range(db, world):
    rng = ReportRange(date(2026, 8, 1), date(2026, 8, 5), TZ)
    r = reports.build_report(db.session, rng)
    assert [n for _, n in r.per_day] == [0, 0, 0, 0, 0]
    assert r.funnel.stages == dict.fromkeys(reports.STAGES, 0)
    assert all(row["from_new_pct"] is None for row in r.funnel.rows())
    assert (r.speed.contacted, r.speed.median_seconds, r.speed.p90_seconds) == (0, None, None)
    assert all(s.assigned == 0 and s.median_first_contact_seconds is None for s in r.specialists)
    assert r.sources == r.states == r.conditions == r.utilisation == []


def test_one_lead_percentiles(db, world):
    rng = ReportRange(date(2026, 10, 7), date(2026, 10, 7), TZ)  # only lead 8
    s = reports.speed_to_lead(db.session, rng)
    assert (s.contacted, s.median_seconds, s.p90_seconds) == (1, 900, 900)


# --- pages -----------------------------------------------------------------------------------------


def test_report_page_shows_the_numbers(client, auth, admin, world):
    auth.as_user(admin)
    resp = client.get(f"/reports?{ARGS}")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "Oct 1, 2026 – Oct 10, 2026" in html
    assert "median 15 min · p90 1 h" in html
    for text in ("Ann Able", "Bo Baker", "Webhook: Partner site", "Dana Weekly, MD", "62.5 %", "33.3 %"):
        assert text in html
    assert f"/reports/chart/leads-per-day.svg?{ARGS}" in html.replace("&amp;", "&")
    assert f"/reports/export/specialists.csv?{ARGS}" in html.replace("&amp;", "&")


def test_default_range_is_the_last_30_days(client, auth, admin, db):
    auth.as_user(admin)
    LeadFactory(created_at=datetime.now(UTC) - timedelta(days=3))
    LeadFactory(created_at=datetime.now(UTC) - timedelta(days=40))
    db.session.commit()
    html = client.get("/reports").get_data(as_text=True)
    today = reports.today_in(TZ)
    assert f'value="{today.isoformat()}"' in html
    assert f'value="{(today - timedelta(days=29)).isoformat()}"' in html
    with client.application.app_context():
        f = reports.funnel(db.session, reports.default_range(today, TZ))
    assert f.stages["new"] == 1


@pytest.mark.parametrize(
    "query, message",
    [
        ("from=yesterday&to=2026-10-10", "is not a date: use YYYY-MM-DD"),
        ("from=2026-02-30&to=2026-03-10", "is not a date"),
        ("from=2026-10-10&to=2026-10-01", "The end date is before the start date."),
        ("from=2024-01-01&to=2026-10-01", "Pick at most 366 days."),
        ("from=1066-10-14&to=2026-10-01", "Pick a date between"),
        ("from=%00%ff&to=", "is not a date"),
    ],
)
def test_bad_dates_are_a_form_error(client, auth, admin, world, query, message):
    auth.as_user(admin)
    resp = client.get(f"/reports?{query}")
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert message in html
    assert "is-invalid" in html and "showing the last 30 days instead" in html
    for url in (f"/reports/export/funnel.csv?{query}", f"/reports/chart/funnel.svg?{query}"):
        resp = client.get(url)
        assert resp.status_code == 400 and resp.mimetype == "text/plain", url
        assert resp.get_data(as_text=True).startswith("Bad date range: ") and message in resp.get_data(as_text=True)


def test_only_a_start_date_runs_up_to_today_or_says_where_it_was_cut(client, auth, admin, db):
    auth.as_user(admin)
    today = reports.today_in(TZ)
    recent = today - timedelta(days=40)
    html = client.get(f"/reports?from={recent.isoformat()}").get_data(as_text=True)
    assert f'value="{today.isoformat()}"' in html and "the range was cut" not in html

    start = today - timedelta(days=800)  # up to today would be 801 days
    cut = start + timedelta(days=365)
    resp = client.get(f"/reports?from={start.isoformat()}")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert f'value="{cut.isoformat()}"' in html
    assert "the range was cut to" in html and cut.strftime("%b %-d, %Y") in html and "at most 366 days" in html
    # The CSV and chart URLs read the same range from the same parameters.
    resp = client.get(f"/reports/export/daily.csv?from={start.isoformat()}")
    assert f"report-daily-{start.isoformat()}-to-{cut.isoformat()}.csv" in resp.headers["Content-Disposition"]
    rows = read_csv(resp)
    assert (rows[1][0], rows[-1][0], len(rows) - 1) == (start.isoformat(), cut.isoformat(), 366)
    assert client.get(f"/reports/chart/leads-per-day.svg?from={start.isoformat()}").status_code == 200


def test_charts_are_offline_svg_images(client, auth, admin, world):
    auth.as_user(admin)
    for name in ("leads-per-day", "funnel"):
        resp = client.get(f"/reports/chart/{name}.svg?{ARGS}")
        assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
        body = resp.get_data(as_text=True)
        assert body.lstrip().startswith("<?xml") and "<svg" in body
        assert "<script" not in body and "kozea.github.io" not in body and "cdn" not in body.lower()
        assert "script-src" not in resp.headers["Content-Security-Policy"]  # nothing may run in it
    assert "Day (desk time zone)" in client.get(f"/reports/chart/leads-per-day.svg?{ARGS}").get_data(as_text=True)
    assert client.get(f"/reports/chart/pie.svg?{ARGS}").status_code == 404


def test_chart_axes_count_whole_leads(client, auth, admin, world):
    """A quiet range (at most 2 leads a day, 8 in the funnel) or an empty one: the axes read
    0, 1, 2 … leads, never 0.2 or 0.5 of a lead."""
    auth.as_user(admin)
    for args in (ARGS, "from=2026-08-01&to=2026-08-05"):
        for name in ("leads-per-day", "funnel"):
            svg = client.get(f"/reports/chart/{name}.svg?{args}").get_data(as_text=True)
            numbers = re.findall(r"<text[^>]*>(\d+(?:\.\d+)?)</text>", svg)
            assert numbers and all(n.isdigit() for n in numbers), (name, args, numbers)
    # steps of 1, 2, 5, 10, 20 …, up to the first label at or past the largest count
    assert charts.whole_ticks(0) == [0, 1] and charts.whole_ticks(13) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert charts.whole_ticks(90) == list(range(0, 100, 10)) and charts.whole_ticks(101)[-1] == 120


def read_csv(resp) -> list[list[str]]:
    return list(csv.reader(io.StringIO(resp.get_data().decode("utf-8-sig"))))


def test_csv_exports_and_audit(client, auth, admin, world, db):
    auth.as_user(admin)
    resp = client.get(f"/reports/export/specialists.csv?{ARGS}")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert 'filename="report-specialists-2026-10-01-to-2026-10-10.csv"' in resp.headers["Content-Disposition"]
    rows = read_csv(resp)
    assert rows[0] == [
        "specialist",
        "assigned",
        "contacted",
        "booked",
        "conversion_pct",
        "median_first_contact_minutes",
        "target_met",
        "target_missed",
        "within_target_pct",
    ]
    assert rows[1:] == [
        ["Bo Baker", "4", "3", "2", "50.0", "15", "4", "0", "100.0"],
        ["Ann Able", "3", "2", "1", "33.3", "10", "3", "0", "100.0"],
        ["Cy Idle", "0", "0", "0", "", "", "0", "0", ""],
        ["Unassigned", "1", "0", "0", "0.0", "", "0", "0", ""],  # lead 1: the rows add up to the 8 new leads
    ]
    entry = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "export")).one()
    assert (entry.user_id, entry.object_type, entry.object_id) == (admin.id, "report", "specialists")
    assert entry.detail == {"table": "specialists", "from": "2026-10-01", "to": "2026-10-10", "rows": 4}

    expected = {
        "daily": ["2026-10-01", "2"],
        "funnel": ["booked", "3", "60.0", "37.5"],
        "speed": ["7", "1", "15", "60", "7", "0", "100.0"],
        "sources": ["Request form", "5", "62.5"],
        "states": ["FL", "4", "50.0"],
        "conditions": ["Dystonia", "4", "50.0"],
        "utilisation": [str(world["doc"].id), "Dana Weekly, MD", "FL", "7", "10.0", "2", "20.0"],
    }
    for name, row in expected.items():
        rows = read_csv(client.get(f"/reports/export/{name}.csv?{ARGS}"))
        assert row in rows[1:], (name, rows)
    assert db.session.scalar(sa.select(sa.func.count()).where(AuditLog.action == "export")) == 8
    assert client.get(f"/reports/export/patients.csv?{ARGS}").status_code == 404


def test_specialists_add_up_with_the_unassigned_and_mark_the_inactive(client, auth, admin, db, world):
    leads = world["leads"]
    gone = UserFactory(name="Gone Away", active=False)
    leads[3].assignee = gone  # contacted
    leads[7].assignee = None  # lost/unreachable, never reached
    db.session.commit()
    auth.as_user(admin)
    rows = read_csv(client.get(f"/reports/export/specialists.csv?{ARGS}"))[1:]
    assert ["Gone Away (inactive)", "1", "1", "0", "0.0", "5", "1", "0", "100.0"] in rows
    assert rows[-1] == ["Unassigned", "2", "0", "0", "0.0", "", "1", "0", "100.0"]
    assert sum(int(r[1]) for r in rows) == 8 and sum(int(r[2]) for r in rows) == 5
    assert all("Old Timer" not in r[0] for r in rows)  # inactive without leads: no row
    html = client.get(f"/reports?{ARGS}").get_data(as_text=True)
    assert re.search(r"Gone Away <span[^>]*>\(inactive\)</span>", html)
    assert "2 leads unassigned" in html and "<em>Unassigned</em>" in html


def test_csv_exports_start_with_a_bom_for_excel(client, auth, admin, db):
    auth.as_user(admin)
    LeadFactory(condition=ConditionFactory(name="Distonía"), created_at=utc(10, 2, 12))
    db.session.commit()
    for name in reports.TABLES:
        body = client.get(f"/reports/export/{name}.csv?{ARGS}").get_data()
        assert body.startswith(b"\xef\xbb\xbf") and not body.startswith(b"\xef\xbb\xbf\xef\xbb\xbf"), name
    body = client.get(f"/reports/export/conditions.csv?{ARGS}").get_data()
    assert "Distonía".encode() in body


def test_the_page_explains_the_numbers_itself(client, auth, admin, world):
    auth.as_user(admin)
    html = client.get(f"/reports?{ARGS}").get_data(as_text=True)
    assert "docs/reports.md" not in html
    assert "How the numbers are counted" in html and "booked ÷ assigned" in html


def test_charts_keep_their_design_size(client, auth, admin, world):
    """The SVGs say their size and the page does not stretch them past it (fonts stay 12 px)."""
    auth.as_user(admin)
    for name, size in (("leads-per-day", (900, 320)), ("funnel", (520, 250))):
        svg = client.get(f"/reports/chart/{name}.svg?{ARGS}").get_data(as_text=True)
        root = re.search(r"<svg[^>]*>", svg).group(0)
        assert f'width="{size[0]}"' in root and f'height="{size[1]}"' in root, root
    html = client.get(f"/reports?{ARGS}").get_data(as_text=True)
    assert html.count('class="report-chart w-auto mw-100 mx-auto"') == 2


def test_csv_cells_cannot_start_a_formula(client, auth, admin, db):
    auth.as_user(admin)
    LeadFactory(condition=ConditionFactory(name='=HYPERLINK("http://x")'), created_at=utc(10, 2, 12))
    LeadFactory(condition=ConditionFactory(name="@SUM(A1)"), created_at=utc(10, 2, 12))
    UserFactory(name="-Minus Person")
    UserFactory(name="+Plus Person")
    db.session.commit()
    conditions = [r[0] for r in read_csv(client.get(f"/reports/export/conditions.csv?{ARGS}"))[1:]]
    assert sorted(conditions) == ['\'=HYPERLINK("http://x")', "'@SUM(A1)"]
    names = [r[0] for r in read_csv(client.get(f"/reports/export/specialists.csv?{ARGS}"))[1:]]
    assert sorted(names) == ["'+Plus Person", "'-Minus Person", "Unassigned"]
    assert reports.csv_cell(-3) == -3 and reports.csv_cell("\tx") == "'\tx" and reports.csv_cell("a=b") == "a=b"


def test_reports_are_admins_only(client, auth, specialist, world):
    for url in (f"/reports?{ARGS}", f"/reports/export/funnel.csv?{ARGS}", f"/reports/chart/funnel.svg?{ARGS}"):
        resp = client.get(url)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    auth.as_user(specialist)
    for url in (f"/reports?{ARGS}", f"/reports/export/funnel.csv?{ARGS}", f"/reports/chart/funnel.svg?{ARGS}"):
        assert client.get(url).status_code == 403


def test_nav_shows_reports_to_admins_only(client, auth, specialist, admin):
    auth.as_user(specialist)
    assert 'href="/reports"' not in client.get("/queue").get_data(as_text=True)
    auth.logout()
    auth.as_user(admin)
    assert 'href="/reports"' in client.get("/queue").get_data(as_text=True)


# --- speed-to-lead resolution ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, reported",
    [
        (0, 0),
        (59, 0),
        (61, 60),
        (7199, 7140),  # 1 h 59 min: whole minutes below 2 h
        (7200, 7200),
        (8099, 7200),  # 2 h 14 min 59 s: quarter hours below 24 h
        (8100, 8100),
        (86399, 85500),
        (86400, 86400),  # whole hours below 7 days
        (90061, 90000),
        (604799, 601200),
        (604800, 604800),  # whole days beyond
        (704800, 691200),
    ],
)
def test_first_contact_buckets(seconds, reported):
    assert reports.first_contact_bucket(seconds) == reported


def test_speed_to_lead_is_reported_in_buckets_live_and_from_rollups(db):
    """Nearest rank over the bucketed values: ranks 3 and 5 of 5 leads (hand-computed)."""
    ann = UserFactory(name="Ann Able")
    for k, seconds in enumerate([59, 8099, 90061, 7199, 704800]):
        created = utc(10, 2, 12) + timedelta(minutes=k)
        LeadFactory(created_at=created, assignee=ann, first_contact_at=created + timedelta(seconds=seconds))
    db.session.commit()
    # buckets: 0, 7200, 90000, 7140, 691200 -> sorted 0, 7140, 7200, 90000, 691200
    live = reports.speed_to_lead(db.session, RANGE)
    assert (live.contacted, live.median_seconds, live.p90_seconds) == (5, 7200, 691200)
    assert reports.median_first_contact_by_assignee(db.session, RANGE) == {ann.id: 7200}
    counts = rolled_up(db)
    rolled = reports.speed_to_lead(db.session, RANGE, counts=counts)
    assert (rolled.contacted, rolled.median_seconds, rolled.p90_seconds) == (5, 7200, 691200)
    assert reports.median_first_contact_by_assignee(db.session, RANGE, counts) == {ann.id: 7200}


# --- rollups ---------------------------------------------------------------------------------------


def rolled_up(db, tz=TZ) -> report_rollups.RollupCounts:
    report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), tz)
    db.session.commit()
    return report_rollups.RollupCounts(db.session, tz)


def rollup_rows(db) -> dict[str, list[tuple]]:
    """Every rollup row (without ids), sorted: to compare two builds."""
    out = {}
    for model in report_rollups.LEAD_TABLES + report_rollups.BOOKING_TABLES:
        t = model.__table__
        cols = [c for c in t.c if c.name != "id"]
        out[t.name] = sorted(db.session.execute(sa.select(*cols)).all(), key=repr)
    return out


def changes_waiting(db) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(ReportChange))


RANGES = [
    RANGE,
    ReportRange(date(2026, 10, 1), date(2026, 10, 1), TZ),
    ReportRange(date(2026, 10, 5), date(2026, 10, 7), TZ),
    ReportRange(date(2026, 9, 1), date(2026, 11, 30), TZ),  # lead 9 and 10 too
    ReportRange(date(2026, 8, 1), date(2026, 8, 5), TZ),  # empty
]


def test_rollups_equal_the_live_queries_on_the_fixture(db, world):
    assert db.session.get(ReportRollupState, 1) is None  # the migration leaves them unbuilt
    counts = rolled_up(db)  # the first refresh builds every day
    assert db.session.get(ReportRollupState, 1).timezone == TZ and changes_waiting(db) == 0
    for rng in RANGES:
        assert reports.build_report(db.session, rng, counts) == reports.build_report(db.session, rng), rng
        for name in reports.TABLES:
            assert reports.table(db.session, rng, name, counts) == reports.table(db.session, rng, name), (rng, name)
    # and the hand-computed numbers, read from the rollups
    f = reports.funnel(db.session, RANGE, counts)
    assert f.stages == {"new": 8, "contacted": 5, "booked": 3, "completed": 1}
    assert (f.open, f.lost, f.unassigned, f.waiting) == (5, 2, 1, 1)
    s = reports.speed_to_lead(db.session, RANGE, counts=counts)
    assert (s.contacted, s.waiting, s.median_seconds, s.p90_seconds) == (7, 1, 900, 3600)
    assert reports.utilisation(db.session, RANGE, counts)[0]["bookings"] == 2
    with pytest.raises(ValueError, match="rollups are by America/New_York days"):
        counts.per_day(ReportRange(RANGE.start, RANGE.end, "UTC"))


def test_refresh_is_idempotent_and_rebuilds_only_what_changed(db, world):
    rolled_up(db)
    built = rollup_rows(db)
    again = report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), TZ)
    assert not again.ran and str(again) == "report rollups: up to date"
    full = report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), TZ, full=True)
    db.session.commit()
    assert full.full and rollup_rows(db) == built
    # A column no report reads moves nothing; a reported one marks its lead's local day.
    lead2 = world["leads"][2]
    lead2.priority = 5
    lead2.sla_due_at = utc(10, 2, 5)
    db.session.commit()
    assert changes_waiting(db) == 0
    lead2.condition = None
    db.session.commit()
    assert changes_waiting(db) == 1
    result = report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), TZ)
    db.session.commit()
    assert (result.full, result.changes, result.lead_days, result.booking_days) == (False, 1, 1, 0)
    assert "1 lead day(s)" in str(result)
    assert changes_waiting(db) == 0


def test_a_new_time_zone_rebuilds_everything(db, world):
    rolled_up(db)
    pacific = rolled_up(db, "America/Los_Angeles")
    assert db.session.get(ReportRollupState, 1, populate_existing=True).timezone == "America/Los_Angeles"
    rng = ReportRange(RANGE.start, RANGE.end, "America/Los_Angeles")
    assert reports.build_report(db.session, rng, pacific) == reports.build_report(db.session, rng)
    assert dict(reports.leads_per_day(db.session, rng, pacific))[date(2026, 10, 1)] == 2  # lead 9: 20:00 PDT


def assert_page_equals_live(client, db, args=ARGS, rng=RANGE):
    """Every table as the page serves it (CSV, from the rollups) equals the live queries now."""
    assert client.get(f"/reports?{args}").status_code == 200
    for name in reports.TABLES:
        served = read_csv(client.get(f"/reports/export/{name}.csv?{args}"))
        header, rows = reports.table(db.session, rng, name)
        assert served == list(csv.reader(io.StringIO(reports.to_csv(header, rows).removeprefix(reports.CSV_BOM)))), name


def test_the_page_follows_every_change_without_a_manual_refresh(client, auth, admin, db, world):
    from crm.services import booking, routing, workflow
    from crm.services.geocoding import geocode_patient

    auth.as_user(admin)
    assert_page_equals_live(client, db)  # the first page builds the rollups
    leads, doc = world["leads"], world["doc"]
    assert "Unknown" not in client.get(f"/reports/export/states.csv?{ARGS}").get_data(as_text=True)

    # a status change
    workflow.change_status(leads[2], LeadStatus.CONTACTED, actor=admin, now=utc(10, 2, 9))
    db.session.commit()
    assert changes_waiting(db) > 0
    assert_page_equals_live(client, db)
    assert changes_waiting(db) == 0

    # a new appointment (lead 3 becomes booked, Dana gets a booking on Oct 9), from its match list
    from tests.test_queue_helpers import match_result

    leads[3].match_result = match_result(doc)
    doc.registrations.append(Registration(state="NY", number="NY-1", expires_on=date(2027, 10, 1)))  # lead 3 is in NY
    appt = booking.book(
        leads[3],
        physician_id=doc.id,
        starts_at=utc(10, 9, 15),
        mode=VisitMode.IN_PERSON,
        actor=admin,
        now=utc(10, 8, 9),
    )
    db.session.commit()
    assert_page_equals_live(client, db)
    assert read_csv(client.get(f"/reports/export/utilisation.csv?{ARGS}"))[1][1:6:4] == ["Dana Weekly, MD", "3"]

    # a cancelled one (lead 4's appointment: the lead goes back to contacted, still "booked" in the funnel)
    lead4_appt = db.session.scalars(sa.select(Appointment).where(Appointment.lead_id == leads[4].id)).one()
    booking.set_outcome(lead4_appt, "cancelled", actor=admin, now=utc(10, 6, 9))
    db.session.commit()
    assert_page_equals_live(client, db)
    assert appt.id != lead4_appt.id

    # an assignment change by a Core UPDATE (get next lead) and a reassignment by an admin
    cy = db.session.scalars(sa.select(User).where(User.name == "Cy Idle")).one()
    assert routing.claim_next(cy, now=utc(10, 9, 9)).id == leads[1].id
    db.session.commit()
    assert_page_equals_live(client, db)
    routing.assign(leads[8], cy, actor=admin, now=utc(10, 9, 9))
    db.session.commit()
    assert_page_equals_live(client, db)

    # a patient located by geocoding: state from the ZIP
    pending = PatientFactory(state=None, zip="10001", city="", latitude=None, longitude=None)
    pending.geocode_status = GeocodeStatus.PENDING
    LeadFactory(patient=pending, created_at=utc(10, 9, 12))
    db.session.commit()
    assert_page_equals_live(client, db)
    assert "Unknown" in client.get(f"/reports/export/states.csv?{ARGS}").get_data(as_text=True)
    assert geocode_patient(pending, utc(10, 9, 13)).ok and pending.state == "NY"
    db.session.commit()
    assert_page_equals_live(client, db)
    assert "Unknown" not in client.get(f"/reports/export/states.csv?{ARGS}").get_data(as_text=True)

    # raw SQL (no ORM, no updated_at) is seen too
    db.session.execute(sa.text("UPDATE leads SET condition_id = NULL WHERE id = :id"), {"id": leads[5].id})
    db.session.commit()
    assert_page_equals_live(client, db)

    # a lead created today shows on the default page (and its chart) at once
    LeadFactory(created_at=datetime.now(UTC) - timedelta(seconds=1))
    db.session.commit()
    today = reports.today_in(TZ)
    default = reports.default_range(today, TZ)
    assert_page_equals_live(client, db, args="", rng=default)
    assert dict(reports.leads_per_day(db.session, default))[today] >= 1
    svg = client.get("/reports/chart/leads-per-day.svg").get_data(as_text=True)
    assert "<svg" in svg


def test_a_test_delivery_lead_leaves_every_report_live_and_rolled_up_once_flagged(db, world):
    """A lead flagged ``is_test`` (an admin's test delivery, crm/services/sources.py) after the rollups
    counted it: the flag's trigger marks its day and its appointment's start day, and the next refresh
    gives the report it had before the lead arrived, every table, rollups and live alike."""
    from crm.services import sources as source_service

    counts = rolled_up(db)
    before = reports.build_report(db.session, RANGE, counts)
    tables = {name: reports.table(db.session, RANGE, name) for name in reports.TABLES}
    assert before == reports.build_report(db.session, RANGE)
    created = utc(10, 2, 14)
    test_lead = LeadFactory(
        patient=PatientFactory(state="TX"),
        created_at=created,
        status=LeadStatus.BOOKED,
        assignee=world["ann"],
        first_contact_at=created + timedelta(seconds=30),
        source_kind=LeadSourceKind.WEBHOOK,
        webhook_source=WebhookSourceFactory(name="Test form"),
    )
    db.session.add(
        Appointment(
            lead=test_lead, physician=world["doc"], starts_at=utc(10, 9, 15), mode=VisitMode.IN_PERSON,
            status=AppointmentStatus.BOOKED,
        )
    )  # fmt: skip
    db.session.commit()
    counted = reports.build_report(db.session, RANGE, rolled_up(db))
    assert counted.funnel.stages["new"] == 9 and counted != before  # a real lead until flagged

    assert source_service.mark_test_lead(test_lead.id)
    db.session.commit()
    assert changes_waiting(db) == 2  # the lead's day and its appointment's start day
    result = report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), TZ)
    db.session.commit()
    assert (result.lead_days, result.booking_days) == (1, 1)
    counts = report_rollups.RollupCounts(db.session, TZ)
    for rng in RANGES:
        assert reports.build_report(db.session, rng, counts) == reports.build_report(db.session, rng), rng
    assert reports.build_report(db.session, RANGE, counts) == before
    assert {name: reports.table(db.session, RANGE, name, counts) for name in reports.TABLES} == tables
    assert {name: reports.table(db.session, RANGE, name) for name in reports.TABLES} == tables
    # A full rebuild (first build, new time zone) leaves it out as well.
    report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), TZ, full=True)
    db.session.commit()
    assert reports.build_report(db.session, RANGE, counts) == before


def test_dst_boundary_days(db):
    """Fall back (Nov 1 2026, 25 hours) and spring forward (Mar 8 2026, 23 hours) in New York."""
    doc = PhysicianFactory(last_name="Clock", weekly_capacity=7)
    plan = [
        (datetime(2026, 11, 1, 3, 59, tzinfo=UTC), date(2026, 10, 31)),  # 23:59 EDT
        (datetime(2026, 11, 1, 4, 0, tzinfo=UTC), date(2026, 11, 1)),  # 00:00 EDT
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), date(2026, 11, 1)),  # 01:30 EDT, first time
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), date(2026, 11, 1)),  # 01:30 EST, second time
        (datetime(2026, 11, 2, 4, 30, tzinfo=UTC), date(2026, 11, 1)),  # 23:30 EST
        (datetime(2026, 11, 2, 5, 0, tzinfo=UTC), date(2026, 11, 2)),  # 00:00 EST
        (datetime(2026, 3, 8, 4, 59, tzinfo=UTC), date(2026, 3, 7)),  # 23:59 EST
        (datetime(2026, 3, 8, 5, 0, tzinfo=UTC), date(2026, 3, 8)),  # 00:00 EST
        (datetime(2026, 3, 9, 3, 59, tzinfo=UTC), date(2026, 3, 8)),  # 23:59 EDT
        (datetime(2026, 3, 9, 4, 0, tzinfo=UTC), date(2026, 3, 9)),  # 00:00 EDT
    ]
    for created, _day in plan:
        lead = LeadFactory(created_at=created, first_contact_at=created + timedelta(minutes=5))
        db.session.add(
            Appointment(lead=lead, physician=doc, starts_at=created, mode=VisitMode.IN_PERSON, created_at=created)
        )
    db.session.commit()
    counts = rolled_up(db)
    for rng, expected in [
        (
            ReportRange(date(2026, 10, 31), date(2026, 11, 2), TZ),
            {date(2026, 10, 31): 1, date(2026, 11, 1): 4, date(2026, 11, 2): 1},
        ),
        (
            ReportRange(date(2026, 3, 7), date(2026, 3, 9), TZ),
            {date(2026, 3, 7): 1, date(2026, 3, 8): 2, date(2026, 3, 9): 1},
        ),
    ]:
        assert dict(reports.leads_per_day(db.session, rng)) == expected
        assert dict(reports.leads_per_day(db.session, rng, counts)) == expected
        assert reports.build_report(db.session, rng, counts) == reports.build_report(db.session, rng)
    fall_back = ReportRange(date(2026, 11, 1), date(2026, 11, 1), TZ)
    assert reports.utilisation(db.session, fall_back, counts)[0]["bookings"] == 4


def test_concurrent_refreshes_count_once(app, db, world):
    rolled_up(db)
    for n in (1, 2, 7):
        world["leads"][n].condition = None
    db.session.commit()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def refresh():
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                results.append(report_rollups.refresh_report_rollups(_db.session, datetime.now(UTC), TZ))
                _db.session.commit()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(r.changes for r in results) == [0, 3]  # one took the changes, the other found none
    counts = report_rollups.RollupCounts(db.session, TZ)
    assert reports.build_report(db.session, RANGE, counts) == reports.build_report(db.session, RANGE)
    assert reports.by_condition(db.session, RANGE, counts)[0] == {
        "label": "Not specified",
        "leads": 4,
        "share_pct": 50.0,
    }


def test_a_page_answers_from_the_live_tables_while_another_refresh_holds_the_lock(
    client, auth, admin, db, world, monkeypatch
):
    from crm.reports import routes

    auth.as_user(admin)
    assert "75 %" not in client.get(f"/reports?{ARGS}").get_data(as_text=True)  # contacted: 5 of 8
    world["leads"][1].status = LeadStatus.CONTACTED
    db.session.commit()
    monkeypatch.setattr(routes, "REFRESH_WAIT_SECONDS", 0.2)
    holder = _db.engine.connect()
    try:
        holder.begin()
        if holder.dialect.name == "postgresql":
            holder.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": report_rollups.ADVISORY_KEY})
        else:  # SQLite: the one writer lock
            holder.execute(sa.text("UPDATE report_rollup_state SET id = id WHERE id = -1"))
        resp = client.get(f"/reports?{ARGS}")
    finally:
        holder.rollback()
        holder.close()
    assert resp.status_code == 200
    assert "75 %" in resp.get_data(as_text=True)  # contacted 6 of 8: the live numbers, not the stale rollups
    assert changes_waiting(db) > 0  # left for the next refresh
    assert_page_equals_live(client, db)
    assert changes_waiting(db) == 0


def test_the_job_and_the_command_refresh(app, db, world):
    from crm.jobs import JOBS_BY_ID, run_job

    job = JOBS_BY_ID["report_rollups"]
    assert job.seconds == 60
    with app.test_request_context():
        run = run_job(job)
    assert run.ok and "full rebuild" in run.summary
    counts = report_rollups.RollupCounts(db.session, TZ)
    assert reports.build_report(db.session, RANGE, counts) == reports.build_report(db.session, RANGE)
    with app.test_request_context():
        assert run_job(job).summary == "report rollups: up to date"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crm", "reports", "refresh", "--all"])
    assert result.exit_code == 0, result.output
    assert "full rebuild, 7 lead day(s) and 4 booking day(s) rebuilt" in result.output
    result = runner.invoke(args=["crm", "reports", "refresh"])
    assert result.exit_code == 0 and "up to date" in result.output


def test_speed_to_lead_target_counts_business_hours_live_and_from_rollups(client, auth, admin, db, world):
    """Clock time counts a weekend; the target does not. A lead that arrived on Saturday night and
    was called at 08:05 on Monday met the 15-minute target; one the SLA sweep flagged missed it,
    whether it was attempted later or never. The sweep's flag reaches the rollups (trigger)."""
    from crm.services import sla

    bo = world["bo"]
    world["leads"][6].sla_breached_at = world["leads"][6].created_at + timedelta(minutes=16)  # attempted late
    saturday_night = datetime(2026, 10, 4, 3, 0, tzinfo=UTC)  # Sat Oct 3, 23:00 in New York
    LeadFactory(
        created_at=saturday_night,
        assignee=bo,
        status=LeadStatus.ATTEMPTING,
        first_contact_at=datetime(2026, 10, 5, 12, 5, tzinfo=UTC),  # Mon 08:05, before the target (09:15)
    )
    db.session.commit()
    counts = rolled_up(db)

    def target(c=None):
        s = reports.speed_to_lead(db.session, RANGE, counts=c)
        rows = {
            r.name: (r.sla_met, r.sla_missed, r.within_sla) for r in reports.specialists(db.session, RANGE, counts=c)
        }
        return s.sla_met, s.sla_missed, s.within_sla, rows["Bo Baker"], rows["Ann Able"]

    # Attempted: leads 2-8 and the weekend one; lead 6 was flagged; lead 1 is not decided yet.
    assert target() == target(counts) == (7, 1, 87.5, (4, 1, 80.0), (3, 0, 100.0))
    speed = reports.speed_to_lead(db.session, RANGE)
    assert speed.p90_seconds >= 86400  # the weekend lead, in clock time

    # The sweep flags lead 1 (never attempted, unassigned): a change the next refresh picks up.
    assert sla.sla_sweep(datetime.now(UTC), sla.SlaConfig())["breached"] >= 1
    db.session.commit()
    counts = rolled_up(db)
    assert target()[:3] == target(counts)[:3] == (7, 2, 77.8)
    assert reports.unassigned_row(reports.funnel(db.session, RANGE, counts)).sla_missed == 1

    auth.as_user(admin)
    page = " ".join(re.sub(r"<[^>]+>", "", client.get(f"/reports?{ARGS}").get_data(as_text=True)).split())
    assert "77.8 % within the 15-minute target (7 met · 2 missed)" in page
    assert "clock time, nights and weekends included" in page
    assert "while the desk is open (08:00–20:00, Mon–Fri, America/New_York) and the patient may be called" in page
    rows = read_csv(client.get(f"/reports/export/speed.csv?{ARGS}"))
    assert rows[0][-3:] == ["target_met", "target_missed", "within_target_pct"] and rows[1][-3:] == ["7", "2", "77.8"]


def test_idle_physicians_are_counted_on_the_page_and_listed_in_the_csv(client, auth, admin, db, world):
    """The utilisation table lists bookings, so a physician nobody was booked with never showed: the
    under-used ones a manager looks for. Counted on the page, listed at 0 % in the CSV; a
    deactivated physician without bookings is in neither."""
    PhysicianFactory(last_name="Retired", active=False)
    db.session.commit()
    assert reports.idle_physicians(db.session, RANGE) == 1  # "Unbooked"; Dana has bookings
    auth.as_user(admin)
    page = " ".join(re.sub(r"<[^>]+>", "", client.get(f"/reports?{ARGS}").get_data(as_text=True)).split())
    assert "1 active physician without an appointment in the range (0 %, listed in the CSV)" in page
    rows = read_csv(client.get(f"/reports/export/utilisation.csv?{ARGS}"))[1:]
    names = [r[1] for r in rows]
    assert names[0] == "Dana Weekly, MD" and any("Unbooked" in n for n in names[1:])
    assert not any("Retired" in n for n in names)
    unbooked = next(r for r in rows if "Unbooked" in r[1])
    assert unbooked[5:] == ["0", "0.0"]


def test_speed_to_lead_at_a_half_second_edge_is_the_same_on_both_databases(db):
    """7199.5 s rounds to 7200 s (2 h), as PostgreSQL's exact epoch does: SQLite's julianday float
    gave 7199.4999..., read as 1 h 59 min."""
    ann = UserFactory(name="Ann Able")
    created = utc(10, 2, 12)  # where SQLite's float difference came out just below the half
    LeadFactory(created_at=created, assignee=ann, first_contact_at=created + timedelta(seconds=7199.5))
    db.session.commit()
    live = reports.speed_to_lead(db.session, RANGE)
    assert (live.median_seconds, live.p90_seconds) == (7200, 7200)
    assert reports.median_first_contact_by_assignee(db.session, RANGE) == {ann.id: 7200}


def test_a_funnel_stage_once_reached_stays_reached(db):
    """A patient reached and then lost as not eligible was contacted; a lead booked, cancelled, lost and
    reopened was booked. The funnel read stages from the current status and lost both."""
    doc = PhysicianFactory()
    created = utc(10, 2, 12)
    reached = created + timedelta(minutes=5)
    LeadFactory(created_at=created, status=LeadStatus.LOST, lost_reason=LostReason.NOT_ELIGIBLE, reached_at=reached)
    reopened = LeadFactory(created_at=created, status=LeadStatus.ATTEMPTING, reached_at=reached)
    db.session.add(
        Appointment(
            lead=reopened,
            physician=doc,
            starts_at=utc(10, 4, 15),
            mode=VisitMode.IN_PERSON,
            status=AppointmentStatus.CANCELLED,
            created_at=reached,
        )
    )
    LeadFactory(created_at=created, status=LeadStatus.ATTEMPTING)  # never reached
    db.session.commit()
    expected = {"new": 3, "contacted": 2, "booked": 1, "completed": 0}
    assert reports.funnel(db.session, RANGE).stages == expected
    assert reports.funnel(db.session, RANGE, counts=rolled_up(db)).stages == expected


def test_reached_at_is_set_once_by_the_first_move_to_contacted_booked_or_completed(db):
    from crm.services.workflow import change_status

    lead = LeadFactory(status=LeadStatus.ATTEMPTING)
    first = utc(10, 2, 12)
    change_status(lead, LeadStatus.CONTACTED, actor=None, now=first)
    change_status(lead, LeadStatus.LOST, actor=None, reason="not_eligible", now=first + timedelta(hours=1))
    change_status(lead, LeadStatus.ATTEMPTING, actor=None, now=first + timedelta(hours=2))  # reopened
    change_status(lead, LeadStatus.CONTACTED, actor=None, now=first + timedelta(hours=3))
    assert lead.reached_at == first


def test_the_migration_fills_reached_at_from_the_timeline(tmp_path):
    from flask_migrate import downgrade, upgrade

    from crm.extensions import db as _db
    from crm.models import LeadEvent
    from crm.models.enums import EventKind
    from tests.conftest import build_app

    app = build_app(f"sqlite:///{tmp_path / 'migrate.sqlite3'}")
    with app.app_context():
        upgrade()
        t = utc(10, 2, 12)
        lost = LeadFactory(status=LeadStatus.LOST, lost_reason=LostReason.NOT_ELIGIBLE, created_at=t)
        _db.session.add_all(
            [
                LeadEvent(
                    lead=lost, kind=EventKind.STATUS_CHANGED, data={"from": "new", "to": "attempting"}, created_at=t
                ),
                LeadEvent(
                    lead=lost,
                    kind=EventKind.STATUS_CHANGED,
                    data={"from": "attempting", "to": "contacted"},
                    created_at=t + timedelta(hours=1),
                ),
            ]
        )
        booked = LeadFactory(status=LeadStatus.BOOKED, created_at=t, first_contact_at=t + timedelta(minutes=3))
        never = LeadFactory(status=LeadStatus.ATTEMPTING, created_at=t, first_contact_at=t + timedelta(minutes=3))
        _db.session.commit()
        ids = lost.id, booked.id, never.id
        downgrade(revision="0021_physicians_state_only")
        upgrade()
        got = dict(_db.session.execute(sa.text("SELECT id, reached_at FROM leads")).all())
        assert [got[i] and got[i][:19] for i in ids] == ["2026-10-02 13:00:00", "2026-10-02 12:03:00", None]
        assert _db.session.execute(sa.text("SELECT count(*) FROM report_rollup_state")).scalar() == 0
        _db.session.remove()
        _db.engine.dispose()
