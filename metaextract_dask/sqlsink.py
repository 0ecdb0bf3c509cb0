"""Catalog sink into a database (SQLAlchemy Core): keyed upserts, one transaction per batch, retried.

:class:`SQLSink` has the interface of :class:`metaextract_dask.sinks.ParquetSink`, so scan, profile, incremental
and resumed runs share one logic; what differs is how rows become visible:

* every batch is one transaction: the rows of its files are deleted from the other tables (a file read again
  may have lost arrays) and all its rows are upserted (``INSERT ... ON CONFLICT (key) DO UPDATE``). A row is
  visible once its batch commits, and a key is never there twice, so there are no *pending* batches: a
  re-scan updates rows in place, a killed one keeps what it committed, and the next run finds those rows
  with the current fingerprints and reads only the rest;
* :meth:`~SQLSink.finish` deletes the rows of files that vanished (and of files whose new rows this run did
  not write), in one transaction;
* a database is shared: a scan only considers (and deletes) rows below its own inputs (``scope``), so scans
  of different trees can write one database at the same time. No lock is taken; two scans of the same tree
  at once end with the rows of whichever wrote a file last.

Transient errors (SQLite ``database is locked``, PostgreSQL serialisation failures, deadlocks, dropped
connections) roll the transaction back and run it again with backoff (``metaextract.sql.retries``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from metaextract_dask import sqldb
from metaextract_dask.schema import SCHEMA_VERSION, SCHEMAS
from metaextract_dask.sinks import CatalogError, catalog_modes

__all__ = ["SQLSink", "sqlite_files"]

_CHUNK = 500  # keys per IN (...) list
_COPY_MIN = 50  # PostgreSQL rows from which COPY into a staging table beats a statement per row
_MAX_ROOTS = 50  # scan inputs matched by the query; more are matched here (SQLite limits expression depth)


def sqlite_files(url: Any) -> list[str]:
    """The files an SQLite catalog consists of (database, WAL, shared memory, journal); [] for a server."""
    url = sqldb.sql_url(url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return []
    db = os.path.abspath(url.database)
    return [db] + [db + suffix for suffix in ("-wal", "-shm", "-journal")]


def _chunks(items: list[str], n: int = _CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class SQLSink:
    """Writes (or continues) the catalog in the database at `output`.

    Parameters
    ----------
    output : str or sqlalchemy.engine.URL
        SQLAlchemy URL: ``sqlite:///path/catalog.db`` or ``postgresql://user:password@host:port/db``. The
        tables are created when missing; a database holding a table of the same name that is not a catalog
        table is refused.
    scope : iterable of str, optional
        Catalog paths (files or directories) of the scan's inputs: :meth:`files_rows` and :meth:`finish`
        only see rows below them. None: the whole catalog (a profile, an export).

    Raises
    ------
    CatalogError
        The database cannot be reached or created, holds something else, or has another schema version.
    """

    #: Results arriving close together are committed one transaction each: a database's cost is per row, and
    #: a commit that gathered a second of results would run alone after the last task (``scan.commit-interval``
    #: is for Parquet catalogs).
    group_commits = False

    def __init__(self, output: Any, *, scope: Iterable[str] | None = None) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql, sqlite

        try:
            self.output = sqldb.sql_url(output)
        except ValueError as exc:
            raise CatalogError(str(exc)) from None
        self.display = sqldb.safe_url(self.output)
        self.dialect = self.output.get_backend_name()
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        self.scope = sorted(set(scope)) if scope is not None else None
        self.file_mode, _ = catalog_modes()
        self.retries = 0  # transactions run again after a transient error
        self._written: set[str] = set()  # files rows this run wrote (kept by finish)
        self._next_id = 0
        self._upserts: dict[str, Any] = {}
        self.tables = sqldb.tables()
        self._sa = sa
        if self.dialect == "sqlite":
            self._create_file()
        try:
            self.engine = sqldb.make_engine(self.output, write=True)
            self._tx(self._prepare, "creating the catalog tables")
        except sqldb.SQLError as exc:
            raise CatalogError(f"cannot use the catalog database: {exc}") from None

    def _create_file(self) -> None:
        """Create the SQLite file with the catalog file mode (it holds personal data), whatever the umask."""
        if self.output.database in (None, "", ":memory:"):
            raise CatalogError("an SQLite catalog needs a file (sqlite:///path/catalog.db), not memory: "
                               "workers and later runs must see it")
        path = os.path.abspath(self.output.database)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise CatalogError(f"cannot create the catalog database {path}: no directory {parent}")
        if os.path.isdir(path):
            raise CatalogError(f"catalog database {path} is a directory")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
            os.close(fd)
            for name in sqlite_files(self.output):
                if os.path.exists(name) and os.stat(name).st_uid == os.geteuid():
                    os.chmod(name, self.file_mode)
        except OSError as exc:
            raise CatalogError(f"cannot create the catalog database {path}: {exc.strerror or exc}") from None

    def _tx(self, work: Any, what: str) -> Any:
        def again() -> None:
            self.retries += 1
        return sqldb.transaction(self.engine, work, f"{what} ({self.display})", on_retry=again)

    # -- opening -------------------------------------------------------------------------------------------

    def _prepare(self, conn: Any) -> None:
        sa = self._sa
        if self.dialect == "postgresql":  # first scans starting together: one creates the tables, one waits
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(741852963)"))
        existing = set(sa.inspect(conn).get_table_names())
        if (existing & set(self.tables)) - {sqldb.META} and sqldb.META not in existing:
            raise CatalogError(f"database {self.display} has tables named like the catalog's "
                               f"({', '.join(sorted(existing & set(self.tables)))}) but holds no catalog")
        for table in self.tables.values():
            table.create(conn, checkfirst=True)
        self._add_new_columns(conn, existing)
        meta = self._read_meta(conn)
        if "schema_version" not in meta:
            self._write_meta(conn, schema_version=SCHEMA_VERSION, created=time.time(), complete=False)
        elif meta["schema_version"] != SCHEMA_VERSION:
            raise CatalogError(f"catalog {self.display} has schema version {meta['schema_version']}, this version "
                               f"writes {SCHEMA_VERSION}: scan into a new database")

    def _add_new_columns(self, conn: Any, existing: set[str]) -> None:
        """Columns added to the schema since the database was created (all nullable): added, read as null."""
        sa = self._sa
        inspector = sa.inspect(conn)
        for name, table in self.tables.items():
            if name not in existing or name == sqldb.META:
                continue
            have = {c["name"] for c in inspector.get_columns(name)}
            for col in table.columns:
                if col.name not in have and col.nullable:
                    kind = col.type.compile(dialect=conn.dialect)
                    conn.execute(sa.text(f'ALTER TABLE "{name}" ADD COLUMN "{col.name}" {kind}'))

    def _read_meta(self, conn: Any) -> dict[str, Any]:
        t = self.tables[sqldb.META]
        return {k: json.loads(v) for k, v in conn.execute(self._sa.select(t.c.key, t.c.value))}

    def _write_meta(self, conn: Any, **items: Any) -> None:
        t = self.tables[sqldb.META]
        ins = self._insert(t)
        stmt = ins.on_conflict_do_update(index_elements=["key"], set_={"value": ins.excluded.value})
        conn.execute(stmt, [{"key": k, "value": json.dumps(v)} for k, v in items.items()])

    def _drop_meta(self, conn: Any, *keys: str) -> None:
        t = self.tables[sqldb.META]
        conn.execute(self._sa.delete(t).where(t.c.key.in_(keys)))

    @property
    def manifest(self) -> dict[str, Any]:
        """The catalog-wide facts (``metaextract_meta``): schema version, completion, summary, settings."""
        return self._tx(self._read_meta, "reading the catalog state")

    # -- what is committed ---------------------------------------------------------------------------------

    def _in_scope(self, table: Any) -> Any:
        sa = self._sa
        if self.scope is None:
            return None
        terms = []
        for root in self.scope:
            lo, hi = sqldb.prefix_range(root)
            terms += [table.c.path == root, sa.and_(table.c.path >= lo, table.c.path < hi)]
        return sa.or_(*terms) if terms else sa.false()

    def files_rows(self, which: str = "batches", columns: Iterable[str] = ("path", "size_bytes", "mtime", "status",
                                                                            "content_hash")) -> pa.Table:
        """The ``files`` rows below the scope (``"pending"``: none; batches are visible once committed)."""
        cols = list(columns)
        if which == "pending":
            return SCHEMAS["files"].empty_table().select(cols)
        many = self.scope is not None and len(self.scope) > _MAX_ROOTS
        query_cols = cols if not many or "path" in cols else ["path", *cols]
        try:
            table = sqldb.read_range(self.output, "files", None, None, query_cols,
                                     where=None if self.scope is None or many else self._in_scope)
        except sqldb.SQLError as exc:
            raise CatalogError(str(exc)) from None
        if many:  # one OR term per input would make a query too deep for SQLite: filter here instead
            roots = set(self.scope or ())
            dirs = tuple(r.rstrip("/") + "/" for r in roots)
            keep = [p in roots or p.startswith(dirs) for p in table.column("path").to_pylist()]
            table = table.filter(pa.array(keep, type=pa.bool_())).select(cols)
        return table

    @property
    def has_visible(self) -> bool:
        """True when the catalog (within the scope) already holds rows."""
        return bool(self.files_rows(columns=["path"]).num_rows)

    @property
    def has_pending(self) -> bool:
        """Always False: a committed batch is visible (keys keep readers from seeing a file twice)."""
        return False

    # -- writing -------------------------------------------------------------------------------------------

    def _upsert(self, name: str) -> Any:
        stmt = self._upserts.get(name)
        if stmt is None:
            t = self.tables[name]
            keys = sqldb.KEYS["stats" if name == sqldb.STATS_PENDING else name]
            ins = self._insert(t)
            stmt = ins.on_conflict_do_update(
                index_elements=list(keys), set_={c.name: ins.excluded[c.name] for c in t.columns
                                                 if c.name not in keys})
            self._upserts[name] = stmt
        return stmt

    def _put(self, conn: Any, name: str, rows: list[dict[str, Any]]) -> None:
        """Upsert `rows` (unique keys) into table `name` within the transaction of `conn`."""
        if not rows:
            return
        if self.dialect != "postgresql" or len(rows) < _COPY_MIN:
            conn.execute(self._upsert(name), rows)
            return
        # PostgreSQL: COPY into a session-private staging table, then one INSERT ... ON CONFLICT from it
        # (a statement per row costs the client and the server several times more)
        t = self.tables[name]
        keys = sqldb.KEYS["stats" if name == sqldb.STATS_PENDING else name]
        cols = [c.name for c in t.columns]
        quoted = ", ".join(f'"{c}"' for c in cols)
        stage = f'"mx_stage_{name}"'
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in keys)
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(f'CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE "{name}") ON COMMIT DELETE ROWS')
            with cur.copy(f"COPY {stage} ({quoted}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row([r[c] for c in cols])
            cur.execute(f'INSERT INTO "{name}" ({quoted}) SELECT {quoted} FROM {stage} '
                        f'ON CONFLICT ({", ".join(chr(34) + k + chr(34) for k in keys)}) DO UPDATE SET {updates}')
            cur.execute(f"TRUNCATE {stage}")  # an export runs many chunks in one session before a commit
        finally:
            cur.close()

    def _rows(self, name: str, table: pa.Table) -> list[dict[str, Any]]:
        keys = sqldb.KEYS["stats" if name == sqldb.STATS_PENDING else name]
        rows = sqldb.to_rows(name, table, self.dialect)
        rows.sort(key=lambda r: tuple(r[k] for k in keys))  # one lock order for every writer: no deadlocks
        return rows

    def _delete_paths(self, conn: Any, names: Iterable[str], paths: list[str]) -> None:
        if not paths:
            return
        sa = self._sa
        for name in names:
            t = self.tables[name]
            if self.dialect == "postgresql":  # one array parameter: no statement to build per key
                from sqlalchemy.dialects.postgresql import ARRAY

                conn.execute(sa.delete(t).where(t.c.path == sa.any_(sa.bindparam("paths", type_=ARRAY(sa.Text)))),
                             {"paths": paths})
                continue
            for chunk in _chunks(paths):
                conn.execute(sa.delete(t).where(t.c.path.in_(chunk)))

    def write_batch(self, tables: dict[str, pa.Table], *, pending: bool = False) -> int:
        """Commit one batch in one transaction: the batch's files lose their rows in the other tables, then
        every row is upserted. `pending` is accepted for the sink interface; rows are visible at once."""
        rows = {name: self._rows(name, t) for name, t in tables.items() if t.num_rows}
        paths = sorted({r["path"] for rs in rows.values() for r in rs})
        children = [name for name in SCHEMAS if name != "files"]

        def work(conn: Any) -> None:
            self._delete_paths(conn, children, paths)
            for name in SCHEMAS:
                if name in rows:
                    self._put(conn, name, rows[name])

        self._tx(work, "committing a batch")
        self._written.update(r["path"] for r in rows.get("files", ()))
        self._next_id += 1
        return self._next_id - 1

    def upsert(self, name: str, table: pa.Table) -> None:
        """Upsert the rows of `table` into table `name` in one transaction (nothing deleted: an export)."""
        if not table.num_rows:
            return
        rows = self._rows(name, table)
        self._tx(lambda conn: self._put(conn, name, rows), f"writing {name}")

    def finish(self, drop_visible: set[str], drop_pending: set[str] | None = None) -> None:
        """Delete the rows of `drop_visible` this run did not write again (vanished files), drop an unfinished
        profile's rows (the files changed), and mark the catalog complete, in one transaction."""
        drop = sorted(set(drop_visible) - self._written)

        def work(conn: Any) -> None:
            self._delete_paths(conn, SCHEMAS, drop)
            conn.execute(self._sa.delete(self.tables[sqldb.STATS_PENDING]))
            self._drop_meta(conn, "stats_pending")
            self._write_meta(conn, complete=True, updated=time.time())

        self._tx(work, "finishing the scan")

    def replace_table(self, name: str, table: pa.Table, info: dict[str, Any] | None = None) -> None:
        """Make `table` the whole of table `name` (``stats`` after a profile) in one transaction; for ``stats``
        the unfinished profile's rows go too."""
        rows = self._rows(name, table)

        def work(conn: Any) -> None:
            conn.execute(self._sa.delete(self.tables[name]))
            if rows:
                self._put(conn, name, rows)
            if name == "stats":
                conn.execute(self._sa.delete(self.tables[sqldb.STATS_PENDING]))
                self._drop_meta(conn, "stats_pending")
            if info is not None:
                self._write_meta(conn, **{f"table:{name}": info})

        self._tx(work, f"replacing {name}")

    # -- a profile's stats, committed batch by batch ---------------------------------------------------------

    def stats_pending(self, settings: dict[str, Any]) -> pa.Table | None:
        """The stats rows an unfinished profile with the same `settings` committed (None: no such profile;
        the rows of one with other settings are dropped)."""
        saved = self.manifest.get("stats_pending")
        if saved is None:
            return None
        if saved != json.loads(json.dumps(settings)):
            self.drop_stats_pending()
            return None
        table = sqldb.read_arrow(self.output, sqldb.STATS_PENDING)
        return table.cast(SCHEMAS["stats"])

    def add_stats_pending(self, table: pa.Table, settings: dict[str, Any]) -> None:
        """Commit stats rows of a running profile (not in ``stats`` until :meth:`replace_table`)."""
        rows = self._rows(sqldb.STATS_PENDING, table)

        def work(conn: Any) -> None:
            if rows:
                self._put(conn, sqldb.STATS_PENDING, rows)
            self._write_meta(conn, stats_pending=settings)

        self._tx(work, "committing profile rows")

    def drop_stats_pending(self) -> None:
        """Forget an unfinished profile's stats."""
        def work(conn: Any) -> None:
            conn.execute(self._sa.delete(self.tables[sqldb.STATS_PENDING]))
            self._drop_meta(conn, "stats_pending")

        self._tx(work, "dropping profile rows")

    def set_summary(self, summary: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """Record the summary (and the effective ``metaextract.scan`` settings) of the scan that just finished."""
        items: dict[str, Any] = {"summary": summary, "updated": time.time()}
        if settings is not None:
            items["settings"] = settings
        self._tx(lambda conn: self._write_meta(conn, **items), "recording the summary")

    def set_table_info(self, name: str, info: dict[str, Any]) -> None:
        """Record what made table `name` (a profile's settings and timing; ``manifest["tables"]``)."""
        self._tx(lambda conn: self._write_meta(conn, **{f"table:{name}": info}), "recording table info")

    def close(self) -> None:
        """Nothing to release: every transaction is committed (pooled connections stay for the next one)."""

    def __enter__(self) -> SQLSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
