"""crm.prepared: statements compiled once and run on the DBAPI cursor keep SQLAlchemy's meaning
(bind processors, Python-side defaults, exception classes, the session's transaction)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from crm.models import InboxItem, WebhookSource
from crm.models.enums import InboxChannel, InboxStatus
from crm.prepared import Prepared

INSERT_SOURCE = Prepared.insert(WebhookSource.__table__)
INSERT_ITEM = Prepared.insert(InboxItem.__table__)
SOURCES_NAMED = Prepared(
    sa.select(WebhookSource.id, WebhookSource.slug)
    .where(WebhookSource.name.like(sa.bindparam("name")))
    .order_by(WebhookSource.id)
    .limit(2)
)


def test_an_insert_fills_python_defaults_and_converts_values(db):
    at = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
    source_id = INSERT_SOURCE.scalar(db.session.connection(), {"name": "Clinic", "slug": "clinic"})
    item_id = INSERT_ITEM.scalar(
        db.session.connection(),
        {
            "channel": InboxChannel.WEBHOOK,
            "source_id": source_id,
            "received_at": at,
            "headers": {"content-type": "application/json"},
            "status": InboxStatus.ACCEPTED,
        },
    )
    db.session.commit()

    source = db.session.get(WebhookSource, source_id)
    assert source.active is True and source.field_mapping == {} and source.created_at.tzinfo is UTC
    item = db.session.get(InboxItem, item_id)
    assert item.received_at == at  # aware in, naive UTC stored, aware out
    assert item.status is InboxStatus.ACCEPTED and item.channel is InboxChannel.WEBHOOK
    assert item.headers == {"content-type": "application/json"}
    assert item.body == "" and item.attempts == 0 and item.lead_id is None


def test_a_select_keeps_its_literal_limit_and_returns_plain_rows(db):
    for n in range(3):
        INSERT_SOURCE.execute(db.session.connection(), {"name": f"Same {n}", "slug": f"same-{n}"})
    rows = SOURCES_NAMED.rows(db.session.connection(), {"name": "Same%"})
    assert [slug for _, slug in rows] == ["same-0", "same-1"]
    assert SOURCES_NAMED.rows(db.session.connection(), {"name": "Nobody"}) == []


def test_a_missing_parameter_without_a_default_is_an_error(db):
    with pytest.raises(KeyError, match="name"):
        SOURCES_NAMED.rows(db.session.connection(), {})


def test_a_value_the_statement_has_no_place_for_is_an_error_not_dropped(db):
    with pytest.raises(KeyError, match="colour"):
        INSERT_SOURCE.execute(db.session.connection(), {"name": "Clinic", "slug": "clinic", "colour": "red"})


def test_a_driver_error_is_sqlalchemys_and_hides_the_values(db):
    INSERT_SOURCE.execute(db.session.connection(), {"name": "First", "slug": "taken-slug"})
    db.session.commit()
    with pytest.raises(IntegrityError) as caught:
        INSERT_SOURCE.execute(db.session.connection(), {"name": "Secret Patient Name", "slug": "taken-slug"})
    assert "Secret Patient Name" not in str(caught.value)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookSource)) == 1


def test_it_runs_in_the_sessions_transaction(db):
    INSERT_SOURCE.execute(db.session.connection(), {"name": "Rolled back", "slug": "rolled-back"})
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookSource)) == 0


# ---------------------------------------------------------------- TempFunction (PostgreSQL)


def _source_unless_named(function_name: str):
    """A source, unless one is named ``taken`` already (each test its own function name: pooled
    connections keep their temporary functions from test to test)."""
    from crm.prepared import TempFunction

    return TempFunction(
        function_name,
        INSERT_SOURCE,
        returns="new_id integer",
        extra={"taken": "text"},
        preamble="IF EXISTS (SELECT FROM webhook_sources WHERE name = {taken}) THEN RETURN; END IF;",
    )


@pytest.fixture
def pg(db):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("TempFunction is PostgreSQL's")
    return db


def test_a_temp_function_runs_its_preamble_then_the_query_in_one_call(pg, monkeypatch):
    from crm import prepared

    statements = []
    real = prepared.run_on_cursor
    monkeypatch.setattr(prepared, "run_on_cursor", lambda conn, sql, *a: statements.append(sql) or real(conn, sql, *a))
    function = _source_unless_named("test_one_call")
    with pg.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        ((new_id,),) = function.rows(conn, {"name": "Clinic", "slug": "clinic", "taken": "Clinic"})
        assert function.rows(conn, {"name": "Clinic", "slug": "clinic-2", "taken": "Clinic"}) == []
        assert [sql.split("(")[0] for sql in statements] == [
            "CREATE OR REPLACE FUNCTION pg_temp.test_one_call_" + statements[0].split("_call_")[1][:12],
            "SELECT * FROM pg_temp.test_one_call_" + statements[0].split("_call_")[1][:12],
            "SELECT * FROM pg_temp.test_one_call_" + statements[0].split("_call_")[1][:12],
        ]  # made once for this connection, called twice
    assert pg.session.scalars(sa.select(WebhookSource.slug)).all() == ["clinic"]
    assert pg.session.get(WebhookSource, new_id).active is True  # the Python-side default was applied


def test_a_temp_function_made_inside_a_transaction_is_made_again_next_time(pg):
    """A rollback takes the function away again, so it is only remembered when made in autocommit."""
    function = _source_unless_named("test_made_in_a_transaction")
    with pg.engine.connect() as conn:
        transaction = conn.begin()
        function.rows(conn, {"name": "A", "slug": "a", "taken": "nobody"})
        transaction.rollback()
        assert conn.connection.info[("temp function", function.name)] is None
        with conn.begin():
            assert function.rows(conn, {"name": "B", "slug": "b", "taken": "nobody"})  # made again, not "missing"
    assert pg.session.scalars(sa.select(WebhookSource.slug)).all() == ["b"]


def test_a_temp_function_needs_typed_parameters(pg):
    from crm.prepared import TempFunction

    untyped = TempFunction("untyped", Prepared(sa.text("SELECT :x")), returns="x text", extra={}, preamble="")
    with pg.engine.connect() as conn, pytest.raises(TypeError, match="needs a type"):
        untyped.rows(conn, {"x": "1"})


def test_a_temp_function_refuses_a_value_too_long_instead_of_cutting_it(pg):
    """Its arguments are cast without lengths: the INSERT refuses the value, as it would alone."""
    from sqlalchemy.exc import DataError

    function = _source_unless_named("test_too_long")
    with pg.engine.connect() as conn, pytest.raises(DataError):
        function.rows(
            conn.execution_options(isolation_level="AUTOCOMMIT"), {"name": "N" * 121, "slug": "n", "taken": "x"}
        )
