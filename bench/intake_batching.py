"""What group commit could save a PostgreSQL delivery: the one-call intake function, alone or batched.

    TEST_DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/intake_batching.py [--deliveries 2000]

Intake's PostgreSQL path writes a new patient's delivery with ONE call of a temporary PL/pgSQL
function, in autocommit: one round trip and one commit each (crm/services/intake.py). Group
commit would put several deliveries into one transaction. This measures the most that could
save, without any of the threads or queues a server would need to gather deliveries: the same
call with the arguments of real deliveries (captured from one delivery through the app, then
given new emails, phones and webhook ids), run

- ``single``: one call per delivery in autocommit, as intake runs it;
- ``batch`` B: B calls sent in one pipeline inside one transaction, one commit for the B.

For each it prints one JSON object: the client's CPU (this process), the backend's CPU (from
``/proc``) and the wall time, per delivery, in ms. The database ``bench_batching`` is dropped and
re-created, and dropped at the end. docs/intake.md ("Tenth round") says what it gave.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from bench.intake import SECRET, SLUG, pg_url, prepare, recreate_pg  # noqa: E402


def captured_call_values(app) -> dict:
    """The values intake passes to its one-call function for one real delivery."""
    from crm.services import intake
    from crm.services.sources import sign_payload

    function, captured = intake._NEW_PATIENT_IN_ONE_CALL, {}
    real_rows = function.rows

    def recording(conn, values):
        captured.update(values)
        return real_rows(conn, values)

    body = json.dumps(
        {"first_name": "Batch", "last_name": "Seed", "email": "seed@example.com", "zip": "33101",
         "condition": "dystonia", "message": "batching bench"}
    )  # fmt: skip
    signed = sign_payload(SECRET, body, msg_id="msg_seed")
    function.rows = recording  # on this instance only, for this one request
    try:
        response = app.test_client().post(
            f"/webhooks/intake/{SLUG}", data=signed.body, headers=signed.headers, content_type="application/json"
        )
    finally:
        del function.rows
    if response.status_code != 202 or not captured:
        raise SystemExit(f"the seed delivery was not taken by the one-call path: {response.status_code}")
    return captured


def variant(values: dict, n: int) -> dict:
    """The same delivery from another patient: every value naming the seed names patient ``n``."""
    return {k: v.replace("seed", f"p{n}") if isinstance(v, str) and "seed" in v else v for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000, help="deliveries per mode and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    if not base.startswith(("postgresql", "postgres:")):
        raise SystemExit("set TEST_DATABASE_URL (or DATABASE_URL) to a PostgreSQL server")
    url = pg_url(base, "bench_batching")
    recreate_pg(url)
    prepare(url)

    import psycopg
    from psycopg import RawCursor

    from config import Config
    from crm import create_app
    from crm.extensions import db
    from crm.services import intake

    app = create_app(Config, SQLALCHEMY_DATABASE_URI=url, LOG_LEVEL="WARNING", RATELIMIT_ENABLED=False)
    seed = captured_call_values(app)
    function = intake._NEW_PATIENT_IN_ONE_CALL
    with app.app_context():
        dialect = db.engines[intake.INTAKE_BIND].dialect
        create, call, _ = function._compile(dialect)

        def arguments(values: dict) -> tuple:
            out = function.query.arguments(dialect, values, frozenset(function.extra))
            return (*out, *(values[name] for name in function.extra))

        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        conn.execute(create)
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        ticks = os.sysconf("SC_CLK_TCK")

        def backend_cpu() -> float:
            fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        made = [0]

        def run(batch: int | None, n: int) -> dict:
            calls = []
            for _ in range(n):
                made[0] += 1
                calls.append(arguments(variant(seed, made[0])))
            cpu, server, wall = time.process_time(), backend_cpu(), time.perf_counter()
            if batch is None:
                cursor = RawCursor(conn)
                for call_args in calls:
                    cursor.execute(call, call_args)
                    cursor.fetchall()
            else:
                conn.autocommit = False
                for start in range(0, n, batch):
                    cursors = []
                    with conn.pipeline():
                        for call_args in calls[start : start + batch]:
                            cursor = RawCursor(conn)
                            cursor.execute(call, call_args)
                            cursors.append(cursor)
                        conn.commit()
                    for cursor in cursors:
                        cursor.fetchall()
                conn.autocommit = True
            per = 1000 / n
            return {
                "mode": "single" if batch is None else "batch",
                "batch": batch or 1,
                "deliveries": n,
                "client_cpu_ms": round((time.process_time() - cpu) * per, 3),
                "backend_cpu_ms": round((backend_cpu() - server) * per, 3),
                "wall_ms": round((time.perf_counter() - wall) * per, 3),
            }

        run(None, 300)  # plans cached, caches warm
        for _ in range(args.rounds):
            for batch in (None, 1, 2, 4, 8):
                print(json.dumps(run(batch, args.deliveries)), flush=True)
        conn.close()
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    drop_database(url)


def drop_database(url: str) -> None:
    """Nothing left behind: the thousands of patients written here are the bench's only."""
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


if __name__ == "__main__":
    main()
