"""Prepared statements on a pooled autocommit DB-API connection, for the hot path (token check,
resolve).

Resolve runs for every step of every pipeline.  SQLAlchemy's per-execution work (session,
transaction objects, parameter and result processing) costs several times what SQLite or
PostgreSQL spend running its few statements, and every call into the driver releases the GIL,
which under a threaded server costs a thread switch.  So the statements are built with Core,
compiled once per dialect, and run on the driver's cursor of an autocommit connection: a
single statement commits by itself, without BEGIN and COMMIT round trips."""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections import namedtuple
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql import ClauseElement

from .errors import Unavailable

log = logging.getLogger(__name__)
# SQLite's codes for "another writer holds the lock" and "the file cannot be opened or read"
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR")


class _Form(NamedTuple):
    sql: str
    # positional drivers (SQLite): (name, processor or None, is a constant) in parameter order
    order: list[tuple[str, Callable[[Any], Any] | None, bool]] | None
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
            order = [(k, processors.get(k), k in constants) for k in c.positiontup] \
                if c.positional else None
            form = _Form(c.string, order, processors, constants, row)
            self._forms[dialect.name] = form
        return form

    def params(self, form: _Form, values: dict[str, Any]) -> Any:
        if form.order is not None:
            consts = form.constants
            return [consts[k] if const else proc(values[k]) if proc else values[k]
                    for k, proc, const in form.order]
        procs = form.processors
        return {**{k: procs[k](v) if k in procs else v for k, v in values.items()},
                **form.constants}


class Pool:
    """The hot path's connections to an autocommit engine (see ``db.make_engine``), detached
    from SQLAlchemy's pool: handing one out is a list pop, where SQLAlchemy's checkout and
    checkin (events, reset, bookkeeping) cost as much as a resolve's read.  Nothing needs
    resetting between uses, as every statement commits by itself."""

    def __init__(self, engine: Engine, keep: int = 32):
        self.engine, self.dialect, self.keep = engine, engine.dialect, keep
        self._idle: list[Any] = []  # list.pop and .append are atomic: no lock needed
        db = engine.url.database if self.dialect.name == "sqlite" else None
        self.writers = WriterQueue(f"{db}-writers.lock" if db and db != ":memory:" else None)

    def connect(self):
        try:
            return self._idle.pop()
        except IndexError:
            return self.new()

    def new(self):
        conn = self.engine.raw_connection()
        conn.detach()  # from now on ours: closed by release() or dispose()
        return conn

    def release(self, conn) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(conn)
        else:
            conn.close()

    def dispose(self) -> None:
        """Close the idle connections (before a fork, and at exit)."""
        while self._idle:
            self._idle.pop().close()


class WriterQueue:
    """SQLite: lets the hot path's writes through one at a time, across threads and processes,
    queued in the kernel (a thread lock, then ``flock`` on a file beside the database).

    SQLite lets one connection write at a time.  Another gets SQLITE_BUSY, and its busy
    handler sleeps 1 ms, then 2, 5, 10 … before it tries again, while the write it waits for
    takes about 50 µs.  With several server processes, those sleeps, not work, bounded
    resolves per second.  Queued here, each writer wakes as soon as the one before it is done.
    With ``path`` None (PostgreSQL, which locks rows), it does nothing."""

    def __init__(self, path: str | None):
        self.path = path
        self._threads = threading.Lock()
        self._fd, self._pid = -1, 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with self._threads:
            if self._pid != os.getpid():
                # an flock belongs to the open file, which a fork shares: one per process
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


class Raw:
    """A connection of a ``Pool``: runs ``Prepared`` statements.

    The pool does not ping connections first (a round trip per use); instead, if the first
    statement finds the connection dead (say the database restarted), it is replaced and the
    statement re-run, which is safe because nothing has run on it yet."""

    def __init__(self, pool: Pool):
        self.pool, self.dialect = pool, pool.dialect
        self.conn = pool.connect()
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
            self.conn = self.pool.new()
            self.cursor = self.conn.cursor()
            self.cursor.execute(sql, params)
        self.fresh = False

    def one(self, stmt: Prepared, **values: Any):
        """The first row (a named tuple), or None."""
        form = stmt.form(self.dialect)
        self._execute(form.sql, stmt.params(form, values))
        row = self.cursor.fetchone()
        return None if row is None else form.row._make(row)

    def all(self, stmt: Prepared, **values: Any) -> list:
        """Every row (named tuples)."""
        form = stmt.form(self.dialect)
        self._execute(form.sql, stmt.params(form, values))
        return [form.row._make(row) for row in self.cursor.fetchall()]

    def run(self, stmt: Prepared, **values: Any) -> None:
        """Run a write (it waits for its turn: ``WriterQueue``)."""
        form = stmt.form(self.dialect)
        with self.pool.writers.turn():
            self._execute(form.sql, stmt.params(form, values))

    def many(self, stmt: Prepared, rows: list[dict[str, Any]]) -> None:
        """Run a write for each row, all or none."""
        if len(rows) == 1:
            return self.run(stmt, **rows[0])
        self.together((stmt, rows))

    def together(self, *writes: tuple[Prepared, list[dict[str, Any]]]) -> None:
        """Several writes (a statement and its rows each), all or none, with one commit."""
        batches = []
        for stmt, rows in writes:
            form = stmt.form(self.dialect)
            batches.append((form.sql, [stmt.params(form, r) for r in rows]))
        with self.pool.writers.turn():
            self._execute("BEGIN", ())
            try:
                for sql, params in batches:
                    self.cursor.executemany(sql, params)
            except BaseException:
                self.cursor.execute("ROLLBACK")
                raise
            self.cursor.execute("COMMIT")


@contextmanager
def connection(pool: Pool) -> Iterator[Raw]:
    """A connection of the pool for the block; back to the pool after it, unless the driver
    failed on it."""
    try:
        raw = Raw(pool)
    except pool.dialect.loaded_dbapi.Error as e:
        _raise_unavailable(pool.dialect, e)
        raise
    try:
        yield raw
    except pool.dialect.loaded_dbapi.Error as e:
        if raw.conn.is_valid:  # (already invalidated when its replacement failed to connect)
            raw.conn.invalidate()  # a driver error may leave it in any state: never pool it
        _raise_unavailable(pool.dialect, e)
        raise
    except BaseException:  # ours (a refused token, say): the connection itself is fine
        _release(raw)
        raise
    _release(raw)


def _raise_unavailable(dialect: Dialect, err: Exception) -> None:
    """A 503 that says "try again" when the driver says the database cannot be reached now
    (PostgreSQL down or restarting, a connection cut, SQLite locked); other driver errors are
    bugs and stay 500s.  Nothing was answered: a retry is safe."""
    if dialect.name == "sqlite":
        down = getattr(err, "sqlite_errorname", "").startswith(_SQLITE_UNAVAILABLE)
    else:
        down = isinstance(err, dialect.loaded_dbapi.OperationalError)
    if down:
        log.warning("database unavailable: %s", str(err).partition("\n")[0][:200])
        raise Unavailable("the database cannot be reached right now; try again shortly") \
            from err


def _release(raw: Raw) -> None:
    if raw.cursor is not None:
        raw.cursor.close()  # ends a read left open by fetchone (SQLite keeps its snapshot)
    raw.pool.release(raw.conn)
