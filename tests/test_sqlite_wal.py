"""crm.sqlite_wal: SQLite's WAL is checkpointed by a background thread, not inside a request's COMMIT."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import sqlalchemy as sa

from crm import sqlite_wal
from crm.models import WebhookSource
from tests.factories import WebhookSourceFactory


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _rows_in_the_database_file(path: str) -> int | None:
    """Rows the main file holds, ignoring the WAL (``immutable``: read the file as it is; None
    when a checkpoint is writing it at that moment)."""
    connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM webhook_sources").fetchone()[0]
    except sqlite3.DatabaseError:
        return None
    finally:
        connection.close()


def test_app_connections_leave_checkpoints_to_the_thread(db, sqlite_path):
    with db.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == sqlite_wal.BACKSTOP_PAGES
    assert any(t.name == "sqlite-wal-checkpoint" and t.is_alive() for t in threading.enumerate())


def test_committed_rows_reach_the_database_file_without_another_commit(db, sqlite_path):
    WebhookSourceFactory.create_batch(3)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookSource)) == 3
    # Nothing else writes: only the background checkpoint can copy them from the WAL.
    assert _wait_for(lambda: _rows_in_the_database_file(sqlite_path) == 3)


def test_the_thread_stops_when_its_database_is_removed(tmp_path):
    path = tmp_path / "gone.sqlite3"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    assert sqlite_wal.database_file(connection) == str(path)
    connection.close()
    sqlite_wal._running[str(path)] = os.getpid()
    path.unlink()
    sqlite_wal._checkpoint_forever(str(path), os.getpid(), 1)  # returns: nothing left to checkpoint
    assert str(path) not in sqlite_wal._running


def test_in_memory_databases_have_no_file_and_no_thread():
    connection = sqlite3.connect(":memory:")
    assert sqlite_wal.database_file(connection) is None
    sqlite_wal.checkpoint_in_background(connection)
    assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own default


def test_the_thread_stops_when_its_database_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_wal, "INTERVAL", 0.01)
    path = tmp_path / "replaced.sqlite3"
    first = sqlite3.connect(path)
    first.execute("PRAGMA journal_mode=WAL")
    first.close()
    sqlite_wal._running[str(path)] = os.getpid()
    watched = (str(path), os.getpid(), os.stat(path).st_ino)
    worker = threading.Thread(target=sqlite_wal._checkpoint_forever, args=watched, daemon=True)
    worker.start()
    replacement = tmp_path / "new.sqlite3"
    sqlite3.connect(replacement).close()
    os.replace(replacement, path)
    worker.join(10)
    assert not worker.is_alive() and str(path) not in sqlite_wal._running
