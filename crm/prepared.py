"""Statements SQLAlchemy compiles once and a hot path runs straight on the DBAPI cursor.

Intake stores every delivery with a handful of one-row statements, and SQLAlchemy's
per-statement layer (execution context, parameter processing, result wrapping) cost more
there than SQLite's own work (docs/intake.md, "Performance"). A ``Prepared`` statement keeps
what matters of SQLAlchemy: the SQL for the connection's dialect, each parameter's bind
processor (our UTC datetimes, JSON, StrEnum values), the Python-side column defaults of an
INSERT and SQLAlchemy's exception classes. It runs on the session's connection, inside the
session's transaction, so the session still commits or rolls back everything together.

Use it only where a statement runs on every request and profiling says it matters; everywhere
else the ORM or Core is clearer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # parameters as the SQL names them, in the order a positional driver wants them
    keys: tuple[str, ...]  # the same, as the caller's values name them
    fallbacks: tuple[Callable[[], Any], ...]  # the value when the caller gives none
    known: frozenset[str]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool
    cursor_class: Callable[[Any], Any] | None  # None: the connection's own cursor()
    sql_types: tuple[str | None, ...]  # each parameter's SQL type as the dialect spells it (None: untyped)


class Prepared:
    """A Core statement with named ``bindparam``s, compiled once per dialect.

    ``defaults`` maps a parameter that may be left out to a callable giving its value
    (``Prepared.insert`` fills it from the table's Python-side column defaults)."""

    def __init__(self, statement: sa.Executable, defaults: Mapping[str, Callable[[], Any]] | None = None):
        self.statement = statement
        self.defaults = dict(defaults or {})
        self._by_dialect: dict[str, _Compiled] = {}

    @classmethod
    def insert(cls, table: sa.Table, returning: str | None = "id") -> Prepared:
        """``INSERT`` of every column, each taken from the values given, else its Python-side
        default, else NULL; an autoincrement key and columns with only a server default are
        left to the database."""
        binds, defaults = insert_parameters(table)
        statement = sa.insert(table).values(binds)
        if returning is not None:
            statement = statement.returning(table.c[returning])
        return cls(statement, defaults)

    def _compile(self, dialect: sa.Dialect) -> _Compiled:
        compiled = self._by_dialect.get(dialect.name)
        if compiled is None:
            target, cursor_class = dialect, None
            if dialect.driver == "psycopg":
                # PostgreSQL's own $1 parameter markers and psycopg's RawCursor: psycopg then sends
                # the SQL as it is, where it would re-parse "%(name)s" on every call of a statement
                # over 4,096 bytes or 50 parameters (it caches only smaller ones).
                from psycopg import RawCursor

                target = type(dialect)(paramstyle="numeric_dollar")
                target.server_version_info = dialect.server_version_info
                cursor_class = RawCursor
            sql = self.statement.compile(dialect=target)
            names = tuple(sql.positiontup) if target.positional else tuple(sql.binds)
            binds = [sql.binds[name] for name in names]
            processors = tuple(b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds)
            fallbacks = tuple(self.defaults.get(b.key) or _fallback(b) for b in binds)
            keys = tuple(b.key for b in binds)
            sql_types = tuple(None if b.type._isnull else b.type.compile(dialect=dialect) for b in binds)
            compiled = _Compiled(
                sql.string,
                names,
                keys,
                fallbacks,
                frozenset(keys),
                processors,
                target.positional,
                cursor_class,
                sql_types,
            )
            self._by_dialect[dialect.name] = compiled
        return compiled

    def arguments(self, dialect: sa.Dialect, values: Mapping[str, Any], extra: frozenset[str] = frozenset()) -> list:
        """The statement's parameters from ``values`` (defaults for those left out), processed
        for the driver, in the compiled statement's order; keys in ``extra`` may be present too."""
        compiled = self._compile(dialect)
        unknown = values.keys() - compiled.known - extra
        if unknown:  # a value the statement has no place for would otherwise be dropped silently
            raise KeyError(f"the statement has no parameter {', '.join(sorted(unknown))}")
        args = []
        for key, fallback, process in zip(compiled.keys, compiled.fallbacks, compiled.processors, strict=True):
            value = values[key] if key in values else fallback()
            args.append(process(value) if process is not None and value is not None else value)
        return args

    def cursor(self, connection: sa.Connection, values: Mapping[str, Any]):
        """Run the statement with ``values``; returns the open DBAPI cursor (the caller fetches)."""
        compiled = self._compile(connection.dialect)
        args = self.arguments(connection.dialect, values)
        parameters = tuple(args) if compiled.positional else dict(zip(compiled.names, args, strict=True))
        return run_on_cursor(connection, compiled.sql, parameters, compiled.cursor_class)

    def scalar(self, connection: sa.Connection, values: Mapping[str, Any]) -> Any:
        """The first column of the first row (e.g. ``RETURNING id``), or None."""
        cursor = self.cursor(connection, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else row[0]

    def rows(self, connection: sa.Connection, values: Mapping[str, Any]) -> Sequence[tuple]:
        """Every row, as the driver's plain tuples (no result type processing)."""
        return fetch_all(self.cursor(connection, values))

    def execute(self, connection: sa.Connection, values: Mapping[str, Any]) -> None:
        self.cursor(connection, values).close()


class TempFunction:
    """PostgreSQL: a ``Prepared`` query run inside a PL/pgSQL function after a few statements of
    its own (``preamble``), so that all of them cost ONE round trip, and, called in autocommit,
    one implicit transaction with no ``BEGIN`` and ``COMMIT`` round trips of its own.

    Each statement of a VOLATILE function takes a fresh snapshot, so a look-up made after an
    advisory lock in the preamble sees every row committed by the lock's previous holder.

    The function lives in the connection's own temporary schema: each pooled connection
    creates it from the current models on first use (no migration to keep in step with the
    models; nothing left behind when the connection closes). The parameters are the query's
    followed by ``extra`` (name -> SQL type), which the preamble writes as ``{name}``."""

    def __init__(self, name: str, query: Prepared, returns: str, extra: Mapping[str, str], preamble: str):
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain SQL name: {name!r}")
        self.name = name
        self.query = query
        self.returns = returns
        self.extra = dict(extra)
        self.preamble = preamble
        self._by_dialect: dict[str, tuple[str, str, Callable[[Any], Any] | None]] = {}

    def _compile(self, dialect: sa.Dialect) -> tuple[str, str, Callable[[Any], Any] | None]:
        """(CREATE FUNCTION statement, call, cursor class) for the dialect."""
        known = self._by_dialect.get(dialect.name)
        if known is None:
            if dialect.driver != "psycopg":  # $n parameters and RawCursor: psycopg 3's
                raise RuntimeError(f"{self.name}: PostgreSQL with psycopg 3 only")
            compiled = self.query._compile(dialect)
            if None in compiled.sql_types:
                raise TypeError(f"{self.name}: every parameter of the query needs a type")
            # Without lengths: a cast to varchar(n) cuts a longer value where the INSERT would
            # refuse it (as SQLAlchemy's own casts do; a parameter's length means nothing anyway).
            types = [_LENGTH.sub("", t) for t in (*compiled.sql_types, *self.extra.values())]
            first_extra = len(compiled.sql_types) + 1
            preamble = self.preamble.format(**{name: f"${first_extra + i}" for i, name in enumerate(self.extra)})
            body = f"RETURNS TABLE ({self.returns}) LANGUAGE plpgsql VOLATILE AS $crm$\nBEGIN\n{preamble}\n"
            body += f"RETURN QUERY {compiled.sql};\nEND\n$crm$"
            # The body's digest in the name: a connection (a pooler's, during a deploy) holding an
            # older body under the same argument types can never run it for the new one.
            name = f"{self.name}_{hashlib.sha256(body.encode()).hexdigest()[:12]}"
            create = f"CREATE OR REPLACE FUNCTION pg_temp.{name}({', '.join(types)}) {body}"
            # Every argument cast to its declared type: psycopg sends ints as int8 and text as
            # "unknown", and a function is only found by its exact argument types.
            arguments = ", ".join(f"${i}::{sql_type}" for i, sql_type in enumerate(types, start=1))
            # our own identifier (checked in __init__) and type names: no value is written into the SQL
            known = (create, f"SELECT * FROM pg_temp.{name}({arguments})", compiled.cursor_class)  # noqa: S608
            self._by_dialect[dialect.name] = known
        return known

    def rows(self, connection: sa.Connection, values: Mapping[str, Any]) -> Sequence[tuple]:
        """Call the function with ``values`` (the query's parameters and the extra ones); creates
        it first if this connection has not yet. Every row, as the driver's plain tuples."""
        create, call, cursor_class = self._compile(connection.dialect)
        args = self.query.arguments(connection.dialect, values, frozenset(self.extra))
        args.extend(values[name] for name in self.extra)
        info = connection.connection.info  # lives as long as the database connection itself
        key = ("temp function", self.name)
        try:
            if info.get(key) != create:
                run_on_cursor(connection, create, (), cursor_class).close()
                # Made for good only outside a transaction (a rollback would take it away again).
                info[key] = create if connection.connection.dbapi_connection.autocommit else None
            return fetch_all(run_on_cursor(connection, call, tuple(args), cursor_class))
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == UNDEFINED_FUNCTION:
                info.pop(key, None)  # e.g. dropped by DISCARD ALL: made again on the next call
            raise


UNDEFINED_FUNCTION = "42883"
_LENGTH = re.compile(r"\(\s*\d+\s*(,\s*\d+\s*)?\)")


def fetch_all(cursor) -> Sequence[tuple]:
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def run_on_cursor(connection: sa.Connection, sql: str, parameters: Any, cursor_class: Callable[[Any], Any] | None):
    """Execute ``sql`` on a new DBAPI cursor of ``connection``; a driver error is raised as
    SQLAlchemy's (a lost connection is invalidated, as SQLAlchemy itself would)."""
    raw = connection.connection
    cursor = None
    try:
        cursor = raw.cursor() if cursor_class is None else cursor_class(raw.dbapi_connection)
        cursor.execute(sql, parameters)
    except connection.dialect.loaded_dbapi.Error as exc:
        if cursor is not None:
            cursor.close()
        invalidated = connection.dialect.is_disconnect(exc, raw.dbapi_connection, cursor)
        if invalidated:
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql,
            None,
            exc,
            connection.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=invalidated,
            dialect=connection.dialect,
        ) from exc
    return cursor


def insert_parameters(
    table: sa.Table, prefix: str = "", given: Collection[str] | None = None
) -> tuple[dict[str, sa.BindParameter], dict[str, Callable[[], Any]]]:
    """For every column an INSERT writes: a bind parameter named ``prefix`` + the column's key,
    typed as the column (by column key), and the value it takes when not given (by parameter
    name): the column's Python-side default, else NULL. An autoincrement key and columns with
    only a server default are left to the database. With ``given`` (the column keys the caller
    will pass), columns without a Python-side default that are not given are left out too
    (NULL), which keeps a long statement short."""
    binds: dict[str, sa.BindParameter] = {}
    defaults: dict[str, Callable[[], Any]] = {}
    for column in table.columns:
        if column.primary_key and column.autoincrement is not False:
            continue
        left_to_database = column.server_default is not None or given is not None
        if column.default is None and left_to_database and (given is None or column.key not in given):
            continue
        name = prefix + column.key
        binds[column.key] = sa.bindparam(name, type_=column.type)
        default = column.default
        if default is None:
            defaults[name] = _none
        elif default.is_scalar:
            defaults[name] = _constant(default.arg)
        elif default.is_callable:
            defaults[name] = _called(default.arg)
        else:
            raise ValueError(f"{table.name}.{column.key}: only scalar and callable defaults are supported")
    return binds, defaults


def _fallback(bind: sa.BindParameter) -> Callable[[], Any]:
    """A literal bound by the statement itself (``.limit(20)``) keeps its value; a named
    parameter without one must be given."""
    if bind.callable is not None:
        return bind.callable
    if not bind.required:
        return _constant(bind.value)

    def missing() -> Any:
        raise KeyError(f"no value for parameter {bind.key!r}")

    return missing


def _none() -> None:
    return None


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _called(function: Callable[[Any], Any]) -> Callable[[], Any]:
    # SQLAlchemy wraps a no-argument default to take the execution context, which we have not.
    return lambda: function(None)
