"""Flask extensions, created unbound and initialised in ``create_app``."""

import sqlite3

from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from crm import sqlite_lock
from crm.mail_connection import TimedMail
from crm.models.base import Base
from crm.sqlite_wal import checkpoint_in_background

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)
mail = TimedMail()
bootstrap = Bootstrap5()


def _unicode_lower(value):
    return value.lower() if isinstance(value, str) else value


@sa_event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """SQLite under several workers/threads: WAL (readers never block the writer), a busy timeout,
    and checkpoints in a background thread (crm/sqlite_wal.py)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={sqlite_lock.BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Memory-mapped reads (256 MiB of address space, not memory): matching touches a few dozen
        # scattered pages per lead and mmap halves its time against read() calls (docs/matching.md).
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.close()
        # SQLite's own lower() folds ASCII only, so "Élodie Ñúñez" could not be found by name
        # while PostgreSQL finds her: every connection gets Python's (migration 0009 rebuilds
        # the name indexes with it).
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
        checkpoint_in_background(dbapi_connection)
