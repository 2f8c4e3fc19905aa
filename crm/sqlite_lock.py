"""Taking SQLite's write lock for a short transaction without the busy handler's sleeps.

SQLite lets one connection write at a time. A connection that finds the write lock taken waits
in SQLite's busy handler, which sleeps 1, 2, 5, 10 ms ... between tries, however soon the lock is
released. An intake delivery holds the lock for well under a millisecond, and under a burst with
two worker processes the sleeps, not the work, set the pace: the sleeping worker misses
hand-overs while the other one is between requests, and a quarter of the CPU stood idle
(docs/intake.md, "Third round").

``try_begin_immediate`` turns the busy handler off and tries ``BEGIN IMMEDIATE`` again after
each ``RETRY_EVERY`` for up to ``RETRY_FOR``; a failed try costs about 2 µs. If the lock is still
taken after that (a long transaction elsewhere, where spinning would only burn CPU), it gives up
and the caller waits the ordinary way, in SQLite's busy handler, up to the busy timeout.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

BUSY_TIMEOUT_MS = 5000  # every SQLite connection's wait for a lock (crm/extensions.py)
# Asked of time.sleep; Linux's timer slack makes it 100-150 µs. Asking 200 µs gave a fifth less
# intake throughput, 20 µs or no sleep no more (docs/intake.md).
RETRY_EVERY = 0.00005
RETRY_FOR = 0.020


@contextmanager
def busy_timeout(connection: sqlite3.Connection, milliseconds: int | None) -> Iterator[None]:
    """Run the block with the connection's busy timeout at ``milliseconds`` (None: as it is),
    then give the connection back the timeout it had."""
    if milliseconds is None:
        yield
        return
    previous = connection.execute("PRAGMA busy_timeout").fetchone()[0]
    try:
        connection.execute(f"PRAGMA busy_timeout={int(milliseconds)}")
        yield
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(previous)}")


def try_begin_immediate(connection: sqlite3.Connection) -> bool:
    """Start a write transaction holding the write lock, trying again quickly while another
    connection holds it. True when the transaction has begun; False when the lock stayed taken
    for ``RETRY_FOR`` or a try failed for another reason; the caller then issues its own
    ``BEGIN IMMEDIATE`` with the connection's busy timeout in force, which waits, or raises the
    other error, as usual."""
    with busy_timeout(connection, 0):
        give_up_at = time.monotonic() + RETRY_FOR
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.Error as exc:
                busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY  # or BUSY_SNAPSHOT ...
                if not busy or time.monotonic() >= give_up_at:
                    return False
            time.sleep(RETRY_EVERY)


def hold_write_lock(connection) -> None:
    """On SQLite, make ``connection`` (a SQLAlchemy Connection) hold the database's write lock
    for the rest of its transaction, before a check that a concurrent writer could make stale
    (two admins demoting each other, two bookings of one slot): a read outside any transaction
    would not see the other's uncommitted change, and both checks would pass. Elsewhere nothing:
    PostgreSQL serialises with row locks (SELECT ... FOR UPDATE) instead."""
    if connection.dialect.name != "sqlite":
        return
    dbapi_connection = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction and not try_begin_immediate(dbapi_connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # waits up to the busy timeout
