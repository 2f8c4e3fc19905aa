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
import time

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
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
        signal.signal(signal.SIGINT, _interrupt)
    if scheduler is not None:
        threading.Thread(target=_watch, args=(scheduler,), daemon=True).start()
    try:
        app.run(host=args.host, port=args.port, use_reloader=False, threaded=True)
    finally:
        _stopping.now = True
        if scheduler is not None:
            scheduler.terminate()
            try:
                scheduler.wait(timeout=10)
            except subprocess.TimeoutExpired:
                scheduler.kill()
                scheduler.wait()


class _Stopping:
    """Set when the server is stopping (a plain attribute: the signal handlers set it, and a signal
    handler must not take a lock, which threading.Event.set does)."""

    now = False


_stopping = _Stopping()


def _watch(scheduler: subprocess.Popen) -> None:
    """Say so when the scheduler ends while the server goes on: the pages still answer, but nothing
    is geocoded, matched, assigned, reminded or emailed until ``make run`` is started again. Ctrl-C
    reaches both processes at once, so the scheduler may end first: the flag is set by the signal."""
    from crm.cli.scheduler import LOCK_TAKEN_EXIT

    code = scheduler.wait()
    time.sleep(0.5)  # a signal to the whole group reaches this process too: let its handler say so
    if _stopping.now:
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
    _stopping.now = True
    raise SystemExit(0)


def _interrupt(_signum, _frame) -> None:
    _stopping.now = True
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
