"""crm.sqlite_lock: intake takes SQLite's write lock by quick retries, then by the busy handler."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import types

import pytest
import sqlalchemy as sa

from crm import sqlite_lock
from crm.models import InboxItem, Lead
from crm.models.enums import InboxStatus
from crm.services import intake
from tests.test_webhooks import PAYLOAD, deliver, source  # noqa: F401  (source is a fixture)


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "lock.sqlite3")
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.commit()
    setup.close()
    return path


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=sqlite_lock.BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={sqlite_lock.BUSY_TIMEOUT_MS}")
    return connection


def _busy_timeout(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA busy_timeout").fetchone()[0]


def _hold_write_lock(path: str, hold: float | threading.Event) -> tuple[threading.Thread, threading.Event]:
    """Another connection takes the write lock, keeps it ``hold`` seconds (or until the event is
    set), then ends its transaction."""
    taken = threading.Event()
    release = hold if isinstance(hold, threading.Event) else threading.Event()

    def keep_the_lock() -> None:
        other = _connect(path)
        other.execute("BEGIN IMMEDIATE")
        taken.set()
        release.wait(5 if isinstance(hold, threading.Event) else hold)
        other.commit()
        other.close()

    holder = threading.Thread(target=keep_the_lock)
    holder.start()
    assert taken.wait(5)
    return holder, taken


@pytest.fixture
def sleeps(monkeypatch):
    """Counts the retries' sleeps (they still sleep)."""
    counted: list[float] = []

    def sleep(seconds: float) -> None:
        counted.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(sqlite_lock, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return counted


def test_a_free_lock_is_taken_at_once_and_the_busy_timeout_restored(database, sleeps):
    connection = _connect(database)
    connection.execute("PRAGMA busy_timeout=1234")
    assert sqlite_lock.try_begin_immediate(connection) is True
    assert connection.in_transaction
    assert sleeps == []
    assert _busy_timeout(connection) == 1234  # the connection's own, whatever it was
    connection.execute("INSERT INTO t VALUES (2)")
    connection.commit()


def test_a_lock_released_within_the_retry_window_is_taken_by_retrying(database, monkeypatch, sleeps):
    monkeypatch.setattr(sqlite_lock, "RETRY_FOR", 5.0)  # however slow the machine, well within it
    holder, _ = _hold_write_lock(database, 0.05)
    connection = _connect(database)
    assert sqlite_lock.try_begin_immediate(connection) is True
    assert sleeps and set(sleeps) == {sqlite_lock.RETRY_EVERY}  # it waited by retrying, briefly
    holder.join(5)
    assert _busy_timeout(connection) == sqlite_lock.BUSY_TIMEOUT_MS
    connection.execute("INSERT INTO t VALUES (2)")  # ours is the writer now
    connection.commit()


def test_a_lock_held_longer_is_left_to_the_busy_handler(database, monkeypatch, sleeps):
    monkeypatch.setattr(sqlite_lock, "RETRY_FOR", 0.01)
    release = threading.Event()
    holder, _ = _hold_write_lock(database, release)
    connection = _connect(database)
    try:
        assert sqlite_lock.try_begin_immediate(connection) is False
        assert sleeps  # it retried before giving up
        assert not connection.in_transaction
        assert _busy_timeout(connection) == sqlite_lock.BUSY_TIMEOUT_MS  # restored for the caller's wait
    finally:
        release.set()
    connection.execute("BEGIN IMMEDIATE")  # the ordinary way: waits in SQLite for the holder
    holder.join(5)
    connection.rollback()


def test_another_error_is_not_retried(database, sleeps):
    connection = _connect(database)
    connection.execute("BEGIN")  # "cannot start a transaction within a transaction"
    assert sqlite_lock.try_begin_immediate(connection) is False
    assert sleeps == []
    assert _busy_timeout(connection) == sqlite_lock.BUSY_TIMEOUT_MS
    connection.rollback()


# ----------------------------------------------------------------- through the webhook (SQLite only)


@pytest.fixture
def tries(monkeypatch):
    """What intake's quick retries answered, delivery by delivery."""
    answers: list[bool] = []

    def spy(connection):
        answers.append(sqlite_lock.try_begin_immediate(connection))
        return answers[-1]

    monkeypatch.setattr(intake, "try_begin_immediate", spy)
    return answers


def test_a_delivery_takes_the_write_lock_by_quick_retries(client, db, source, sqlite_path, tries):  # noqa: F811
    resp = deliver(client, PAYLOAD, msg_id="quick")
    assert resp.status_code == 202, resp.get_json()
    assert tries == [True]


def test_a_delivery_waits_out_a_longer_write_in_the_busy_handler(
    client,
    db,
    source,  # noqa: F811
    sqlite_path,
    monkeypatch,
):
    release = threading.Event()
    holder, _ = _hold_write_lock(sqlite_path, release)
    tries: list[bool] = []

    def retries_then_release(connection):
        tries.append(sqlite_lock.try_begin_immediate(connection))
        threading.Timer(0.1, release.set).start()  # the holder finishes while we wait in SQLite
        return tries[-1]

    monkeypatch.setattr(intake, "try_begin_immediate", retries_then_release)
    resp = deliver(client, PAYLOAD, msg_id="while-locked")
    holder.join(5)
    assert tries == [False]  # gave up retrying; SQLite's busy handler waited for the holder
    assert resp.status_code == 202, resp.get_json()
    lead_id = resp.get_json()["lead_id"]
    assert db.session.get(Lead, lead_id) is not None
    assert db.session.scalars(sa.select(InboxItem.status)).all() == [InboxStatus.ACCEPTED]


@pytest.fixture
def short_busy_timeout(db):
    """Every connection waits 150 ms for a lock instead of 5 s (fresh connections, then fresh
    again with the real timeout: no connection made meanwhile may outlive the test)."""
    real = sqlite_lock.BUSY_TIMEOUT_MS
    sqlite_lock.BUSY_TIMEOUT_MS = 150
    db.session.remove()
    db.engine.dispose()
    try:
        yield
    finally:
        sqlite_lock.BUSY_TIMEOUT_MS = real
        db.session.remove()
        db.engine.dispose()


def test_a_lock_held_past_the_busy_timeout_is_a_503_and_the_retry_is_accepted(
    client,
    db,
    source,  # noqa: F811
    sqlite_path,
    short_busy_timeout,
):
    release = threading.Event()
    holder, _ = _hold_write_lock(sqlite_path, release)
    try:
        resp = deliver(client, PAYLOAD, msg_id="locked-out")
    finally:
        release.set()
        holder.join(5)
    # Neither the delivery nor its raw copy could be written: the sender is told to retry.
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.headers.get("Retry-After")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 0
    retry = deliver(client, PAYLOAD, msg_id="locked-out")
    assert retry.status_code == 202, retry.get_json()
    assert json.loads(retry.get_data())["lead_id"] is not None


def test_a_report_refresh_gives_up_after_its_own_wait_and_restores_the_busy_timeout(db, sqlite_path):
    from datetime import UTC, datetime

    from crm.services import report_rollups

    release = threading.Event()
    holder, _ = _hold_write_lock(sqlite_path, release)
    try:
        with pytest.raises(report_rollups.RefreshBusy):
            report_rollups.refresh_report_rollups(db.session, datetime.now(UTC), "UTC", wait_seconds=0.1)
        dbapi_connection = db.session.connection().connection.dbapi_connection
        assert _busy_timeout(dbapi_connection) == sqlite_lock.BUSY_TIMEOUT_MS
    finally:
        release.set()
        holder.join(5)
        db.session.rollback()
