"""/reports render time with many leads (SPEC 11 style; target p95 < 300 ms at 1,000,000 leads).

    .venv/bin/python bench/reports.py --leads 1000000 [--requests 40] [--reuse]

``--reuse`` skips steps 1-2 and measures the database an earlier run built.

Database: TEST_DATABASE_URL / DATABASE_URL, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test_reports`` (its public schema is
dropped and rebuilt; a ``sqlite:///...`` URL works too, loaded with executemany). The script:

1. builds the schema with the real migrations (``flask_migrate.upgrade``, as tests do);
2. bulk-loads N patients and N leads spread over the last 90 days (COPY on PostgreSQL):
   51 states, 20 conditions, 4 sources (form, manual, two webhook sources), 20 specialists;
   statuses new 8 %, attempting 12 %, contacted 15 %, booked 12 %, completed 23 %, lost 30 %
   (mixed reasons); first contact 1 min..2 days after creation for everything past "new";
   an appointment for every booked/completed lead and a cancelled one for some contacted
   and lost leads, with 400 physicians (weekly capacity 5..40);
3. builds the report rollups from scratch (``refresh_report_rollups(full=True)``, what the first
   refresh after the migration does; also with ``--reuse``) and times it, then VACUUM ANALYZE on
   PostgreSQL (what autovacuum, off on the benchmark cluster, does soon after such bulk changes);
4. signs in as an admin with the Flask test client and renders ``/reports`` ``--requests``
   times for the default range (last 30 days) and for the last 90 days, plus the two chart
   SVGs for the default range;
5. ``--requests`` times: reassigns ``--touch`` leads spread over ``--touch-days`` days of the last
   two weeks (today included) in another connection, as staff would, then times the first
   ``/reports`` after it: that page pays for rebuilding the rollups of those days;
6. prints one JSON object: ``database, leads, load_seconds, rollup_build_seconds,
   reports_p50_ms, reports_p95_ms`` (default range), the same for 90 days, the charts and the
   pages after changes, and the number of leads in each range.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# bench/queue.py would shadow the stdlib "queue" module (psycopg imports it): drop bench/ from the path.
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0]) and not p.endswith("/bench")]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import fresh_schema, make_app  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test_reports"
SPECIALISTS = 20
CONDITIONS = 20
PHYSICIANS = 400
PASSWORD = "bench-reports-password"
STATES = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC",
    "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
]  # fmt: skip
# Big states get more leads, like real traffic.
STATE_WEIGHTS = [8 if s in ("CA", "FL", "NY", "TX", "PA", "IL", "OH", "MI") else 1 for s in STATES]
STATUSES = ["new", "attempting", "contacted", "booked", "completed", "lost"]
STATUS_WEIGHTS = [8, 12, 15, 12, 23, 30]
LOST_REASONS = ["unreachable", "not_interested", "price", "chose_elsewhere", "not_eligible", "spam"]
SPAN_SECONDS = 90 * 86400

PATIENT_COLS = [
    "id", "first_name", "last_name", "email", "phone", "age_confirmed", "street", "city", "state", "zip",
    "geocode_status", "geocode_attempts", "timezone", "preferred_contact_method", "preferred_contact_time",
    "language", "created_at", "updated_at",
]  # fmt: skip
LEAD_COLS = [
    "id", "patient_id", "condition_id", "condition_text", "message", "preferred_mode", "source_kind",
    "webhook_source_id", "landing_page_url", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "status", "lost_reason", "assignee_id", "assigned_at", "first_contact_at", "last_activity_at",
    "attempts", "priority", "closed_at", "version", "created_at", "updated_at",
]  # fmt: skip
APPT_COLS = [
    "id", "lead_id", "physician_id", "starts_at", "duration_minutes", "mode", "status", "notes", "created_at",
]  # fmt: skip


def rows(n: int, now: datetime, ids: dict, seed: int = 7):
    """Yield (patient, lead, appointment-or-None); datetimes naive UTC like UTCDateTime stores them."""
    rng = random.Random(seed)
    naive_now = now.replace(tzinfo=None)
    states = rng.choices(STATES, STATE_WEIGHTS, k=4096)
    statuses = rng.choices(STATUSES, STATUS_WEIGHTS, k=4096)
    sources = [("form", None)] * 6 + [("manual", None)] + [("webhook", s) for s in ids["sources"]] * 2
    appt_id = 0
    for i in range(1, n + 1):
        created = naive_now - timedelta(seconds=rng.randrange(SPAN_SECONDS) + 60)
        state = states[i % 4096]
        patient = (
            i, "Pat", f"Bench{i}", f"pat{i}@example.com", f"+1{2000000000 + i}", True, "", "", state, "",
            "ok", 0, "America/New_York", "phone", "any", "en", created, created,
        )  # fmt: skip
        status = statuses[rng.randrange(4096)]
        kind, source_id = sources[i % len(sources)]
        assignee = assigned = first = closed = reason = None
        attempts = 0
        if status != "new" or rng.random() < 0.5:
            assignee = ids["users"][rng.randrange(SPECIALISTS)]
            assigned = created + timedelta(seconds=rng.randrange(30, 3600))
        if status != "new":
            # Skewed: most first contacts within the hour, a long tail up to two days.
            delay = int(rng.expovariate(1 / 1500)) + 30
            first = created + timedelta(seconds=min(delay, 2 * 86400))
            attempts = rng.randrange(1, 5)
            if first > naive_now:
                first = naive_now
        if status in ("completed", "lost"):
            closed = created + timedelta(days=rng.randrange(1, 10))
            reason = LOST_REASONS[rng.randrange(len(LOST_REASONS))] if status == "lost" else None
        lead = (
            i, i, ids["conditions"][i % CONDITIONS], "", "", "either", kind, source_id, "", "", "", "", "", "",
            status, reason, assignee, assigned, first, first, attempts, 0, closed, 1, created, created,
        )  # fmt: skip
        appt = None
        cancelled = status in ("contacted", "lost") and rng.random() < 0.15
        if status in ("booked", "completed") or cancelled:
            appt_id += 1
            starts = created + timedelta(days=rng.randrange(1, 14), hours=rng.randrange(8))
            appt_status = {"booked": "booked", "completed": "completed"}.get(status, "cancelled")
            appt = (
                appt_id, i, ids["physicians"][rng.randrange(PHYSICIANS)], starts, 30,
                "telehealth" if i % 3 else "in_person", appt_status, "", created,
            )  # fmt: skip
        yield patient, lead, appt


def build(url: str, n: int, now: datetime) -> float:

    from crm.extensions import db
    from crm.models import Condition, Physician, User, WebhookSource
    from crm.models.enums import Credential, Role
    from crm.services.accounts import hash_password
    from crm.services.npi import check_digit

    app = make_app(url)
    with app.app_context():
        fresh_schema()
        pw = hash_password(PASSWORD)
        admin = User(email="admin@example.com", name="Bench Admin", role=Role.ADMIN, password_hash=pw)
        users = [
            User(email=f"spec{k}@example.com", name=f"Specialist {k:02d}", role=Role.SPECIALIST, password_hash=pw)
            for k in range(SPECIALISTS)
        ]
        conditions = [
            Condition(name=f"Condition {k:02d}", slug=f"condition-{k}", body="", summary="") for k in range(CONDITIONS)
        ]
        sources = [WebhookSource(name=f"Partner {k}", slug=f"partner-{k}", field_mapping={}) for k in range(2)]
        rng = random.Random(5)
        physicians = []
        for k in range(PHYSICIANS):
            stem = f"1{k:08d}"
            physicians.append(
                Physician(
                    npi=stem + check_digit(stem),
                    first_name="Doc",
                    last_name=f"Bench{k:03d}",
                    credential=Credential.MD,
                    state=STATES[k % len(STATES)],
                    weekly_capacity=rng.randrange(5, 41),
                )
            )
        db.session.add_all([admin, *users, *conditions, *sources, *physicians])
        db.session.commit()
        ids = {
            "users": [u.id for u in users],
            "conditions": [c.id for c in conditions],
            "sources": [s.id for s in sources],
            "physicians": [p.id for p in physicians],
        }
        started = time.perf_counter()
        if db.engine.dialect.name == "postgresql":
            _load_pg(db, n, now, ids)
        else:
            _load_sqlite(db, n, now, ids)
        return time.perf_counter() - started


def _load_pg(db, n, now, ids) -> None:
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            leads, appts = [], []
            with cur.copy(f"COPY patients ({', '.join(PATIENT_COLS)}) FROM STDIN") as copy:
                for patient, lead, appt in rows(n, now, ids):
                    copy.write_row(patient)
                    leads.append(lead)
                    if appt:
                        appts.append(appt)
            with cur.copy(f"COPY leads ({', '.join(LEAD_COLS)}) FROM STDIN") as copy:
                for lead in leads:
                    copy.write_row(lead)
            del leads
            with cur.copy(f"COPY appointments ({', '.join(APPT_COLS)}) FROM STDIN") as copy:
                for appt in appts:
                    copy.write_row(appt)
            cur.execute("SELECT setval('patients_id_seq', %s)", (n,))
            cur.execute("SELECT setval('leads_id_seq', %s)", (n,))
            cur.execute("SELECT setval('appointments_id_seq', %s)", (max(1, len(appts)),))
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in ("patients", "leads", "appointments"):
                cur.execute(f"VACUUM ANALYZE {table}")
        conn.autocommit = False
    finally:
        raw.close()


def _load_sqlite(db, n, now, ids) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA synchronous=OFF")

        def sql(table, cols):
            return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

        def iso(row):  # SQLAlchemy's SQLite DateTime storage format
            return tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row)

        batches: tuple[list, list, list] = ([], [], [])
        statements = (sql("patients", PATIENT_COLS), sql("leads", LEAD_COLS), sql("appointments", APPT_COLS))
        for patient, lead, appt in rows(n, now, ids):
            batches[0].append(iso(patient))
            batches[1].append(iso(lead))
            if appt:
                batches[2].append(iso(appt))
            if len(batches[0]) >= 50_000:
                for stmt, batch in zip(statements, batches, strict=True):
                    cur.executemany(stmt, batch)
                    batch.clear()
        for stmt, batch in zip(statements, batches, strict=True):
            cur.executemany(stmt, batch)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def timed(client, path: str, requests: int) -> dict:
    for _ in range(3):  # warm caches and plans
        assert client.get(path).status_code == 200, path
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        resp = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200, (path, resp.status_code)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
    }


def build_rollups(url: str) -> float:
    """Every day's rollups from scratch, timed; then what autovacuum would do (PostgreSQL)."""
    import sqlalchemy as sa

    from crm.extensions import db
    from crm.services.report_rollups import refresh_report_rollups

    app = make_app(url)
    with app.app_context():
        tz = app.config.get("BUSINESS_TIMEZONE") or "America/New_York"
        started = time.perf_counter()
        refresh_report_rollups(db.session, datetime.now(UTC), tz, full=True)
        db.session.commit()
        elapsed = time.perf_counter() - started
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # This cluster runs with autovacuum off: do what it would do after the bulk load,
                # the rollup build and the 1.4 million trigger rows the load wrote and the build consumed.
                tables = ("patients", "leads", "appointments", "report_changes", *sorted(ROLLUP_TABLES))
                for table in tables:
                    conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
        db.session.remove()
        db.engine.dispose()
    return elapsed


ROLLUP_TABLES = {
    "report_daily_leads",
    "report_daily_first_contact",
    "report_daily_sources",
    "report_daily_conditions",
    "report_daily_states",
    "report_daily_bookings",
}


def touch_batches(app, requests: int, touch: int, days: int, seed: int = 11) -> list[list[tuple[int, int]]]:
    """``requests`` batches of (lead id, new assignee): ``touch`` leads over ``days`` recent local days."""
    from crm.extensions import db
    from crm.models import Lead, User
    from crm.models.enums import Role
    from crm.services import reports

    rng = random.Random(seed)
    with app.app_context():
        tz = app.config.get("BUSINESS_TIMEZONE") or "America/New_York"
        today = reports.today_in(tz)
        users = db.session.scalars(db.select(User.id).where(User.role == Role.SPECIALIST)).all()
        by_day = {}
        for k in range(14):
            day = reports.ReportRange(today - timedelta(days=k), today - timedelta(days=k), tz)
            by_day[day.start] = db.session.scalars(
                db.select(Lead.id).where(Lead.created_at >= day.utc_from, Lead.created_at < day.utc_to)
            ).all()
        db.session.remove()
    batches = []
    for _ in range(requests):
        picked = [today] + rng.sample(sorted(d for d in by_day if d != today), days - 1)
        ids = [i for day in picked for i in rng.sample(by_day[day], min(len(by_day[day]), touch // days))]
        batches.append([(i, rng.choice(users)) for i in ids])
    return batches


def measure(url: str, requests: int, touch: int = 1000, touch_days: int = 5) -> dict:
    import sqlalchemy as sa

    from crm.extensions import db
    from crm.models import Lead
    from crm.services import reports

    app = make_app(url)
    client = app.test_client()
    resp = client.post("/login", data={"email": "admin@example.com", "password": PASSWORD})
    assert resp.status_code == 302, resp.status_code
    with app.app_context():
        tz = app.config.get("BUSINESS_TIMEZONE") or "America/New_York"
        today = reports.today_in(tz)
        default = reports.default_range(today, tz)
        wide = reports.ReportRange(today - timedelta(days=89), today, tz)
        counts = {}
        for name, rng in (("default", default), ("90d", wide)):
            counts[name] = db.session.scalar(
                db.select(db.func.count()).where(Lead.created_at >= rng.utc_from, Lead.created_at < rng.utc_to)
            )
        db.session.remove()
    q90 = f"?from={wide.start.isoformat()}&to={wide.end.isoformat()}"
    result = {
        "default": timed(client, "/reports", requests),
        "90d": timed(client, "/reports" + q90, requests),
        "chart_daily": timed(client, "/reports/chart/leads-per-day.svg", requests),
        "chart_funnel": timed(client, "/reports/chart/funnel.svg", requests),
    }
    batches = touch_batches(app, requests, touch, touch_days)
    after = []
    with app.app_context():
        writer = sa.create_engine(db.engine.url)  # another connection, like a specialist's request
    for batch in batches:
        with writer.begin() as conn:
            conn.execute(
                sa.text("UPDATE leads SET assignee_id = :uid, version = version + 1 WHERE id = :id"),
                [{"id": i, "uid": uid} for i, uid in batch],
            )
        started = time.perf_counter()
        resp = client.get("/reports")
        after.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200
    writer.dispose()
    after.sort()
    result["after_changes"] = {
        "p50_ms": round(statistics.median(after), 1),
        "p95_ms": round(after[min(len(after) - 1, int(len(after) * 0.95))], 1),
        "leads": len(batches[0]),
    }
    with app.app_context():
        db.engine.dispose()
    return {"counts": counts, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--reuse", action="store_true", help="measure the database as it is (built by an earlier run)")
    parser.add_argument("--touch", type=int, default=1000, help="leads changed before each after-changes page")
    parser.add_argument("--touch-days", type=int, default=5, help="over how many recent days (today included)")
    args = parser.parse_args()
    os.environ.setdefault("RATELIMIT_ENABLED", "false")
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_PG
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    now = datetime.now(UTC)
    load = 0.0 if args.reuse else build(url, args.leads, now)
    rollup = build_rollups(url)
    m = measure(url, args.requests, args.touch, args.touch_days)
    print(
        json.dumps(
            {
                "database": url.split(":", 1)[0].split("+")[0],
                "leads": args.leads,
                "requests": args.requests,
                "load_seconds": round(load, 1),
                "rollup_build_seconds": round(rollup, 1),
                "leads_in_default_range": m["counts"]["default"],
                "leads_in_90d_range": m["counts"]["90d"],
                "reports_p50_ms": m["default"]["p50_ms"],
                "reports_p95_ms": m["default"]["p95_ms"],
                "reports_90d_p50_ms": m["90d"]["p50_ms"],
                "reports_90d_p95_ms": m["90d"]["p95_ms"],
                "chart_daily_p95_ms": m["chart_daily"]["p95_ms"],
                "chart_funnel_p95_ms": m["chart_funnel"]["p95_ms"],
                "leads_touched_per_change": m["after_changes"]["leads"],
                "reports_after_changes_p50_ms": m["after_changes"]["p50_ms"],
                "reports_after_changes_p95_ms": m["after_changes"]["p95_ms"],
                "target_p95_ms": 300,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
