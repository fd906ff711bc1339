"""Prepared statements on a pooled autocommit DB-API connection, for the hot path (token check,
resolve).

Resolve runs for every step of every pipeline.  SQLAlchemy's per-execution work (session,
transaction objects, parameter and result processing) costs several times what SQLite or
PostgreSQL spend running its few statements, and every call into the driver releases the GIL,
which under a threaded server costs a thread switch.  So the statements are built with Core,
compiled once per dialect, and run on the driver's cursor of an autocommit connection: a
single statement commits by itself, without BEGIN and COMMIT round trips."""
from __future__ import annotations

from collections import namedtuple
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql import ClauseElement


class _Form(NamedTuple):
    sql: str
    order: list[str] | None  # parameter order for positional drivers (SQLite), else None
    processors: dict[str, Callable[[Any], Any]]
    constants: dict[str, Any]  # values of the statement's own literals, already processed
    row: Any  # namedtuple type of the result rows, or None


class Prepared:
    """A Core statement compiled once per dialect.  Its result columns must need no type
    conversion (integers, strings, bytes, booleans): rows come straight from the driver."""

    def __init__(self, stmt: ClauseElement):
        self.stmt = stmt
        self._forms: dict[str, _Form] = {}

    def form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            c = self.stmt.compile(dialect=dialect)
            processors, constants = {}, {}
            for name, bind in c.binds.items():
                proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if not bind.required:
                    constants[name] = proc(bind.effective_value) if proc else bind.effective_value
                elif proc is not None:
                    processors[name] = proc
            columns = getattr(self.stmt, "selected_columns", None)
            row = namedtuple("Row", columns.keys()) if columns is not None else None
            form = _Form(c.string, list(c.positiontup) if c.positional else None, processors,
                         constants, row)
            self._forms[dialect.name] = form
        return form

    def params(self, form: _Form, values: dict[str, Any]) -> Any:
        procs = form.processors
        values = {**values, **form.constants}
        if form.order is not None:
            return [procs[k](values[k]) if k in procs else values[k] for k in form.order]
        return {k: procs[k](v) if k in procs else v for k, v in values.items()}


class Raw:
    """A checked-out autocommit connection: runs ``Prepared`` statements.

    The pool does not ping connections first (a round trip per checkout); instead, if the
    first statement finds the connection dead (say the database restarted), it is replaced and
    the statement re-run, which is safe because nothing has run on it yet."""

    def __init__(self, engine: Engine):
        self.engine, self.dialect = engine, engine.dialect
        self.conn = engine.raw_connection()
        self.cursor = None  # made by the first statement, under its retry
        self.fresh = True

    def _execute(self, sql: str, params: Any) -> None:
        try:
            if self.cursor is None:
                self.cursor = self.conn.cursor()
            self.cursor.execute(sql, params)
        except self.dialect.loaded_dbapi.Error as e:
            if not (self.fresh and self.dialect.is_disconnect(e, self.conn.dbapi_connection,
                                                              self.cursor)):
                raise
            self.conn.invalidate()
            self.conn = self.engine.raw_connection()
            self.cursor = self.conn.cursor()
            self.cursor.execute(sql, params)
        self.fresh = False

    def one(self, stmt: Prepared, **values: Any):
        """The first row (a named tuple), or None."""
        form = stmt.form(self.dialect)
        self._execute(form.sql, stmt.params(form, values))
        row = self.cursor.fetchone()
        return None if row is None else form.row._make(row)

    def run(self, stmt: Prepared, **values: Any) -> None:
        form = stmt.form(self.dialect)
        self._execute(form.sql, stmt.params(form, values))

    def many(self, stmt: Prepared, rows: list[dict[str, Any]]) -> None:
        """Run for each row, all or none."""
        if len(rows) == 1:
            return self.run(stmt, **rows[0])
        form = stmt.form(self.dialect)
        self._execute("BEGIN", ())
        try:
            self.cursor.executemany(form.sql, [stmt.params(form, r) for r in rows])
        except BaseException:
            self.cursor.execute("ROLLBACK")
            raise
        self.cursor.execute("COMMIT")


@contextmanager
def connection(engine: Engine) -> Iterator[Raw]:
    """A pooled connection of an autocommit engine (see ``db.make_engine``)."""
    raw = Raw(engine)
    try:
        yield raw
    except engine.dialect.loaded_dbapi.Error:
        raw.conn.invalidate()  # a driver error may leave it in any state: never pool it again
        raise
    finally:
        raw.conn.close()
