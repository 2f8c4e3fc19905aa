"""Signed webhook intake throughput under gunicorn, as a ratio of a trivial endpoint (SPEC 11).

    .venv/bin/python bench/intake.py [--seconds 20] [--clients 16] [--workers 2]

For each database (a fresh temporary SQLite file; and, when TEST_DATABASE_URL or
DATABASE_URL names a PostgreSQL server, a dedicated ``bench_intake`` database
that is dropped and re-created) the script:

1. builds the schema with the real migrations and creates one webhook source;
2. starts gunicorn (2 sync workers) on a free 127.0.0.1 port;
3. in a *separate process*, runs N client threads (http.client, keep-alive when the server allows)
   for S seconds against ``GET /healthz`` (the trivial endpoint), then for S
   seconds against ``POST /webhooks/intake/<slug>`` with Standard Webhooks
   signatures, every delivery a new patient;
4. stops gunicorn, counts the leads, then runs the ``enrich_new`` job in-process until every
   stored lead is enriched and routed (intake defers that work to the scheduler), and prints one
   JSON object per database: ``database, clients, seconds, intake_rps, trivial_rps, ratio, errors,
   posted, leads_created`` plus ``enriched, enrich_seconds, enrich_rps, unenriched`` and
   ``cpu_ms_per_request``: for each phase, the CPU (user + system, from ``/proc``) that the
   gunicorn processes, the PostgreSQL backends serving the bench database (``null`` on SQLite,
   whose work is in the workers) and the load generator spent per request. Lower bounds:
   PostgreSQL's own background processes (WAL writer, checkpointer) and any process that exits
   during a phase are not counted. The load generator and the server share the machine's cores,
   so the ratio follows the trivial phase's total over the intake phase's (docs/intake.md,
   "Performance").

The rate limiter is off, as a throughput test needs (one source and one IP far above any per-source
limit); ``--rate-limit`` turns it on with a limit no delivery reaches, to measure what it costs,
with the store RATELIMIT_STORAGE_URI names (memory by default); ``rate_limit`` in the result
says which (docs/intake.md says what that gave).

``BENCH_GUNICORN_EXTRA`` adds gunicorn options for an experiment (e.g. ``--worker-class gthread
--threads 4``; docs/intake.md says what that gave). Loopback only, bounded in time; nothing needs
the internet. Target: ratio >= 0.4
and leads_created == posted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on sys.path and bench/queue.py would shadow the standard
# library's queue module (psycopg imports it): drop bench/ before anything imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

SECRET = "whsec_" + "YmVuY2gtaW50YWtlLXNlY3JldC1rZXktMzItYnl0ZXMhIQ=="  # 32 bytes, bench only
SLUG = "bench"
PRESIGNED_PER_SECOND = 1500  # deliveries signed ahead per second of the intake phase (runs so far: < 900/s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_url(base: str, dbname: str) -> str:
    if base.startswith("postgres://"):
        base = "postgresql+psycopg://" + base[len("postgres://") :]
    elif base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://") :]
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def recreate_pg(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def prepare(url: str) -> None:
    """Schema by the real migrations, one source with a known secret, a condition."""
    from flask_migrate import upgrade

    from config import Config
    from crm import create_app
    from crm.extensions import db
    from crm.models import Condition
    from crm.services.sources import create_source

    app = create_app(Config, SQLALCHEMY_DATABASE_URI=url, LOG_LEVEL="WARNING")
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.session.add(Condition(name="Dystonia", slug="dystonia", synonyms=["muscle spasms"], published=True))
        create_source("Bench", slug=SLUG, secret=SECRET)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


def count_leads(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM leads")).scalar_one()
    engine.dispose()
    return int(n)


def process_cpu(pids: list[int], command: str | None = None) -> dict[int, float]:
    """CPU seconds (user + system) each process has used so far (Linux ``/proc``); processes that
    are gone or unreadable, or (with ``command``) run another program, are left out."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, _, tail = f.read().rpartition(")")  # the command name may hold spaces
        except OSError:
            continue
        if command is not None and not head.partition("(")[2].startswith(command):
            continue  # e.g. a server in a container reports pids of its own namespace
        fields = tail.split()
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def server_pids(master: int) -> list[int]:
    """The gunicorn master and its workers."""
    pids = [master]
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == master:
            pids.append(int(entry.parent.name))
    return pids


def database_pids(url: str) -> list[int] | None:
    """PostgreSQL backends connected to the bench database; None for SQLite, or when the server
    is on another host (its processes are not ours to read)."""
    if not url.startswith("postgresql"):
        return None
    import psycopg

    parts = urlsplit(url)
    if parts.hostname not in (None, "", "localhost", "127.0.0.1", "::1"):
        return None
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (parts.path.lstrip("/"),))
        return [pid for (pid,) in rows]


class CpuMeter:
    """CPU the server's and the database's processes spend during one phase."""

    def __init__(self, server: subprocess.Popen, url: str):
        self.server, self.url = server, url
        self.before = self._read()

    def _read(self) -> tuple[dict[int, float], dict[int, float] | None]:
        backends = database_pids(self.url)
        server = process_cpu(server_pids(self.server.pid))
        return server, None if backends is None else process_cpu(backends, command="postgres")

    def spent(self) -> tuple[float | None, float | None]:
        """(server seconds, database seconds) since the meter started; None where unknown: no
        /proc here, or SQLite (its work is in the workers), or a database on another host."""
        (server_now, database_now), (server_then, database_then) = self._read(), self.before
        server = sum(now - server_then.get(pid, 0.0) for pid, now in server_now.items()) if server_now else None
        database = None
        if database_now is not None and database_then is not None:
            database = sum(now - database_then.get(pid, 0.0) for pid, now in database_now.items())
        return server, database


def cpu_per_request(server: float | None, database: float | None, client: float | None, requests: int) -> dict:
    def ms(seconds: float | None) -> float | None:
        return round(seconds * 1000 / requests, 3) if seconds is not None and requests else None

    return {"server": ms(server), "database": ms(database), "client": ms(client)}


def rate_limit_store() -> str:
    """The limiter's store under ``--rate-limit``: RATELIMIT_STORAGE_URI (from the environment or
    .env) if set, else the default, memory."""
    return os.environ.get("RATELIMIT_STORAGE_URI") or "memory://"


def start_server(url: str, port: int, workers: int, rate_limit: bool = False) -> subprocess.Popen:
    env = dict(
        os.environ,
        DATABASE_URL=url,
        SECRET_KEY="bench-secret-key",
        RATELIMIT_ENABLED="true" if rate_limit else "false",
        RATELIMIT_STORAGE_URI=rate_limit_store(),
        WEBHOOK_RATE_LIMIT="1000000000 per minute",  # counted, never reached
        LOG_LEVEL="WARNING",
        GEOCODER="offline",
        RUN_SCHEDULER_IN_PROCESS="false",
    )
    cmd = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--timeout",
        "60",
        *os.environ.get("BENCH_GUNICORN_EXTRA", "").split(),
        "wsgi:app",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("gunicorn did not come up within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# --------------------------------------------------------------------------- load (separate process)


def _load(base: str, kind: str, clients: int, seconds: float, result_queue) -> None:
    import http.client

    from crm.services.sources import sign_payload  # pure: signs with standardwebhooks

    host, port = urlsplit(base).hostname, urlsplit(base).port
    lock = threading.Lock()
    totals = {"ok": 0, "errors": 0, "leads": 0}
    run = uuid.uuid4().hex[:8]

    def delivery(n: int, i: int):
        body = json.dumps(
            {
                "first_name": "Bench",
                "last_name": f"Client{n}",
                "email": f"bench-{run}-{n}-{i}@example.com",
                "zip": "33101",
                "condition": "dystonia",
                "message": "load test",
            }
        )
        return sign_payload(SECRET, body, msg_id=f"msg_{run}_{n}_{i}")

    # Deliveries are signed before the clock starts: the load generator shares the server's two
    # cores, and its own signing is not the server's throughput. More than any run has posted;
    # should a client run out, it signs the rest as it goes.
    per_client = int(seconds * PRESIGNED_PER_SECOND / clients) if kind == "intake" else 0
    presigned = [[delivery(n, i) for i in range(per_client)] for n in range(clients)]
    stop_at = time.monotonic() + seconds

    def client(n: int) -> None:
        # http.client keeps the connection open while the server allows it and reopens it when
        # the server closes it (gunicorn's sync workers close after every response).
        conn = http.client.HTTPConnection(host, port, timeout=30)
        ok = errors = leads = 0
        i = 0
        mine = presigned[n]
        while time.monotonic() < stop_at:
            try:
                if kind == "trivial":
                    conn.request("GET", "/healthz")
                    resp = conn.getresponse()
                    resp.read()
                    good = resp.status == 200
                else:
                    signed = mine[i] if i < len(mine) else delivery(n, i)
                    conn.request("POST", f"/webhooks/intake/{SLUG}", body=signed.body, headers=signed.headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    good = resp.status == 202
                    leads += good and json.loads(data).get("lead_id") is not None
                if resp.will_close:
                    conn.close()
                if good:
                    ok += 1
                else:
                    errors += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                errors += 1
            i += 1
        conn.close()
        with lock:
            totals["ok"] += ok
            totals["errors"] += errors
            totals["leads"] += leads

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started, cpu_before = time.monotonic(), os.times()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    totals["elapsed"] = time.monotonic() - started
    cpu_after = os.times()
    totals["cpu"] = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    result_queue.put(totals)


def load(base: str, kind: str, clients: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(base, kind, clients, seconds, queue))
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join(10)
    return result


def drain_enrichment(url: str) -> dict:
    """Run the enrich_new job (what the scheduler process does every 5 s) until every stored lead
    is geocoded, checked, matched and routed; intake itself no longer does this work."""
    from config import Config
    from crm import create_app
    from crm.extensions import db
    from crm.services.pipeline import enrich_new_leads, unmatched_lead_ids

    app = create_app(Config, SQLALCHEMY_DATABASE_URI=url, LOG_LEVEL="WARNING", GEOCODER="offline")
    with app.app_context():
        started, enriched = time.monotonic(), 0
        while unmatched_lead_ids(1):
            done = enrich_new_leads(limit=500)
            if not done.enriched:
                break
            enriched += done.enriched
        elapsed = time.monotonic() - started
        left = len(unmatched_lead_ids(1_000_000))
        db.session.remove()
        db.engine.dispose()
    return {
        "enriched": enriched,
        "enrich_seconds": round(elapsed, 1),
        "enrich_rps": round(enriched / elapsed, 1) if elapsed else None,
        "unenriched": left,
    }


def bench(
    name: str, url: str, clients: int, seconds: float, workers: int, enrich: bool = True, rate_limit: bool = False
) -> dict:
    prepare(url)
    port = free_port()
    server = start_server(url, port, workers, rate_limit)
    base = f"http://127.0.0.1:{port}"
    try:
        meter = CpuMeter(server, url)
        trivial = load(base, "trivial", clients, seconds)
        trivial_cpu = cpu_per_request(*meter.spent(), trivial["cpu"], trivial["ok"] + trivial["errors"])
        meter = CpuMeter(server, url)
        intake = load(base, "intake", clients, seconds)
        intake_cpu = cpu_per_request(*meter.spent(), intake["cpu"], intake["ok"] + intake["errors"])
    finally:
        stop_server(server)
    trivial_rps = trivial["ok"] / trivial["elapsed"]
    intake_rps = intake["ok"] / intake["elapsed"]
    return {
        "database": name,
        "clients": clients,
        "seconds": seconds,
        "intake_rps": round(intake_rps, 1),
        "trivial_rps": round(trivial_rps, 1),
        "ratio": round(intake_rps / trivial_rps, 3) if trivial_rps else None,
        "errors": trivial["errors"] + intake["errors"],
        "posted": intake["ok"],
        "leads_created": count_leads(url),
        **(drain_enrichment(url) if enrich else {}),
        "cpu_ms_per_request": {"trivial": trivial_cpu, "intake": intake_cpu},
        "rate_limit": urlsplit(rate_limit_store()).scheme if rate_limit else False,  # the store, e.g. "memory"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    parser.add_argument(
        "--rate-limit", action="store_true", help="rate limiter on, with a limit no delivery reaches (its cost)"
    )
    parser.add_argument(
        "--no-enrich", action="store_true", help="skip enriching the stored leads afterwards (quicker experiments)"
    )
    args = parser.parse_args()

    targets: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        if args.only in (None, "sqlite"):
            targets.append(("sqlite", f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"))
        pg_base = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
        if args.only in (None, "postgresql") and pg_base.startswith(("postgres", "postgresql")):
            url = pg_url(pg_base, "bench_intake")
            recreate_pg(url)
            targets.append(("postgresql", url))
        for name, url in targets:
            result = bench(
                name,
                url,
                args.clients,
                args.seconds,
                args.workers,
                enrich=not args.no_enrich,
                rate_limit=args.rate_limit,
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
