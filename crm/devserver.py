"""``make run``: the development server plus one scheduler process beside it.

The scheduler is a separate ``flask crm scheduler`` process (never started by
``create_app``), stopped when the server stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading

from crm import ConfigError, create_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    try:
        app = create_app(os.environ.get("APP_CONFIG", "config.DevelopmentConfig"))
    except ConfigError as exc:
        sys.exit(str(exc))
    scheduler = None
    crm_group = app.cli.commands.get("crm")
    if crm_group is not None and "scheduler" in getattr(crm_group, "commands", {}):
        scheduler = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "crm", "scheduler"])
    # SIGTERM (kill, systemd, docker stop) stops the scheduler too, as Ctrl-C does; otherwise it
    # would run on alone, holding the scheduler lock against the next start.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    stopping = threading.Event()
    if scheduler is not None:
        threading.Thread(target=_watch, args=(scheduler, stopping), daemon=True).start()
    try:
        app.run(host=args.host, port=args.port, use_reloader=False, threaded=True)
    finally:
        stopping.set()
        if scheduler is not None:
            scheduler.terminate()
            try:
                scheduler.wait(timeout=10)
            except subprocess.TimeoutExpired:
                scheduler.kill()
                scheduler.wait()


def _watch(scheduler: subprocess.Popen, stopping: threading.Event) -> None:
    """Say so when the scheduler ends while the server goes on: the pages still answer, but nothing
    is geocoded, matched, assigned, reminded or emailed until ``make run`` is started again."""
    from crm.cli.scheduler import LOCK_TAKEN_EXIT

    code = scheduler.wait()
    if stopping.is_set():
        return
    if code == LOCK_TAKEN_EXIT:
        print(
            "\n*** This server's scheduler stopped: another one holds this database's scheduler lock (another "
            "`make run` on the same database?) and runs the jobs. The pages here work as usual. ***\n",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            f"\n*** The scheduler stopped (exit code {code}): background jobs (matching, auto-assignment, "
            "reminders, emails) are not running. Stop this server (Ctrl-C) and run `make run` again. ***\n",
            file=sys.stderr,
            flush=True,
        )


def _exit_on_sigterm(_signum, _frame) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
