"""Shared fixtures: ``app``, ``client``, ``auth``, ``db_session``, factories, a live server.

The suite runs on SQLite (a temporary file, so threads share it) and, when
``TEST_DATABASE_URL`` is set, the Makefile also runs it on PostgreSQL (alongside). The schema
is built by the real migrations, so they are tested on both databases.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask_migrate import upgrade
from limits.errors import StorageError
from werkzeug.serving import make_server

from config import TestConfig
from crm import create_app
from crm.extensions import db as _db
from crm.services import accounts

# argon2 at its production cost takes 0.2 s per sign-in here, and most tests sign in: the suite
# hashes with the cheapest parameters instead (the code path is the same; only the cost differs).
# Set before tests/factories.py hashes its shared password.
accounts._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
accounts._DUMMY_HASH = accounts._hasher.hash("not-a-real-password")

TEST_DB = os.environ.get("CRM_TEST_DB", "sqlite")


def _database_url(tmp_dir: Path) -> str:
    if TEST_DB == "sqlite":
        return f"sqlite:///{tmp_dir / 'test.sqlite3'}"
    url = TEST_DB
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def pytest_report_header(config):
    return f"database: {TEST_DB.split('@')[-1]}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    return _database_url(tmp_path_factory.mktemp("db"))


def build_app(database_url: str, **overrides):
    return create_app(TestConfig, SQLALCHEMY_DATABASE_URI=database_url, **overrides)


@pytest.fixture(scope="session")
def app(database_url):
    app = build_app(database_url)
    with app.app_context():
        if _db.engine.dialect.name == "postgresql":
            with _db.engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
        upgrade()
    yield app


@pytest.fixture
def make_app(database_url):
    """Another app on the same database with config overrides (e.g. rate limits on)."""
    from crm.extensions import limiter

    made = []
    limits_on = limiter.enabled

    def factory(**overrides):
        made.append(build_app(database_url, **overrides))
        return made[-1]

    yield factory
    for a in made:
        with a.app_context():
            _db.session.remove()
            for engine in _db.engines.values():  # the main one and PostgreSQL's "intake" one
                engine.dispose()
    # The limiter is one object for every app: an app made with limits on would leave them on
    # (and its counts) for the tests that follow.
    if any(a.config.get("RATELIMIT_ENABLED") for a in made):
        with contextlib.suppress(StorageError):  # a store a test made unreachable has nothing to clear
            limiter.reset()
        # ... and it leaves the limiter counting on its in-memory fallback until a later check
        # finds the store back (seconds later): the next test starts on its own store.
        limiter._storage_dead = False
    limiter.enabled = limits_on


def _wipe(app) -> None:
    with app.app_context():
        _db.session.remove()
        tables = [t.name for t in reversed(_db.metadata.sorted_tables)]
        with _db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
            else:
                for name in tables:
                    conn.execute(sa.text(f'DELETE FROM "{name}"'))
                if conn.execute(sa.text("SELECT name FROM sqlite_master WHERE name='sqlite_sequence'")).first():
                    conn.execute(sa.text("DELETE FROM sqlite_sequence"))


@pytest.fixture(autouse=True)
def _clean_database(request):
    yield
    from crm.services import intake, pipeline

    pipeline._backoff.clear()  # lead ids start again at 1 in the next test's database
    intake.forget_conditions()
    intake.forget_sources()
    if "app" in request.fixturenames:
        app = request.getfixturevalue("app")
        _wipe(app)


@pytest.fixture
def db(app):
    """The SQLAlchemy handle inside an app context."""
    with app.app_context():
        yield _db
        _db.session.remove()


@pytest.fixture
def sqlite_path(db):
    """The test database's file, for tests of SQLite's own behaviour (skipped on PostgreSQL)."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    return db.engine.url.database


class AuthActions:
    def __init__(self, client):
        self.client = client

    def login(self, email="specialist@example.com", password="correct horse battery", follow=False):
        return self.client.post("/login", data={"email": email, "password": password}, follow_redirects=follow)

    def logout(self):
        return self.client.post("/logout")

    def as_user(self, user, password="correct horse battery"):
        resp = self.login(user.email, password)
        assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
        return user


@pytest.fixture
def one_call_fails(monkeypatch):
    """PostgreSQL's one-call path for a new patient (crm/services/intake.py) fails with a
    database error, so the delivery takes the ordinary path: a test that breaks that path then
    sees its failure on both databases. Does nothing on SQLite, which has no such path."""
    from sqlalchemy.exc import OperationalError

    from crm.services import intake

    def broken(*args, **kwargs):
        raise OperationalError("SELECT * FROM pg_temp.crm_intake_new_patient(...)", {}, Exception("connection lost"))

    monkeypatch.setattr(intake._NEW_PATIENT_IN_ONE_CALL, "rows", broken)


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def specialist(db):
    from tests.factories import UserFactory

    user = UserFactory(email="specialist@example.com", name="Sam Specialist")
    db.session.commit()
    return user


@pytest.fixture
def admin(db):
    from tests.factories import UserFactory

    user = UserFactory(email="admin@example.com", name="Ada Admin", role="admin")
    db.session.commit()
    return user


class LiveServer:
    def __init__(self, app):
        self.app = app  # pytest-flask reads .app to push a request context
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def live_server(app):
    server = LiveServer(app).start()
    yield server
    server.stop()


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def screenshot(page):
    """Save a full-page screenshot under tests/artifacts/ (ignored by git) to look at."""

    def take(name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
