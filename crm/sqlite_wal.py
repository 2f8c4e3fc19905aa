"""SQLite's WAL checkpoints in a background thread of each process, not inside a request.

SQLite copies the write-ahead log back into the database file (a checkpoint, with an fsync)
from inside whichever COMMIT makes the log pass ``wal_autocheckpoint`` pages. Under an intake
burst that was one delivery in ~30 waiting ~15 ms on the disk while holding its worker: about
7 % of the two workers' time idle (docs/intake.md, "Performance"). Here a daemon thread per
process and database file runs a PASSIVE checkpoint every ``INTERVAL`` seconds instead (it never
blocks readers or writers, and the fsync releases the GIL, so the worker keeps serving); the
connections' own automatic checkpoint stays on at ``BACKSTOP_PAGES`` in case the thread is not
running. Only for SQLite files; PostgreSQL checkpoints on its own.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from urllib.parse import quote

log = logging.getLogger(__name__)

INTERVAL = 0.25  # seconds between checkpoints
BACKSTOP_PAGES = 10_000  # ~40 MB of log before a COMMIT checkpoints by itself (SQLite's default is 1,000)

_running: dict[str, int] = {}  # database file -> pid of the process whose thread checkpoints it
_guard = threading.Lock()


def database_file(connection: sqlite3.Connection) -> str | None:
    """The main database's file, or None for an in-memory or temporary database."""
    for _seq, name, path in connection.execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


def checkpoint_in_background(connection: sqlite3.Connection) -> None:
    """For a new connection: raise its automatic checkpoint to the backstop and make sure this
    process has a thread checkpointing its database file."""
    path = database_file(connection)
    if path is None:
        return
    connection.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    pid = os.getpid()
    with _guard:
        if _running.get(path) == pid:  # a thread started before a fork belongs to the parent
            return
        _running[path] = pid
    watched = (path, pid, _inode(path))  # the file this connection opened, not whatever later takes its name
    threading.Thread(target=_checkpoint_forever, args=watched, name="sqlite-wal-checkpoint", daemon=True).start()


def _checkpoint_forever(path: str, pid: int, inode: int | None) -> None:
    try:  # mode=rw: never create a database that has gone
        uri = f"file:{quote(path)}?mode=rw"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        log.warning("sqlite: no background checkpoints for %s (%s); COMMITs will checkpoint", path, exc)
        _forget(path, pid)
        return
    # Until the database is removed (a test's temporary file) or replaced by another file.
    while inode is not None and _inode(path) == inode:
        time.sleep(INTERVAL)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("sqlite: background checkpoint failed (%s); retrying", type(exc).__name__)
            time.sleep(5)
    connection.close()
    _forget(path, pid)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _forget(path: str, pid: int) -> None:
    with _guard:
        if _running.get(path) == pid:
            del _running[path]
