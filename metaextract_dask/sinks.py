"""Catalog sink: Parquet parts committed batch by batch under a manifest, resumable and incremental.

Layout::

    CATALOG/_manifest.json         the commit record: which parts make up the catalog
    CATALOG/<table>/part-<id>.parquet

A part is written under a temporary name and renamed into place; then the manifest is rewritten atomically
(temporary file, fsync, rename). The manifest is the only commit point: readers use the parts it lists, and
on open a sink deletes parts it does not list (left by a crash between rename and manifest update).

Batches are either *visible* (``batches``: part of the catalog) or *pending* (``pending``: committed by a
scan that replaces rows of a live catalog; swapped in when that scan finishes, so readers never see a file
twice). An interrupted scan keeps what it committed; the next run reuses it.

A full disk (``ENOSPC``, ``EDQUOT``, or ``EFBIG`` past a file size limit) while writing is a
:class:`CatalogFullError`: the part or manifest being written is removed, the last committed manifest stays,
and the next scan resumes from it.

Catalogs hold personal data (DICOM patient names and birth dates): files are created with
``metaextract.catalog.file-mode`` (0600) and the catalog and table directories get
``metaextract.catalog.dir-mode`` (0700), whatever the umask.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaextract_dask import config
from metaextract_dask.schema import SCHEMA_VERSION, SCHEMAS

__all__ = ["ParquetSink", "open_sink", "output_files", "is_sql_url", "MANIFEST", "CatalogError", "CatalogFullError", "read_manifest", "committed_parts",
           "catalog_modes"]

MANIFEST = "_manifest.json"
_LOCK = ".lock"
_TMP = ".tmp-"
#: Temporaries of ours in the catalog directory: the manifest being written (and, from older versions,
#: ``tempfile.mkstemp`` names). A directory holding only these, the lock and empty table directories is a
#: catalog whose creation never finished (a full disk, a kill), not someone else's data.
_TMP_NAME = re.compile(r"^\.tmp-(_manifest\.json\.\d+|[a-z0-9_]{8})$")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CatalogError(Exception):
    """The output location cannot hold a catalog (not writable, not a catalog, in use by another scan, full)."""


class CatalogFullError(CatalogError):
    """The device holding the catalog is full (or a quota or file size limit was reached) while writing.

    What was committed before stays; running the same scan again, once there is space, resumes it.
    """

    def __init__(self, message: str, errno_: int) -> None:
        super().__init__(message)
        self.errno = errno_


def is_sql_url(output: Any) -> bool:
    """True when `output` is an SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://...``), not a directory."""
    from metaextract_dask.sqldb import is_sql_url as check

    return check(output)


def open_sink(output: Any, *, scope: Iterable[str] | None = None) -> Any:
    """The sink for `output`: :class:`metaextract_dask.sqlsink.SQLSink` for an SQLAlchemy URL, else a
    :class:`ParquetSink` directory. `scope` (the catalog paths of a scan's inputs) limits what an SQL sink
    compares and deletes to rows below them (a database is shared); a catalog directory is one scan's."""
    if is_sql_url(output):
        from metaextract_dask.sqlsink import SQLSink

        return SQLSink(output, scope=scope)
    return ParquetSink(output)


def output_files(output: Any) -> list[str]:
    """What a scan writing `output` must leave out of its inputs: the catalog directory, or the SQLite files."""
    if is_sql_url(output):
        from metaextract_dask.sqlsink import sqlite_files

        try:
            return sqlite_files(output)
        except ValueError:  # an unsupported database: the sink says so
            return []
    return [os.fspath(output)]


def catalog_modes() -> tuple[int, int]:
    """``(file mode, directory mode)`` for catalog contents (``metaextract.catalog.file-mode`` / ``dir-mode``)."""
    return (config.parse_mode(config.get("catalog.file-mode", "0600")),
            config.parse_mode(config.get("catalog.dir-mode", "0700")))


def _write_file(path: str, mode: int, write: Callable[[str], None]) -> None:
    """Create `path` with `mode` (not the umask's: never readable by others, not even while written), fill it
    with ``write(path)``, and remove it again if that fails. A file left from an earlier run is replaced."""
    if os.path.lexists(path):  # an earlier run's temporary, never renamed (the caller holds the catalog lock)
        os.remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from a configured mode
    finally:
        os.close(fd)
    try:
        write(path)  # opening an existing file for writing keeps its mode
    except BaseException:
        try:
            os.remove(path)
        except OSError:
            pass
        raise


def _write_json(data: Any) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(json.dumps(data, indent=1).encode())
            f.flush()
            os.fsync(f.fileno())
    return write


def _atomic_write_json(path: str, data: Any, mode: int = 0o600) -> None:
    tmp = os.path.join(os.path.dirname(path), f"{_TMP}{os.path.basename(path)}.{os.getpid()}")
    _write_file(tmp, mode, _write_json(data))
    try:
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def _set_mode(path: str, mode: int) -> None:
    """chmod what this user owns (a catalog directory someone else owns is theirs to set)."""
    try:
        st = os.stat(path)
        if st.st_uid == os.geteuid() and (st.st_mode & 0o7777) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest of the catalog at `path`."""
    with open(os.path.join(path, MANIFEST)) as f:
        return json.load(f)


def committed_parts(path: str, table: str, manifest: dict[str, Any] | None = None) -> list[str]:
    """Paths of the visible parts of `table`, in batch order."""
    manifest = manifest if manifest is not None else read_manifest(path)
    return [os.path.join(path, table, b["parts"][table]) for b in manifest.get("batches", []) if table in b["parts"]]


class ParquetSink:
    """Writes (or continues) the catalog directory `output`.

    Parameters
    ----------
    output : str
        Catalog directory; created if missing. A non-empty directory that is not a catalog is refused
        rather than overwritten. An existing catalog is continued: its manifest says what is committed.

    Raises
    ------
    CatalogError
        Unwritable output, a directory that is not a catalog, or another scan holding the catalog's lock.
    """

    #: A commit's cost here is mostly fixed (a Parquet writer per table, the manifest): the scan commits what
    #: arrived every ``scan.commit-interval`` seconds.
    group_commits = True

    def __init__(self, output: str | os.PathLike[str]) -> None:
        from metaextract_dask.cluster import check_main_guard

        check_main_guard(spawning=False)  # a worker re-running an unguarded script would only find the lock taken
        self.output = os.path.abspath(os.fspath(output))
        self.compression = config.get("catalog.compression", "zstd")
        self.file_mode, self.dir_mode = catalog_modes()
        self._lock_fd: int | None = None
        self._uncommitted: list[str] = []  # parts written since the last manifest commit
        with self._space():
            self._prepare()

    @contextmanager
    def _space(self) -> Iterator[None]:
        """Turn a full disk into a CatalogFullError; drop the parts no manifest will ever list."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            for path in self._uncommitted:
                try:
                    os.remove(path)
                except OSError:
                    pass
            self._uncommitted = []
            raise CatalogFullError(
                f"{os.strerror(exc.errno)} while writing the catalog {self.output}: what was committed is kept; "
                "free some space and run the scan again to resume it", exc.errno) from exc

    # -- opening -------------------------------------------------------------------------------------------

    def _unfinished(self, names: set[str]) -> bool:
        """Only what a catalog creation that never reached its first manifest leaves behind."""
        for name in names:
            path = os.path.join(self.output, name)
            if _TMP_NAME.match(name) and os.path.isfile(path):
                continue
            if name in SCHEMAS and os.path.isdir(path) and all(n.startswith(_TMP) for n in os.listdir(path)):
                continue
            return False
        return True

    def _prepare(self) -> None:
        out = self.output
        if os.path.exists(out) and not os.path.isdir(out):
            raise CatalogError(f"output exists and is not a directory: {out}")
        try:
            os.makedirs(out, mode=self.dir_mode, exist_ok=True)
        except OSError as exc:
            if exc.errno in _FULL:
                raise
            raise CatalogError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
        if not os.access(out, os.W_OK | os.X_OK):
            raise CatalogError(f"output directory is not writable: {out}")
        existing = set(os.listdir(out)) - {_LOCK}
        if existing and MANIFEST not in existing and not self._unfinished(existing):
            raise CatalogError(f"output directory is not empty and holds no catalog: {out}")
        self._lock()
        _set_mode(out, self.dir_mode)
        for name in existing:  # manifests whose writer died before the rename (no writer runs: we hold the lock)
            if _TMP_NAME.match(name):
                os.remove(os.path.join(out, name))
        if MANIFEST in existing:
            self.manifest = read_manifest(out)
            if self.manifest.get("schema_version") != SCHEMA_VERSION:
                raise CatalogError(f"catalog {out} has schema version {self.manifest.get('schema_version')}, "
                                   f"this version writes {SCHEMA_VERSION}: scan into a new directory")
        else:
            self.manifest = {"schema_version": SCHEMA_VERSION, "created": time.time(), "complete": False,
                             "next_id": 0, "batches": [], "pending": []}
            self._commit()  # a catalog from the first byte on: a failure after this leaves something to resume
        for name in SCHEMAS:
            path = os.path.join(out, name)
            os.makedirs(path, mode=self.dir_mode, exist_ok=True)
            _set_mode(path, self.dir_mode)
        self._run_start_id = int(self.manifest["next_id"])  # batches from here on are this run's
        self._remove_orphans()
        self._commit()

    def _lock(self) -> None:
        fd = os.open(os.path.join(self.output, _LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CatalogError(f"another scan is writing the catalog {self.output}") from None
        self._lock_fd = fd
        _set_mode(os.path.join(self.output, _LOCK), self.file_mode)

    def _referenced(self) -> set[str]:
        refs: set[str] = set()
        for batch in self.manifest["batches"] + self.manifest["pending"]:
            refs.update(os.path.join(name, part) for name, part in batch["parts"].items())
        refs.update(os.path.join("stats", part) for part in self.manifest.get("stats_pending", {}).get("parts", []))
        return refs

    def _remove_orphans(self) -> None:
        # Parts renamed into place whose batch never reached the manifest (a crash in between), temporaries.
        # The parts that stay get the configured mode (a catalog written by an older version, or before the
        # mode was changed, becomes consistent).
        refs = self._referenced()
        for name in SCHEMAS:
            for fname in os.listdir(os.path.join(self.output, name)):
                path = os.path.join(self.output, name, fname)
                if os.path.join(name, fname) not in refs:
                    os.remove(path)
                else:
                    _set_mode(path, self.file_mode)

    def _commit(self) -> None:
        self.manifest["updated"] = time.time()
        _atomic_write_json(os.path.join(self.output, MANIFEST), self.manifest, self.file_mode)
        self._uncommitted = []

    # -- what is committed ---------------------------------------------------------------------------------

    def files_rows(self, which: str = "batches", columns: Iterable[str] = ("path", "size_bytes", "mtime", "status",
                                                                            "content_hash")) -> pa.Table:
        """The ``files`` rows of the visible (``"batches"``) or pending (``"pending"``) batches."""
        cols = list(columns)
        paths = [os.path.join(self.output, "files", b["parts"]["files"]) for b in self.manifest[which]
                 if "files" in b["parts"]]
        if not paths:
            return SCHEMAS["files"].empty_table().select(cols)
        return pa.concat_tables([pq.read_table(p, columns=cols, schema=SCHEMAS["files"]) for p in paths])

    @property
    def has_visible(self) -> bool:
        """True when the catalog already holds committed batches."""
        return bool(self.manifest["batches"])

    @property
    def has_pending(self) -> bool:
        """True when batches are committed but not yet visible (an interrupted scan replacing rows)."""
        return bool(self.manifest["pending"])

    # -- writing -------------------------------------------------------------------------------------------

    def _write_part(self, name: str, batch_id: int, table: pa.Table) -> str:
        fname = f"part-{batch_id:06d}.parquet"
        final = os.path.join(self.output, name, fname)
        tmp = os.path.join(self.output, name, f"{_TMP}{fname}")
        _write_file(tmp, self.file_mode, lambda path: pq.write_table(table, path, compression=self.compression))
        self._uncommitted += [tmp, final]
        os.replace(tmp, final)
        return fname

    def write_batch(self, tables: dict[str, pa.Table], *, pending: bool = False) -> int:
        """Commit one batch's tables (empty tables are skipped); returns the batch id.

        With ``pending=True`` the batch is committed but not visible until :meth:`finish`.
        """
        batch_id = int(self.manifest["next_id"])
        parts, rows = {}, {}
        batches = self.manifest["pending" if pending else "batches"]
        with self._space():
            for name, table in tables.items():
                if table.num_rows:
                    parts[name] = self._write_part(name, batch_id, table)
                    rows[name] = table.num_rows
            self.manifest["next_id"] = batch_id + 1
            batches.append({"id": batch_id, "parts": parts, "rows": rows})
            try:
                self._commit()
            except BaseException:  # the manifest on disk does not list it: neither does ours
                batches.pop()
                self.manifest["next_id"] = batch_id
                raise
        return batch_id

    def _filtered(self, batches: list[dict[str, Any]], drop: set[str], replaced: list[str]) -> list[dict[str, Any]]:
        """`batches` without the rows of `drop`: affected parts are rewritten under new ids."""
        if not drop:
            return batches
        out = []
        drop_array = pa.array(sorted(drop))
        for batch in batches:
            # Each part is checked on its own: a profile's stats batch has no files part.
            hit = {name for name, fname in batch["parts"].items()
                   if pc.any(pc.is_in(pq.read_table(os.path.join(self.output, name, fname), columns=["path"])
                                      .column("path"), drop_array)).as_py()}
            if not hit:
                out.append(batch)
                continue
            new_id = int(self.manifest["next_id"])
            self.manifest["next_id"] = new_id + 1
            parts, rows = {}, {}
            for name, fname in batch["parts"].items():
                path = os.path.join(self.output, name, fname)
                if name not in hit:  # untouched parts move to the new batch as they are
                    parts[name], rows[name] = fname, batch["rows"].get(name, 0)
                    continue
                table = pq.read_table(path, schema=SCHEMAS[name])
                keep = table.filter(pc.invert(pc.is_in(table.column("path"), drop_array)))
                replaced.append(path)
                if keep.num_rows:
                    parts[name] = self._write_part(name, new_id, keep)
                    rows[name] = keep.num_rows
            if parts:
                out.append({"id": new_id, "parts": parts, "rows": rows})
        return out

    def finish(self, drop_visible: set[str], drop_pending: set[str] | None = None) -> None:
        """Switch to the final catalog in one manifest commit, and mark it complete.

        Rows of `drop_visible` leave the visible batches and rows of `drop_pending` leave pending batches of
        earlier runs (parts holding them are rewritten under new ids); all pending batches become visible.
        Replaced parts are deleted after the commit.
        """
        with self._space():
            self._finish(drop_visible, drop_pending)

    def _finish(self, drop_visible: set[str], drop_pending: set[str] | None) -> None:
        start = self._run_start_id
        pending = self.manifest["pending"]
        replaced: list[str] = []
        batches = (self._filtered(self.manifest["batches"], drop_visible, replaced)
                   + self._filtered([b for b in pending if b["id"] < start], drop_pending or set(), replaced)
                   + [b for b in pending if b["id"] >= start])
        # Every table keeps at least one (possibly empty) part, so globs and schemas always resolve.
        empty = [name for name in SCHEMAS if not any(name in b["parts"] for b in batches)]
        if empty:
            new_id = int(self.manifest["next_id"])
            self.manifest["next_id"] = new_id + 1
            batches.append({"id": new_id, "rows": {name: 0 for name in empty},
                            "parts": {name: self._write_part(name, new_id, SCHEMAS[name].empty_table())
                                      for name in empty}})
        self.manifest["batches"] = batches
        self.manifest["pending"] = []
        self.manifest["complete"] = True
        # The files changed: rows of an unfinished profile may describe what is no longer there.
        stale = self.manifest.pop("stats_pending", {}).get("parts", [])
        self._commit()
        for path in replaced + [os.path.join(self.output, "stats", part) for part in stale]:
            os.remove(path)

    def replace_table(self, name: str, table: pa.Table, info: dict[str, Any] | None = None) -> None:
        """Make `table` the whole of table `name` (e.g. ``stats`` after a profile), in one manifest commit.
        For ``stats``, the parts of the unfinished profile (:meth:`add_stats_pending`) go with the old ones."""
        with self._space():
            self._replace_table(name, table, info)

    # -- a profile's stats, committed batch by batch ---------------------------------------------------------

    def stats_pending(self, settings: dict[str, Any]) -> pa.Table | None:
        """The stats rows an unfinished profile with the same `settings` committed (None: no such profile;
        the parts of one with other settings are dropped)."""
        pending = self.manifest.get("stats_pending")
        if not pending:
            return None
        if pending.get("settings") != settings:
            self.drop_stats_pending()
            return None
        paths = [os.path.join(self.output, "stats", part) for part in pending["parts"]]
        if not all(os.path.isfile(p) for p in paths):  # removed by hand, or by an older version: start afresh
            self.drop_stats_pending()
            return None
        tables = [pq.read_table(p, schema=SCHEMAS["stats"]) for p in paths]
        return pa.concat_tables(tables) if tables else SCHEMAS["stats"].empty_table()

    def add_stats_pending(self, table: pa.Table, settings: dict[str, Any]) -> None:
        """Commit stats rows of a running profile, not visible to readers until :meth:`replace_table`: a profile
        killed (or stuck on one array) keeps what it computed, and the next one with the same settings resumes."""
        with self._space():
            new_id = int(self.manifest["next_id"])
            part = self._write_part("stats", new_id, table)
            self.manifest["next_id"] = new_id + 1
            pending = self.manifest.setdefault("stats_pending", {"settings": settings, "parts": []})
            pending["parts"].append(part)
            try:
                self._commit()
            except BaseException:  # the manifest on disk does not list it: neither does ours
                pending["parts"].pop()
                if not pending["parts"]:
                    self.manifest.pop("stats_pending")
                self.manifest["next_id"] = new_id
                raise

    def drop_stats_pending(self) -> None:
        """Forget an unfinished profile's stats (its parts are deleted after the commit)."""
        pending = self.manifest.pop("stats_pending", None)
        if pending:
            with self._space():
                self._commit()
            for part in pending["parts"]:
                os.remove(os.path.join(self.output, "stats", part))

    def _replace_table(self, name: str, table: pa.Table, info: dict[str, Any] | None) -> None:
        new_id = int(self.manifest["next_id"])
        self.manifest["next_id"] = new_id + 1
        part = self._write_part(name, new_id, table)
        old = []
        batches = []
        for batch in self.manifest["batches"]:
            if name in batch["parts"]:
                old.append(os.path.join(self.output, name, batch["parts"].pop(name)))
                batch["rows"].pop(name, None)
            if batch["parts"]:
                batches.append(batch)
        batches.append({"id": new_id, "parts": {name: part}, "rows": {name: table.num_rows}})
        self.manifest["batches"] = batches
        if info is not None:
            self.manifest.setdefault("tables", {})[name] = info
        if name == "stats":  # the finished profile's rows are in `table`
            old += [os.path.join(self.output, "stats", p)
                    for p in self.manifest.pop("stats_pending", {}).get("parts", [])]
        self._commit()
        for path in old:
            os.remove(path)

    def set_summary(self, summary: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """Record the summary (and the effective ``metaextract.scan`` settings) of the scan that just finished."""
        self.manifest["summary"] = summary
        if settings is not None:
            self.manifest["settings"] = settings
        with self._space():
            self._commit()

    def close(self) -> None:
        """Release the catalog lock (the manifest is already committed)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
