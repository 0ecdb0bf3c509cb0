"""SQL catalogs, the database side: URLs, table definitions, Arrow <-> rows, transactions with retries, and
reading a table back by key ranges.

The tables and columns are the Parquet catalog's (:data:`metaextract_dask.schema.SCHEMAS`), typed:

========================  =====================================  ======================================
Arrow                     PostgreSQL                             SQLite
========================  =====================================  ======================================
string (JSON documents)   ``json`` (the text kept verbatim)      ``TEXT``
string                    ``text`` (keys ``COLLATE "C"``)        ``TEXT``
int32 / int64 / float64   ``integer`` / ``bigint`` / ``double``  ``INTEGER`` / ``REAL``
timestamp[us, UTC]        ``timestamptz``                        ``DATETIME`` (UTC text)
date32                    ``date``                               ``DATE``
list<scalar>              ``bigint[]``, ``text[]``, ``double[]``  JSON text
list<fixed list<double>>  ``double precision[][]``               JSON text
========================  =====================================  ======================================

Primary keys: ``files`` (path), ``arrays`` (path, name), ``hdus`` (path, index), ``dicom`` (path), ``stats``
(path, name); indexes on the columns people filter by. ``metaextract_meta`` holds what a Parquet catalog's
manifest holds (schema version, completion, the last scan's summary and settings); ``metaextract_stats_pending``
the rows of a profile still running.

Keys compare byte-wise on both databases (PostgreSQL ``COLLATE "C"``, SQLite ``BINARY``), so a directory's
files are one key range (``path >= 'dir/' AND path < 'dir0'``), which is how a scan scopes its rows and how
readers split a table into partitions.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import pyarrow as pa

from metaextract_dask import config
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.sinks import CatalogError

__all__ = ["is_sql_url", "sql_url", "safe_url", "make_engine", "dispose_engines", "catalog_tables", "META", "STATS_PENDING",
           "KEYS", "INDEXES", "tables", "describe", "read_partition", "to_rows", "from_rows", "transaction", "is_transient", "partition_bounds",
           "read_range", "read_arrow", "to_pandas", "iter_arrow", "prefix_range", "SQLError"]

T = TypeVar("T")

#: Table of catalog-wide facts (key -> JSON text): schema_version, created, complete, summary, settings, ...
META = "metaextract_meta"
#: Stats rows of a profile that has not finished (the Parquet catalog's ``stats_pending`` parts).
STATS_PENDING = "metaextract_stats_pending"
#: Primary key of each catalog table.
KEYS: dict[str, tuple[str, ...]] = {"files": ("path",), "arrays": ("path", "name"), "hdus": ("path", "index"),
                                    "dicom": ("path",), "stats": ("path", "name")}
#: Indexed columns (besides the keys): what people filter by.
INDEXES: dict[str, tuple[str, ...]] = {"files": ("format", "status"), "stats": ("status",),
                                       "dicom": ("Modality", "StudyInstanceUID", "SeriesInstanceUID",
                                                 "PatientID")}
#: Columns holding JSON documents (strings in Arrow).
JSON_COLUMNS: dict[str, frozenset[str]] = {
    "files": frozenset({"attrs", "groups"}), "arrays": frozenset({"filters", "fill_value", "attrs"}),
    "hdus": frozenset({"header"}), "dicom": frozenset({"header"}), "stats": frozenset()}
_DIALECTS = {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle", "cockroachdb"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?://")
_SUPPORTED = ("sqlite", "postgresql")


class SQLError(CatalogError):
    """A database error that retries did not cure (or that no retry can cure), with a readable message."""


def is_sql_url(output: Any) -> bool:
    """True when `output` names a database (an SQLAlchemy URL such as ``sqlite:///x.db``), not a directory."""
    if type(output).__name__ == "URL" and hasattr(output, "drivername"):
        return True
    if not isinstance(output, str):
        return False
    m = _URL.match(output)
    return bool(m) and m.group(1).lower() in _DIALECTS


def sql_url(output: Any) -> Any:
    """`output` as a ``sqlalchemy.engine.URL``; ``postgresql://`` uses psycopg 3."""
    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # pragma: no cover - an install without the extra
        raise ImportError("SQL catalogs need SQLAlchemy and psycopg: pip install 'metaextract-dask[sql]'") from None
    try:
        url = make_url(output)
    except Exception as exc:  # sqlalchemy's ArgumentError, a bad port: say so without echoing a password
        raise ValueError(f"not a valid database URL: {safe_url(output)} ({type(exc).__name__})") from None
    backend = url.get_backend_name()
    if backend == "postgres":
        url = url.set(drivername="postgresql")
        backend = "postgresql"
    if backend == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if backend not in _SUPPORTED:
        raise ValueError(f"SQL catalogs are written to SQLite or PostgreSQL, not {backend} ({safe_url(url)})")
    return url


def safe_url(url: Any) -> str:
    """`url` as text with any password hidden (``***``): what logs, summaries and messages show."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


# --------------------------------------------------------------------------- engines
_ENGINES: dict[tuple[str, bool], Any] = {}
_ENGINES_LOCK = threading.Lock()


def make_engine(url: Any, *, write: bool = False) -> Any:
    """An engine for `url`, cached per process (workers reading partitions share one).

    SQLite: WAL journal (readers never block the writer), ``synchronous=NORMAL`` (safe against a killed
    process), a busy timeout (``metaextract.sql.busy-timeout``), and, for writers, ``BEGIN IMMEDIATE``
    transactions: a writer takes the lock when it starts, so two writers queue instead of failing a lock
    upgrade half way.
    """
    import sqlalchemy as sa

    url = sql_url(url)
    key = (url.render_as_string(hide_password=False), write)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                raise ValueError("an SQLite catalog needs a file (sqlite:///path/catalog.db), not memory: "
                                 "workers and later runs must see it")
            timeout = float(config.get("sql.busy-timeout", 30))
            engine = sa.create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False},
                                      poolclass=sa.pool.NullPool if not write else None)

            @sa.event.listens_for(engine, "connect")
            def _connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # transactions are ours (BEGIN below), not the driver's
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
        else:
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
        _ENGINES[key] = engine
        return engine


def dispose_engines() -> None:
    """Close the pooled connections of every engine this process made (they are made again on demand)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.dispose()


# --------------------------------------------------------------------------- tables
def _json_type() -> Any:
    import sqlalchemy as sa
    from sqlalchemy.types import UserDefinedType

    class PGJSON(UserDefinedType):  # type: ignore[type-arg]
        """PostgreSQL ``json``: strings in (cast server-side), the same text out (``json`` keeps it verbatim)."""

        cache_ok = True

        def get_col_spec(self, **kw: Any) -> str:
            return "JSON"

        def bind_expression(self, bindvalue: Any) -> Any:
            return sa.cast(bindvalue, PGJSON())

        def column_expression(self, col: Any) -> Any:
            return sa.cast(col, sa.Text)

    return sa.Text().with_variant(PGJSON(), "postgresql")


def _sql_type(table: str, field: pa.Field, key: bool) -> Any:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    t = field.type
    if pa.types.is_string(t):
        if field.name in JSON_COLUMNS.get(table, ()):
            return _json_type()
        return sa.Text().with_variant(sa.Text(collation="C"), "postgresql") if key else sa.Text()
    if pa.types.is_int32(t) or pa.types.is_int16(t) or pa.types.is_int8(t):
        return sa.Integer()
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_floating(t):
        return sa.Double()
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        inner = t.value_type
        if pa.types.is_list(inner) or pa.types.is_fixed_size_list(inner):
            elem, dims = _sql_type(table, pa.field("x", inner.value_type), False), 2
        else:
            elem, dims = _sql_type(table, pa.field("x", inner), False), 1
        return sa.Text().with_variant(postgresql.ARRAY(elem, dimensions=dims), "postgresql")
    raise TypeError(f"no SQL type for {table}.{field.name}: {t}")


def catalog_tables(metadata: Any) -> dict[str, Any]:
    """The catalog's tables (and the meta and pending-stats tables) defined on `metadata`."""
    import sqlalchemy as sa

    out: dict[str, Any] = {}
    for name, schema in [*SCHEMAS.items(), (STATS_PENDING, SCHEMAS["stats"])]:
        keys = KEYS["stats" if name == STATS_PENDING else name]
        cols = [sa.Column(f.name, _sql_type(name, f, f.name in keys), primary_key=f.name in keys,
                          nullable=f.name in keys or f.nullable) for f in schema]
        idx = [sa.Index(f"ix_{name}_{c.lower()}", c) for c in INDEXES.get(name, ())]
        out[name] = sa.Table(name, metadata, *cols, *idx)
    out[META] = sa.Table(META, metadata, sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text))
    return out


# --------------------------------------------------------------------------- Arrow <-> rows
def _list_to_json(v: Any) -> Any:
    return None if v is None else json.dumps(v)


def _no_nul(v: Any) -> Any:  # PostgreSQL text cannot hold NUL: written as the escape \x00
    return v.replace("\x00", "\\x00") if isinstance(v, str) and "\x00" in v else v


def _no_nul_list(v: Any) -> Any:
    return None if v is None else [_no_nul(x) for x in v]


def to_rows(name: str, table: pa.Table, dialect: str) -> list[dict[str, Any]]:
    """Rows of `table` (catalog table `name`) as the database takes them; the last row of a key wins."""
    schema = SCHEMAS["stats" if name == STATS_PENDING else name]
    table = table.select([f.name for f in schema]).cast(schema)
    cols: dict[str, list[Any]] = {}
    for f in schema:
        values = table.column(f.name).to_pylist()
        t = f.type
        if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
            if dialect != "postgresql":
                values = [_list_to_json(v) for v in values]
            elif pa.types.is_string(t.value_type):
                values = [_no_nul_list(v) for v in values]
        elif dialect == "postgresql" and pa.types.is_string(t):
            values = [_no_nul(v) for v in values]
        cols[f.name] = values
    names = list(cols)
    rows = [dict(zip(names, vals)) for vals in zip(*cols.values())]
    keys = KEYS["stats" if name == STATS_PENDING else name]
    unique = {tuple(r[k] for k in keys): r for r in rows}  # one statement may not update a row twice
    return list(unique.values()) if len(unique) != len(rows) else rows


def from_rows(name: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dialect: str) -> pa.Table:
    """An Arrow table of catalog table `name` (its schema, `columns` of it) from database rows."""
    schema = SCHEMAS["stats" if name == STATS_PENDING else name]
    arrays = []
    fields = []
    for i, col in enumerate(columns):
        f = schema.field(col)
        values = [r[i] for r in rows]
        t = f.type
        if (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) and dialect != "postgresql":
            values = [None if v is None else json.loads(v) for v in values]
        elif pa.types.is_timestamp(t) and t.tz is not None:  # SQLite returns naive UTC datetimes
            values = [v.replace(tzinfo=dt.timezone.utc) if v is not None and v.tzinfo is None else v for v in values]
        arrays.append(pa.array(values, type=t))
        fields.append(f)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# --------------------------------------------------------------------------- transactions
_MAX_BACKOFF = 5.0  # seconds: the doubling stops here (a long outage is waited out in steps this long)
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "53400"}
_TRANSIENT_TEXT = ("database is locked", "database is busy", "database table is locked",
                   "server closed the connection", "connection refused", "terminating connection")


def is_transient(exc: BaseException) -> bool:
    """True for database errors worth a retry: locks, serialisation failures, deadlocks, lost connections."""
    import sqlalchemy as sa

    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state and (state in _TRANSIENT_STATES or state.startswith("08")):
        return True
    text = str(orig).lower()
    return any(t in text for t in _TRANSIENT_TEXT)


def describe(exc: BaseException) -> str:
    """The driver's message of a database error, without the statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"[:500]


def transaction(engine: Any, work: Callable[[Any], T], what: str, on_retry: Callable[[], None] | None = None) -> T:
    """Run ``work(connection)`` in one transaction; transient errors roll it back and run it again
    (``metaextract.sql.retries`` times, backoff ``metaextract.sql.retry-backoff`` doubled up to 5 s, with
    jitter).

    Raises
    ------
    SQLError
        A non-transient error, or a transient one that outlasted the retries.
    """
    import sqlalchemy as sa

    retries = int(config.get("sql.retries", 8))
    backoff = float(config.get("sql.retry-backoff", 0.05))
    attempt = 0
    while True:
        try:
            with engine.begin() as conn:
                return work(conn)
        except sa.exc.DBAPIError as exc:
            if not is_transient(exc) or attempt >= retries:
                tries = f" after {attempt + 1} tries" if attempt else ""
                raise SQLError(f"{what} failed{tries}: {describe(exc)}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise SQLError(f"{what} failed: {describe(exc)}") from exc
        if on_retry is not None:
            on_retry()
        time.sleep(min(backoff * 2 ** attempt, _MAX_BACKOFF) * (0.5 + random.random()))
        attempt += 1


# --------------------------------------------------------------------------- reading back
def prefix_range(prefix: str) -> tuple[str, str]:
    """``(lo, hi)``: the keys below directory `prefix` are ``lo <= key < hi`` (byte-wise order)."""
    base = prefix.rstrip("/")
    return base + "/", base + "0"  # "0" is the character after "/"


def _select(table: Any, columns: Sequence[str] | None = None) -> Any:
    import sqlalchemy as sa

    cols = [table.c[c] for c in (columns or [c.name for c in table.columns])]
    return sa.select(*cols)


def partition_bounds(url: Any, name: str, per_partition: int) -> list[str]:
    """Lower bounds of the key ranges splitting table `name` into partitions of about `per_partition`
    distinct paths (a file's rows are never split); empty for an empty table."""
    import sqlalchemy as sa

    engine = make_engine(url)
    t = sa.Table(name, sa.MetaData(), sa.Column("path", sa.Text))
    paths = sa.select(t.c.path).distinct().subquery()
    rn = sa.func.row_number().over(order_by=paths.c.path).label("rn")
    numbered = sa.select(paths.c.path, rn).subquery()
    query = (sa.select(numbered.c.path).where((numbered.c.rn - 1) % per_partition == 0)
             .order_by(numbered.c.path))
    return transaction(engine, lambda c: [r[0] for r in c.execute(query)], f"reading {name}")


@functools.lru_cache(maxsize=1)
def tables() -> dict[str, Any]:
    """The catalog's table definitions (one MetaData per process)."""
    import sqlalchemy as sa

    return catalog_tables(sa.MetaData())


_COMPLETE: set[tuple[str, str]] = set()  # (url, table) whose database table has every column of the schema


def missing_columns(engine: Any, name: str) -> set[str]:
    """Columns of catalog table `name` that its database table lacks (a catalog written by an older version,
    before columns were added to the schema); empty, and then remembered, when it has them all."""
    import sqlalchemy as sa

    key = (engine.url.render_as_string(hide_password=False), name)
    if key in _COMPLETE:
        return set()
    have = {c["name"] for c in transaction(engine, lambda c: sa.inspect(c).get_columns(name), f"inspecting {name}")}
    missing = {c.name for c in tables()[name].columns} - have
    if not missing:
        _COMPLETE.add(key)
    return missing


def read_range(url: Any, name: str, lo: str | None, hi: str | None, columns: Sequence[str] | None = None,
               where: Any = None) -> pa.Table:
    """Rows of table `name` with ``lo <= path < hi`` (None: unbounded), in key order, as Arrow (columns the
    database table lacks, as in a catalog written by an older version, are null)."""
    engine = make_engine(url)
    table = tables()[name]
    cols = list(columns or [c.name for c in table.columns])
    absent = missing_columns(engine, name) & set(cols)
    wanted, cols = cols, [c for c in cols if c not in absent]
    query = _select(table, cols)
    if lo is not None:
        query = query.where(table.c.path >= lo)
    if hi is not None:
        query = query.where(table.c.path < hi)
    if where is not None:
        query = query.where(where(table))
    query = query.order_by(*[table.c[k] for k in KEYS["stats" if name == STATS_PENDING else name]])
    rows = transaction(engine, lambda c: c.execute(query).all(), f"reading {name}")
    got = from_rows(name, rows, cols, engine.dialect.name)
    if not absent:
        return got
    schema = SCHEMAS["stats" if name == STATS_PENDING else name]
    return pa.Table.from_arrays([got[c] if c not in absent else pa.nulls(got.num_rows, schema.field(c).type)
                                 for c in wanted], schema=pa.schema([schema.field(c) for c in wanted]))


def to_pandas(table: pa.Table) -> Any:
    """`table` as a dask partition of the Parquet catalog's tables is (:func:`metaextract_dask.frames.to_pandas`
    with ``lazy``: Arrow-backed integers, booleans, strings, lists and dates)."""
    from metaextract_dask.frames import to_pandas as frame

    return frame(table, lazy=True)


def read_partition(lo: str | None, hi: str | None, *, url: str, name: str) -> Any:
    """One dask partition (pandas) of table `name`: the key range ``[lo, hi)`` (runs on a worker)."""
    return to_pandas(read_range(url, name, lo, hi))


def iter_arrow(url: Any, name: str, chunk: int) -> Iterator[pa.Table]:
    """Table `name` in key ranges of about `chunk` paths each, in key order."""
    bounds = partition_bounds(url, name, chunk)
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] if i + 1 < len(bounds) else None
        yield read_range(url, name, lo, hi)


def read_arrow(url: Any, name: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole of table `name` as Arrow (in key order)."""
    return read_range(url, name, None, None, columns)
