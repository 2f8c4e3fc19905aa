"""Queue page render time with many leads (SPEC 11: p95 < 100 ms at 1,000,000 leads).

    .venv/bin/python bench/queue.py --leads 1000000 [--requests 60] [--only postgresql|sqlite]

For each database (PostgreSQL from TEST_DATABASE_URL / DATABASE_URL, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test_queue``, whose public schema is
dropped and rebuilt; and a temporary SQLite file) the script:

1. builds the schema with the real migrations (``flask_migrate.upgrade``, as tests do);
2. bulk-loads N patients and N leads (PostgreSQL ``COPY``; SQLite ``executemany`` in
   batches): 10 % unassigned and new, 30 % open and assigned to one of 20 specialists
   (most with a follow-up between 3 days ago and 7 days ahead), 60 % closed;
3. signs in as one specialist with the Flask test client and renders each page
   ``--requests`` times (``--reuse`` skips steps 1-2 when the PostgreSQL database already holds
   the N leads of an earlier run): ``/queue?view=unassigned``, ``mine``, ``due`` and a search
   (rotating full name, last name, email and phone) — every render includes the
   navigation counts;
4. prints one JSON object per database: ``database, leads, requests, load_seconds``
   and ``p95_ms`` / ``median_ms`` per page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# This file is named like the stdlib "queue" module: drop bench/ from the import path
# before anything (psycopg, APScheduler) imports the real one. Nothing above imports it.
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0]) and not p.endswith("/bench")]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import fresh_schema, make_app  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test_queue"
SPECIALISTS = 20
PASSWORD = "bench-queue-password"
SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "nu", "pa", "re", "si", "to", "va", "wy", "za"]
FIRST = ["Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "June", "Kai", "Lena", "Milo", "Nia"]
STATES = ["FL", "NY", "CA", "TX", "AZ", "HI", "OH", "PA", "IL", "CO", "MI", "WA"]
TZ = {"AZ": "America/Phoenix", "HI": "Pacific/Honolulu", "CA": "America/Los_Angeles", "WA": "America/Los_Angeles"}

PATIENT_COLS = [
    "id", "first_name", "last_name", "email", "phone", "age_confirmed", "street", "city", "state", "zip",
    "geocode_status", "geocode_attempts", "timezone", "preferred_contact_method", "preferred_contact_time",
    "language", "created_at", "updated_at",
]  # fmt: skip
LEAD_COLS = [
    "id", "patient_id", "condition_id", "condition_text", "message", "preferred_mode", "source_kind",
    "landing_page_url", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "status",
    "lost_reason", "assignee_id", "assigned_at", "first_contact_at", "last_activity_at", "attempts",
    "next_follow_up_at", "priority", "closed_at", "version", "created_at", "updated_at",
]  # fmt: skip


def surnames() -> list[str]:
    names = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES[:7]]
    return [n.capitalize() for n in names]  # 2,023 surnames: ~500 patients each at 1M


def rows(n: int, now: datetime, condition_ids: list[int], user_ids: list[int], seed: int = 7):
    """Yield (patient_row, lead_row) tuples; datetimes naive UTC like UTCDateTime stores them."""
    rng = random.Random(seed)
    last_names = surnames()
    naive_now = now.replace(tzinfo=None)
    span = 730 * 86400
    for i in range(1, n + 1):
        first, last = FIRST[i % len(FIRST)], last_names[rng.randrange(len(last_names))]
        state = STATES[i % len(STATES)]
        created = naive_now - timedelta(seconds=rng.randrange(span) * (i / n) + 60)  # newer ids are newer
        patient = (
            i, first, last, f"{first.lower()}.{last.lower()}{i}@example.com", f"+1{2000000000 + i}", True, "", "",
            state, "", "ok", 0, TZ.get(state, "America/New_York"), "phone", "any", "en", created, created,
        )  # fmt: skip
        r = rng.random()
        assignee = assigned_at = first_contact = follow = closed = lost = None
        attempts, status = 0, "new"
        if r < 0.10:
            pass  # waiting in Unassigned
        else:
            assignee = user_ids[rng.randrange(len(user_ids))]
            assigned_at = created + timedelta(minutes=rng.randrange(1, 120))
            if r < 0.40:
                status = rng.choice(["new", "attempting", "attempting", "contacted", "booked"])
                if status != "new":
                    first_contact, attempts = assigned_at + timedelta(minutes=5), rng.randrange(1, 5)
                if rng.random() < 0.7:
                    follow = naive_now + timedelta(minutes=rng.randrange(-3 * 1440, 7 * 1440))
            else:
                status = "completed" if rng.random() < 0.4 else "lost"
                first_contact, attempts = assigned_at + timedelta(minutes=5), rng.randrange(1, 7)
                closed = assigned_at + timedelta(days=3)
                lost = "unreachable" if status == "lost" else None
        lead = (
            i, i, condition_ids[i % len(condition_ids)], "", "", "either", "form", "", "", "", "", "", "", status,
            lost, assignee, assigned_at, first_contact, first_contact, attempts, follow,
            1 if rng.random() < 0.01 else 0, closed, 1, created, created,
        )  # fmt: skip
        yield patient, lead


def build(url: str, n: int, now: datetime) -> float:
    """Schema by migrations, then the bulk load; returns the load time in seconds."""

    from crm.extensions import db
    from crm.models import Condition, User
    from crm.models.enums import Role
    from crm.services.accounts import hash_password

    app = make_app(url)
    with app.app_context():
        fresh_schema()
        pw = hash_password(PASSWORD)
        users = [
            User(email=f"spec{k}@example.com", name=f"Specialist {k}", role=Role.SPECIALIST, password_hash=pw)
            for k in range(SPECIALISTS)
        ]
        conditions = [Condition(name=f"Condition {k}", slug=f"condition-{k}", body="", summary="") for k in range(12)]
        db.session.add_all(users + conditions)
        db.session.commit()
        user_ids, condition_ids = [u.id for u in users], [c.id for c in conditions]
        # Reading the ids opened a transaction: end it, or its snapshot keeps VACUUM from marking
        # the loaded pages all-visible (and every index-only scan would visit the table).
        db.session.commit()
        started = time.perf_counter()
        if db.engine.dialect.name == "postgresql":
            _load_pg(db, n, now, condition_ids, user_ids)
        else:
            _load_sqlite(db, n, now, condition_ids, user_ids)
        return time.perf_counter() - started


def _load_pg(db, n, now, condition_ids, user_ids) -> None:
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            leads = []
            with cur.copy(f"COPY patients ({', '.join(PATIENT_COLS)}) FROM STDIN") as copy:
                for patient, lead in rows(n, now, condition_ids, user_ids):
                    copy.write_row(patient)
                    leads.append(lead)
            with cur.copy(f"COPY leads ({', '.join(LEAD_COLS)}) FROM STDIN") as copy:
                for lead in leads:
                    copy.write_row(lead)
            cur.execute("SELECT setval('patients_id_seq', %s)", (n,))
            cur.execute("SELECT setval('leads_id_seq', %s)", (n,))
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE patients")
            cur.execute("VACUUM ANALYZE leads")
        conn.autocommit = False
    finally:
        raw.close()


def _load_sqlite(db, n, now, condition_ids, user_ids) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        p_sql = f"INSERT INTO patients ({', '.join(PATIENT_COLS)}) VALUES ({', '.join('?' * len(PATIENT_COLS))})"
        l_sql = f"INSERT INTO leads ({', '.join(LEAD_COLS)}) VALUES ({', '.join('?' * len(LEAD_COLS))})"

        def iso(row):  # SQLAlchemy's SQLite DateTime storage format
            return tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row)

        batch_p, batch_l = [], []
        for patient, lead in rows(n, now, condition_ids, user_ids):
            batch_p.append(iso(patient))
            batch_l.append(iso(lead))
            if len(batch_p) >= 50_000:
                cur.executemany(p_sql, batch_p)
                cur.executemany(l_sql, batch_l)
                batch_p, batch_l = [], []
        if batch_p:
            cur.executemany(p_sql, batch_p)
            cur.executemany(l_sql, batch_l)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def measure(url: str, n: int, requests: int) -> dict:
    from crm.extensions import db

    app = make_app(url)
    last_names = surnames()
    rng = random.Random(11)
    client = app.test_client()
    resp = client.post("/login", data={"email": "spec0@example.com", "password": PASSWORD})
    assert resp.status_code == 302, resp.status_code
    searches = []
    for k in range(requests + 5):  # the last five warm up
        i = rng.randrange(1, n + 1)
        last = last_names[rng.randrange(len(last_names))]
        first = FIRST[i % len(FIRST)]
        searches.append(
            [f"{first} {last}", last, f"{first.lower()}.{last.lower()}{i}@example.com", f"+1{2000000000 + i}"][k % 4]
        )
    pages = {
        "unassigned": lambda k: "/queue?view=unassigned",
        "mine": lambda k: "/queue?view=mine",
        "due": lambda k: "/queue?view=due",
        "search": lambda k: "/queue?view=all&q=" + searches[k].replace("+", "%2B").replace(" ", "+"),
    }
    result: dict = {}
    for name, path in pages.items():
        for k in range(5):  # warm caches and prepared plans
            assert client.get(path(requests + k)).status_code == 200
        times = []
        for k in range(requests):
            started = time.perf_counter()
            resp = client.get(path(k))
            times.append((time.perf_counter() - started) * 1000)
            assert resp.status_code == 200, (name, resp.status_code)
        times.sort()
        result[name] = {
            "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
            "median_ms": round(statistics.median(times), 1),
        }
    with app.app_context():
        db.engine.dispose()
    return result


def already_built(url: str, n: int) -> bool:
    """True when ``url`` holds exactly the data this script builds for ``n`` (``--reuse``)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            leads = conn.execute(sa.text("SELECT count(*) FROM leads")).scalar()
            users = conn.execute(sa.text("SELECT count(*) FROM users WHERE email LIKE 'spec%@example.com'")).scalar()
        return leads == n and users == SPECIALISTS
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def run(database: str, url: str, n: int, requests: int, reuse: bool = False) -> dict:
    now = datetime.now(UTC)
    load = None if reuse and already_built(url, n) else round(build(url, n, now), 1)
    pages = measure(url, n, requests)
    return {
        "database": database,
        "leads": n,
        "requests": requests,
        "load_seconds": load,  # null: --reuse measured data built by an earlier run
        **{f"{name}_p95_ms": v["p95_ms"] for name, v in pages.items()},
        "median_ms": {name: v["median_ms"] for name, v in pages.items()},
        "target_p95_ms": 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--only", choices=["postgresql", "sqlite"])
    parser.add_argument(
        "--reuse", action="store_true", help="PostgreSQL: measure again without rebuilding if it holds N leads"
    )
    args = parser.parse_args()
    os.environ.setdefault("RATELIMIT_ENABLED", "false")
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_PG
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if args.only != "sqlite":
        print(json.dumps(run("postgresql", url, args.leads, args.requests, args.reuse)), flush=True)
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run("sqlite", f"sqlite:///{tmp}/queue.sqlite3", args.leads, args.requests)), flush=True)


if __name__ == "__main__":
    main()
