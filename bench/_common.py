"""What the page benchmarks share: an app on a given database and a schema built by the real migrations."""

from __future__ import annotations


def make_app(url: str):
    from config import TestConfig
    from crm import create_app

    return create_app(TestConfig, SQLALCHEMY_DATABASE_URI=url, WTF_CSRF_ENABLED=False)


def fresh_schema() -> None:
    """Inside an app context: an empty PostgreSQL schema (SQLite files start empty), then every migration."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from crm.extensions import db

    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
    upgrade()
