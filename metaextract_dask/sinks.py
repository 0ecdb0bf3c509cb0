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
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaextract_dask import config
from metaextract_dask.schema import SCHEMA_VERSION, SCHEMAS

__all__ = ["ParquetSink", "MANIFEST", "CatalogError", "read_manifest", "committed_parts"]

MANIFEST = "_manifest.json"
_LOCK = ".lock"


class CatalogError(Exception):
    """The output location cannot hold a catalog (not writable, not a catalog, or in use by another scan)."""


def _atomic_write_json(path: str, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = os.path.abspath(os.fspath(output))
        self.compression = config.get("catalog.compression", "zstd")
        self._lock_fd: int | None = None
        self._prepare()

    # -- opening -------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        out = self.output
        if os.path.exists(out) and not os.path.isdir(out):
            raise CatalogError(f"output exists and is not a directory: {out}")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
        if not os.access(out, os.W_OK | os.X_OK):
            raise CatalogError(f"output directory is not writable: {out}")
        existing = set(os.listdir(out)) - {_LOCK}
        if existing and MANIFEST not in existing:
            raise CatalogError(f"output directory is not empty and holds no catalog: {out}")
        self._lock()
        if MANIFEST in existing:
            self.manifest = read_manifest(out)
            if self.manifest.get("schema_version") != SCHEMA_VERSION:
                raise CatalogError(f"catalog {out} has schema version {self.manifest.get('schema_version')}, "
                                   f"this version writes {SCHEMA_VERSION}: scan into a new directory")
        else:
            self.manifest = {"schema_version": SCHEMA_VERSION, "created": time.time(), "complete": False,
                             "next_id": 0, "batches": [], "pending": []}
        for name in SCHEMAS:
            os.makedirs(os.path.join(out, name), exist_ok=True)
        self._run_start_id = int(self.manifest["next_id"])  # batches from here on are this run's
        self._remove_orphans()
        self._commit()

    def _lock(self) -> None:
        fd = os.open(os.path.join(self.output, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CatalogError(f"another scan is writing the catalog {self.output}") from None
        self._lock_fd = fd

    def _referenced(self) -> set[str]:
        refs: set[str] = set()
        for batch in self.manifest["batches"] + self.manifest["pending"]:
            refs.update(os.path.join(name, part) for name, part in batch["parts"].items())
        return refs

    def _remove_orphans(self) -> None:
        # Parts renamed into place whose batch never reached the manifest (a crash in between), temporaries.
        refs = self._referenced()
        for name in SCHEMAS:
            for fname in os.listdir(os.path.join(self.output, name)):
                if os.path.join(name, fname) not in refs:
                    os.remove(os.path.join(self.output, name, fname))

    def _commit(self) -> None:
        self.manifest["updated"] = time.time()
        _atomic_write_json(os.path.join(self.output, MANIFEST), self.manifest)

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

    # -- writing -------------------------------------------------------------------------------------------

    def _write_part(self, name: str, batch_id: int, table: pa.Table) -> str:
        fname = f"part-{batch_id:06d}.parquet"
        final = os.path.join(self.output, name, fname)
        tmp = os.path.join(self.output, name, f".tmp-{fname}")
        pq.write_table(table, tmp, compression=self.compression)
        os.replace(tmp, final)
        return fname

    def write_batch(self, tables: dict[str, pa.Table], *, pending: bool = False) -> int:
        """Commit one batch's tables (empty tables are skipped); returns the batch id.

        With ``pending=True`` the batch is committed but not visible until :meth:`finish`.
        """
        batch_id = int(self.manifest["next_id"])
        self.manifest["next_id"] = batch_id + 1
        parts, rows = {}, {}
        for name, table in tables.items():
            if table.num_rows:
                parts[name] = self._write_part(name, batch_id, table)
                rows[name] = table.num_rows
        self.manifest["pending" if pending else "batches"].append({"id": batch_id, "parts": parts, "rows": rows})
        self._commit()
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
        self._commit()
        for path in replaced:
            os.remove(path)

    def replace_table(self, name: str, table: pa.Table, info: dict[str, Any] | None = None) -> None:
        """Make `table` the whole of table `name` (e.g. ``stats`` after a profile), in one manifest commit."""
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
        self._commit()
        for path in old:
            os.remove(path)

    def set_summary(self, summary: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """Record the summary (and the effective ``metaextract.scan`` settings) of the scan that just finished."""
        self.manifest["summary"] = summary
        if settings is not None:
            self.manifest["settings"] = settings
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
