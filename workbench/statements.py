"""Prepared statements on a pooled autocommit DB-API connection, for the hot path (token check,
resolve).

Resolve runs for every step of every pipeline.  SQLAlchemy's per-execution work (session,
transaction objects, parameter and result processing) costs several times what SQLite or
PostgreSQL spend running its few statements, and every call into the driver releases the GIL,
which under a threaded server costs a thread switch.  So the statements are built with Core,
compiled once per dialect, and run on the driver's cursor of an autocommit connection: a
single statement commits by itself, without BEGIN and COMMIT round trips.

On PostgreSQL (psycopg 3) the statements go to libpq directly (``_Libpq``): each is prepared once
per connection and run with ``PQexecPrepared``, parameters as text (bytes as binary), rows in
binary.  psycopg's cursor spends more of the client's CPU per statement (adapting, its
prepared-statement bookkeeping, its generator-driven wait loop) than the round trip itself; its
rows and errors are the same.  Writes that must commit together go in one pipeline that ends in
one Sync: one round trip, one implicit transaction, committed when the Sync is answered."""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import re
import threading
import weakref
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql import ClauseElement

from .errors import Unavailable

try:
    import psycopg
    from psycopg import pq
except ImportError:  # SQLite only
    psycopg = pq = None

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
    # PostgreSQL through libpq: the SQL with $1, $2 …, and its parameters (``_numbered``)
    libpq: tuple[bytes, list[tuple[str | None, Any]]] | None = None


class Prepared:
    """A Core statement compiled once per dialect.  Its result columns must need no type
    conversion (integers, strings, bytes, booleans): rows come straight from the driver."""

    _numbers = itertools.count()

    def __init__(self, stmt: ClauseElement):
        self.stmt = stmt
        self._forms: dict[str, _Form] = {}
        self.name = f"wb_{next(self._numbers)}".encode()  # its prepared name on a connection
        self.decoders: list | None = None  # PostgreSQL: a function per result column

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
            libpq = _numbered(c.string, constants) if dialect.driver == "psycopg" else None
            form = _Form(c.string, order, processors, constants, row, libpq)
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


class Bound:
    """A ``Prepared`` statement with most of its parameters encoded once, for a dialect: a
    statement run again and again with the same values but for ``dynamic`` ones (an answer
    given again: ``resolution.answer_again``) encodes only those each time."""

    def __init__(self, stmt: Prepared, dialect: Dialect, fixed: dict[str, Any],
                 dynamic: tuple[str, ...]):
        self.stmt, self.dialect, self.form = stmt, dialect.name, stmt.form(dialect)
        form, blank = self.form, dict.fromkeys(dynamic)
        if form.libpq is not None:  # PostgreSQL: libpq's parameters and their formats
            self.params, self.formats = _Libpq.params(stmt, form, {**fixed, **blank})
            self.slots = [(i, k, None) for i, (k, _) in enumerate(form.libpq[1]) if k in blank]
        elif form.order is not None:  # SQLite: the driver's positional parameters
            self.params, self.formats = stmt.params(form, {**fixed, **blank}), None
            self.slots = [(i, k, form.processors.get(k)) for i, (k, _, _) in enumerate(form.order)
                          if k in blank]
        else:
            raise TypeError("Bound needs a positional driver or libpq")
        # the last value of each dynamic parameter and its encoding: a key's (value, encoding)
        # tuple is replaced whole, so threads sharing this statement never see half of one
        self._memo: dict[str, tuple[Any, Any]] = {}

    def fill(self, values: dict[str, Any]) -> tuple[list, list | None]:
        """(parameters, formats) with ``values`` for the dynamic ones."""
        params = list(self.params)
        formats = None if self.formats is None else list(self.formats)
        memo = self._memo
        for i, k, proc in self.slots:
            v = values[k]
            last = memo.get(k)  # a value as last time (say the same details): encoded then
            if last is None or type(last[0]) is not type(v) or last[0] != v:
                enc = _param(v) if formats is not None else proc(v) if proc else v
                last = memo[k] = (v, enc)
            params[i] = last[1]
            if formats is not None:
                formats[i] = 1 if type(v) is bytes else 0
        return params, formats


_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s|%%")


def _numbered(sql: str, constants: dict[str, Any]) -> tuple[bytes, list[tuple[str | None, Any]]]:
    """psycopg's ``%(name)s`` SQL as libpq wants it (``$1``, ``$2`` …, ``%%`` as ``%``), and
    the parameters in order: (name, None) for a value, (None, its text) for a constant."""
    names: list[str] = []

    def number(m: re.Match) -> str:
        if m.group(1) is None:
            return "%"
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"
    text = _PLACEHOLDER.sub(number, sql)
    return text.encode(), [(None, _param(constants[k])) if k in constants else (k, None)
                           for k in names]


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()  # as SQLAlchemy's JSON type writes it


def _timestamp(value: datetime) -> bytes:
    if value.tzinfo is None:  # what SQLAlchemy's DateTime(timezone=True) stores: UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat().encode()


# A parameter in PostgreSQL's text format, by its Python type (bytes go as they are, in
# binary format: see ``_Libpq.params``)
_ENCODERS: dict[type, Callable[[Any], bytes | None]] = {
    str: str.encode, int: lambda v: b"%d" % v, bool: lambda v: b"t" if v else b"f",
    bytes: lambda v: v, type(None): lambda v: v, datetime: _timestamp, dict: _json, list: _json}


def _param(value: Any) -> bytes | None:
    try:
        return _ENCODERS[type(value)](value)
    except KeyError:
        raise TypeError(f"no text form for a {type(value).__name__} parameter") from None


_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)  # PostgreSQL's binary timestamps count from it


def _int(v: bytes) -> int:
    return int.from_bytes(v, "big", signed=True)


def _timestamptz(v: bytes) -> datetime:
    return _EPOCH + timedelta(microseconds=_int(v))


# Binary result columns by type OID: what psycopg's cursor would hand back for them.
_DECODERS: dict[int, Callable[[bytes], Any]] = {
    16: lambda v: v == b"\x01",  # bool
    17: bytes,  # bytea
    20: _int, 21: _int, 23: _int,  # int8, int2, int4
    19: bytes.decode, 25: bytes.decode, 1042: bytes.decode, 1043: bytes.decode,  # text types
    114: json.loads,  # json
    1114: lambda v: _timestamptz(v).replace(tzinfo=None),  # timestamp
    1184: _timestamptz,  # timestamptz
}


def _decoder(oid: int) -> Callable[[bytes], Any]:
    try:
        return _DECODERS[oid]
    except KeyError:
        raise TypeError(f"the hot path reads no columns of type OID {oid}") from None


class _Libpq:
    """Runs ``Prepared`` statements on a psycopg connection through its libpq handle."""

    OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)

    def __init__(self, conn):
        self.conn = conn  # the psycopg Connection
        self.pg = conn.pgconn

    @staticmethod
    def params(stmt: Prepared, form: _Form, values: dict[str, Any]):
        params = [_param(values[k]) if k is not None else c for k, c in form.libpq[1]]
        return params, [1 if k is not None and type(values[k]) is bytes else 0
                        for k, _ in form.libpq[1]]

    def prepare(self, stmt: Prepared, form: _Form, prepared: set) -> None:
        if stmt.name not in prepared:
            self.check(self.pg.prepare(stmt.name, form.libpq[0])).clear()
            prepared.add(stmt.name)

    def check(self, res):
        """The result, or the error psycopg's cursor would have raised for it."""
        if res.status in self.OK:
            return res
        if self.pg.status == pq.ConnStatus.BAD:  # no SQLSTATE: the connection is gone
            err = psycopg.OperationalError(
                (res.error_message or self.pg.error_message).decode("utf-8", "replace").strip())
        else:
            err = psycopg.errors.error_from_result(res)
        res.clear()
        raise err

    def send(self, stmt: Prepared, form: _Form, params: list, formats: list, prepared: set):
        """One round trip: run the statement (prepared first if it is new here)."""
        self.prepare(stmt, form, prepared)
        return self.check(self.pg.exec_prepared(stmt.name, params, formats, 1))

    @staticmethod
    def rows(stmt: Prepared, res) -> list[tuple]:
        decoders = stmt.decoders
        if decoders is None or len(decoders) != res.nfields:
            decoders = stmt.decoders = [_decoder(res.ftype(j)) for j in range(res.nfields)]
        get, cols = res.get_value, list(enumerate(decoders))
        out = [tuple(None if (v := get(i, j)) is None else dec(v) for j, dec in cols)
               for i in range(res.ntuples)]
        res.clear()
        return out

    def together(self, batches: list[tuple[Prepared, _Form, list[dict[str, Any]]]],
                 prepared: set) -> None:
        """Every statement and row in one pipeline and one Sync: an implicit transaction that
        commits when the Sync is answered, or rolls back whole at the first error."""
        for stmt, form, _ in batches:
            self.prepare(stmt, form, prepared)
        pg, error = self.pg, None
        pg.enter_pipeline_mode()
        try:
            for stmt, form, rows in batches:
                for values in rows:
                    pg.send_query_prepared(stmt.name, *self.params(stmt, form, values), 1)
            pg.pipeline_sync()
            while True:
                res = pg.get_result()
                if res is None:
                    if pg.status == pq.ConnStatus.BAD:
                        raise psycopg.OperationalError(
                            pg.error_message.decode("utf-8", "replace").strip())
                    continue  # the end of one statement's results
                if res.status == pq.ExecStatus.PIPELINE_SYNC:
                    break
                if res.status == pq.ExecStatus.PIPELINE_ABORTED:
                    continue  # skipped after an earlier error
                try:
                    self.check(res)
                except psycopg.Error as e:
                    error = error or e
                    if pg.status == pq.ConnStatus.BAD:
                        raise
        finally:
            if pg.status != pq.ConnStatus.BAD:
                pg.exit_pipeline_mode()
        if error is not None:
            raise error


class Pool:
    """The hot path's connections to an autocommit engine (see ``db.make_engine``), detached
    from SQLAlchemy's pool: handing one out is a list pop, where SQLAlchemy's checkout and
    checkin (events, reset, bookkeeping) cost as much as a resolve's read.  Nothing needs
    resetting between uses, as every statement commits by itself."""

    def __init__(self, engine: Engine, keep: int = 32):
        self.engine, self.dialect, self.keep = engine, engine.dialect, keep
        self._idle: list[Any] = []  # list.pop and .append are atomic: no lock needed
        # PostgreSQL: the names of the statements prepared on each DB-API connection
        self.prepared: weakref.WeakKeyDictionary[Any, set] = weakref.WeakKeyDictionary()
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
        self.libpq = pool.dialect.driver == "psycopg"
        self.conn = pool.connect()
        self.cursor = None  # made by the first statement, under its retry
        self.fresh = True

    def _retrying(self, do: Callable[[], Any]) -> Any:
        """``do()``; on a fresh connection found dead, once more on a new one."""
        try:
            out = do()
        except self.dialect.loaded_dbapi.Error as e:
            if not (self.fresh and self.dialect.is_disconnect(e, self.conn.dbapi_connection,
                                                              self.cursor)):
                raise
            self.conn.invalidate()
            self.conn = self.pool.new()
            self.cursor = None
            out = do()
        self.fresh = False
        return out

    def _execute(self, sql: str, params: Any) -> None:
        def do():
            if self.cursor is None:
                self.cursor = self.conn.cursor()
            self.cursor.execute(sql, params)
        self._retrying(do)

    def _libpq(self) -> tuple[_Libpq, set]:
        """The libpq runner of the current connection, and the statements prepared on it."""
        conn = self.conn.dbapi_connection
        return _Libpq(conn), self.pool.prepared.setdefault(conn, set())

    def _pq(self, stmt: Prepared, values: dict[str, Any]):
        form = stmt.form(self.dialect)
        return self._send(stmt, form, *_Libpq.params(stmt, form, values))

    def _send(self, stmt: Prepared, form: _Form, params: list, formats: list):
        def do():
            runner, prepared = self._libpq()
            return runner.send(stmt, form, params, formats, prepared)
        return self._retrying(do)

    def _write(self, sql: str, params: Any) -> list:
        """SQLite: a write that returns rows, in the writer's turn."""
        with self.pool.writers.turn():
            self._execute(sql, params)
            return self.cursor.fetchall()  # to the statement's end, which commits it

    def one(self, stmt: Prepared, **values: Any):
        """The first row (a named tuple), or None."""
        form = stmt.form(self.dialect)
        if self.libpq:
            rows = _Libpq.rows(stmt, self._pq(stmt, values))
            return form.row._make(rows[0]) if rows else None
        self._execute(form.sql, stmt.params(form, values))
        row = self.cursor.fetchone()
        return None if row is None else form.row._make(row)

    def all(self, stmt: Prepared, **values: Any) -> list:
        """Every row (named tuples)."""
        form = stmt.form(self.dialect)
        if self.libpq:
            return [form.row._make(r) for r in _Libpq.rows(stmt, self._pq(stmt, values))]
        self._execute(form.sql, stmt.params(form, values))
        return [form.row._make(row) for row in self.cursor.fetchall()]

    def run(self, stmt: Prepared, **values: Any) -> None:
        """Run a write (it waits for its turn: ``WriterQueue``)."""
        if self.libpq:
            self._pq(stmt, values).clear()
            return
        form = stmt.form(self.dialect)
        with self.pool.writers.turn():
            self._execute(form.sql, stmt.params(form, values))

    def write(self, stmt: Prepared, **values: Any) -> list:
        """Run a write that returns rows (``RETURNING``, as plain tuples): committed when this
        returns."""
        if self.libpq:
            return _Libpq.rows(stmt, self._pq(stmt, values))
        form = stmt.form(self.dialect)
        return self._write(form.sql, stmt.params(form, values))

    def bind(self, stmt: Prepared, fixed: dict[str, Any], dynamic: tuple[str, ...]) -> Bound:
        """``stmt`` with ``fixed`` encoded once for this connection's dialect."""
        return Bound(stmt, self.dialect, fixed, dynamic)

    def write_bound(self, bound: Bound, **values: Any) -> list:
        """``write`` for a ``Bound`` statement: ``values`` are its dynamic parameters."""
        if bound.dialect != self.dialect.name:
            raise TypeError(f"statement bound for {bound.dialect}, run on {self.dialect.name}")
        params, formats = bound.fill(values)
        if self.libpq:
            return _Libpq.rows(bound.stmt, self._send(bound.stmt, bound.form, params, formats))
        return self._write(bound.form.sql, params)

    def many(self, stmt: Prepared, rows: list[dict[str, Any]]) -> None:
        """Run a write for each row, all or none."""
        if len(rows) == 1:
            return self.run(stmt, **rows[0])
        self.together((stmt, rows))

    def together(self, *writes: tuple[Prepared, list[dict[str, Any]]]) -> None:
        """Several writes (a statement and its rows each), all or none, with one commit."""
        if self.libpq:
            batches = [(stmt, stmt.form(self.dialect), rows) for stmt, rows in writes]

            def do():
                runner, prepared = self._libpq()
                runner.together(batches, prepared)
            return self._retrying(do)
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
