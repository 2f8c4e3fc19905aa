"""Physician matching with a large directory: the indexed path against a brute-force scan (SPEC 11).

    .venv/bin/python bench/match.py [--physicians 100000] [--leads 200] [--only sqlite|postgresql]

For each database (a fresh temporary SQLite file; and, when TEST_DATABASE_URL or DATABASE_URL
names a PostgreSQL database, a dedicated ``bench_match`` schema in it, created for the run and
dropped after it, first on the search path; no other table is touched) the script:

1. builds the schema with the real migrations and loads the state programs and conditions;
2. writes N physicians at real ZIP centroids (``zipcodes``, jittered up to ~3 miles) across every
   state, with registrations (own state; 10 % a second state; 5 % expired), conditions (30 %
   treat a subset), priorities, capacities, and recent bookings (1 per 5 physicians);
3. writes M patients at other ZIP centroids, each with a lead for a random condition;
4. matches every lead with the indexed path (``match_lead``) and with a brute-force scan of every
   physician (``match_lead(..., bruteforce=True)``) in the same process, and checks they are equal.

Prints a JSON list, one object per database: ``database, physicians, leads, indexed_p50_ms,
indexed_p95_ms, bruteforce_p50_ms, speedup, equal, rss_mb`` (plus diagnostics). Targets at 100,000
physicians: equal true, speedup >= 100, indexed p95 < 5 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ would come first on sys.path, and bench/queue.py would shadow the
# standard library's queue (urllib3, under geopy, imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_SCHEMA = "bench_match"  # dropped before and after the run; nothing else is touched
FIRST = "Olivia Liam Emma Noah Ava Elijah Sophia James Isabella Lucas Mia Mateo Amelia Levi Harper Ezra".split()
LAST = "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez".split()


def pg_url(base: str) -> str:
    """The given database, with our own schema first on the search path."""
    if base.startswith("postgres://"):
        base = "postgresql+psycopg://" + base[len("postgres://") :]
    elif base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://") :]
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, f"options=-csearch_path%3D{PG_SCHEMA}") if q)
    return urlunsplit(parts._replace(query=query))


def _pg_schema(url: str, create: bool) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        if create:
            conn.execute(sa.text(f"CREATE SCHEMA {PG_SCHEMA}"))
    engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _zips() -> list[dict]:
    from crm.services.geocoding import _zip_index

    return [z for z in _zip_index()[0].values() if z["zip_code_type"] == "STANDARD"]


def build(n_physicians: int, n_leads: int, seed: int, now: datetime) -> list[int]:
    """Write the directory and the leads with bulk inserts; returns the lead ids."""
    import sqlalchemy as sa

    from crm.extensions import db
    from crm.models import Appointment, Condition, Lead, Patient, Physician, Registration
    from crm.models.directory import physician_conditions
    from crm.seed.reference import load_reference_data
    from crm.services.npi import check_digit

    load_reference_data()
    db.session.commit()
    rng = random.Random(seed)
    zips = _zips()
    states = sorted({z["state"] for z in zips})
    condition_ids = list(db.session.scalars(sa.select(Condition.id).order_by(Condition.id)))
    today = now.date()

    def jitter(z: dict) -> tuple[float, float]:
        return float(z["lat"]) + rng.uniform(-0.04, 0.04), float(z["long"]) + rng.uniform(-0.04, 0.04)

    docs, regs, conds = [], [], []
    for i in range(1, n_physicians + 1):
        z = rng.choice(zips)
        lat, lon = jitter(z)
        stem = f"1{i:08d}"
        telehealth = rng.random() < 0.5
        docs.append(
            {
                "id": i,
                "npi": stem + check_digit(stem),
                "first_name": rng.choice(FIRST),
                "last_name": rng.choice(LAST),
                "credential": "MD",
                "practice_name": "",
                "street": "",
                "city": z["city"],
                "state": z["state"],
                "zip": z["zip_code"],
                "latitude": lat,
                "longitude": lon,
                "geocode_precision": "zip",
                "geocode_status": "ok",
                "timezone": z.get("timezone"),
                "phone": "",
                "email": "",
                "website": "",
                "offers_in_person": (not telehealth) or rng.random() < 0.7,
                "offers_telehealth": telehealth,
                "languages": ["en"],
                "accepting_new": rng.random() > 0.08,
                "active": rng.random() > 0.03,
                "priority": rng.choices([1, 2, 3], weights=[2, 6, 2])[0],
                "weekly_capacity": rng.choice([3, 5, 10, 20]),
                "notes": "",
                "created_at": now,
                "updated_at": now,
            }
        )
        expires = today + timedelta(days=rng.randint(30, 700))
        if rng.random() < 0.05:
            expires = today - timedelta(days=rng.randint(1, 300))
        regs.append({"physician_id": i, "state": z["state"], "number": f"R{i}", "expires_on": expires})
        if rng.random() < 0.10:
            other = rng.choice([s for s in states if s != z["state"]])
            regs.append({"physician_id": i, "state": other, "number": f"S{i}", "expires_on": expires})
        if rng.random() < 0.30:
            for cid in rng.sample(condition_ids, k=rng.randint(3, 8)):
                conds.append({"physician_id": i, "condition_id": cid})
    chunk = 5000
    for rows, table in ((docs, Physician.__table__), (regs, Registration.__table__), (conds, physician_conditions)):
        for k in range(0, len(rows), chunk):
            db.session.execute(table.insert(), rows[k : k + chunk])
    db.session.commit()

    lead_ids = []
    for j in range(n_leads):
        z = rng.choice(zips)
        lat, lon = jitter(z)
        patient = Patient(
            first_name="Bench",
            last_name=f"Patient{j}",
            email=f"bench{j}@example.com",
            zip=z["zip_code"],
            city=z["city"],
            state=z["state"],
            latitude=lat,
            longitude=lon,
            geocode_precision="zip",
            geocode_status="ok",
            timezone=z.get("timezone"),
            age_confirmed=True,
        )
        lead = Lead(patient=patient, condition_id=rng.choice(condition_ids), created_at=now)
        db.session.add(lead)
        db.session.flush()
        lead_ids.append(lead.id)
    # Recent bookings: capacity and the "fewest bookings" tie-break have something to count.
    appts = [
        {
            "lead_id": rng.choice(lead_ids),
            "physician_id": rng.randint(1, n_physicians),
            "starts_at": now + timedelta(days=rng.randint(1, 14)),
            "duration_minutes": 30,
            "mode": "in_person",
            "status": rng.choice(["booked", "confirmed", "cancelled"]),
            "notes": "",
            "created_at": now - timedelta(hours=rng.randint(1, 24 * 10)),
        }
        for _ in range(n_physicians // 5)
    ]
    for k in range(0, len(appts), chunk):
        db.session.execute(Appointment.__table__.insert(), appts[k : k + chunk])
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))  # fresh statistics, as a long-lived database has
    db.session.commit()
    return lead_ids


def run(name: str, url: str, n_physicians: int, n_leads: int, seed: int) -> dict:
    from flask_migrate import upgrade
    from sqlalchemy.orm import selectinload

    from config import Config
    from crm import create_app
    from crm.extensions import db
    from crm.models import Lead
    from crm.services.matching import comparable, match_lead

    app = create_app(Config, SQLALCHEMY_DATABASE_URI=url, LOG_LEVEL="WARNING")
    now = datetime.now(UTC)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        t0 = time.perf_counter()
        lead_ids = build(n_physicians, n_leads, seed, now)
        build_s = time.perf_counter() - t0
        leads = list(
            db.session.scalars(
                db.select(Lead)
                .where(Lead.id.in_(lead_ids))
                .order_by(Lead.id)
                .options(selectinload(Lead.patient), selectinload(Lead.condition))
            )
        )
        for lead in leads[:5]:  # warm caches and compiled statements
            match_lead(lead, now)
        indexed, brute, equal, mismatches = [], [], True, []
        radii: dict[str, int] = {}
        # Every indexed match first, then every scan: a scan loads the whole directory as objects,
        # and the garbage collection that leaves behind would otherwise land in the next indexed
        # match's time (a worker matching leads never does that in between).
        by_index = []
        for lead in leads:
            t = time.perf_counter()
            by_index.append(match_lead(lead, now))
            indexed.append((time.perf_counter() - t) * 1000)
        for lead, a in zip(leads, by_index, strict=True):
            t = time.perf_counter()
            b = match_lead(lead, now, bruteforce=True)
            brute.append((time.perf_counter() - t) * 1000)
            key = str(a["rules"]["radius_miles"])
            radii[key] = radii.get(key, 0) + 1
            if comparable(a) != comparable(b):
                equal = False
                mismatches.append(lead.id)
        db.session.remove()
        db.engine.dispose()
    p50, bf50 = statistics.median(indexed), statistics.median(brute)
    return {
        "database": name,
        "physicians": n_physicians,
        "leads": len(indexed),
        "indexed_p50_ms": round(p50, 3),
        "indexed_p95_ms": round(percentile(indexed, 0.95), 3),
        "indexed_max_ms": round(max(indexed), 3),
        "bruteforce_p50_ms": round(bf50, 1),
        "speedup": round(bf50 / p50, 1),
        "equal": equal,
        "mismatched_leads": mismatches[:10],
        "radius_miles_histogram": radii,
        "build_seconds": round(build_s, 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--physicians", type=int, default=100_000)
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    args = parser.parse_args()
    if args.physicians < 1 or args.leads < 1:
        parser.error("--physicians and --leads must be positive")

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-match-") as tmp:
        if args.only in (None, "sqlite"):
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            results.append(run("sqlite", url, args.physicians, args.leads, args.seed))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress: a long run
        pg_base = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
        if args.only in (None, "postgresql") and pg_base.startswith(("postgres", "postgresql")):
            url = pg_url(pg_base)
            _pg_schema(url, create=True)
            try:
                results.append(run("postgresql", url, args.physicians, args.leads, args.seed))
            finally:
                _pg_schema(url, create=False)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
