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
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from crm.models import Appointment, AuditLog
from crm.models.enums import AppointmentStatus, LeadSourceKind, LeadStatus, LostReason, VisitMode
from crm.services import reports
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
    assert client.get(f"/reports/export/funnel.csv?{query}").status_code == 400
    assert client.get(f"/reports/chart/funnel.svg?{query}").status_code == 400


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


def read_csv(resp) -> list[list[str]]:
    return list(csv.reader(io.StringIO(resp.get_data(as_text=True))))


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
    ]
    assert rows[1:] == [
        ["Bo Baker", "4", "3", "2", "50.0", "15.0"],
        ["Ann Able", "3", "2", "1", "33.3", "10.0"],
        ["Cy Idle", "0", "0", "0", "", ""],
    ]
    entry = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "export")).one()
    assert (entry.user_id, entry.object_type, entry.object_id) == (admin.id, "report", "specialists")
    assert entry.detail == {"table": "specialists", "from": "2026-10-01", "to": "2026-10-10", "rows": 3}

    expected = {
        "daily": ["2026-10-01", "2"],
        "funnel": ["booked", "3", "60.0", "37.5"],
        "speed": ["7", "1", "15.0", "60.0"],
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
    assert sorted(names) == ["'+Plus Person", "'-Minus Person"]
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
