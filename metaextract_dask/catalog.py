"""Open a catalog (a directory, or a database by SQLAlchemy URL): tables as dask DataFrames (or pandas), plus its
manifest and a summary."""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import Any, NoReturn

import pandas as pd

from metaextract_dask.schema import SCHEMAS
from metaextract_dask.sinks import MANIFEST, committed_parts, is_sql_url, read_manifest

__all__ = ["Catalog", "SQLCatalog", "open_catalog"]


class Catalog:
    """A scanned catalog on disk.

    Tables are Parquet directories (``files``, ``arrays``, ``hdus``, ``dicom``) readable by pandas, dask,
    duckdb (``read_parquet('CATALOG/files/*.parquet')``) and anything else that reads Parquet.

    Parameters
    ----------
    path : str
        The catalog directory written by :func:`metaextract_dask.scan`.
    """

    tables: tuple[str, ...] = tuple(SCHEMAS)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        manifest = os.path.join(self.path, MANIFEST)
        try:  # (os.path.isfile says False for a manifest this user may not even look at)
            with open(manifest, "rb"):
                pass
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise FileNotFoundError(f"not a metaextract catalog (no {MANIFEST}): {self.path}") from None
        except PermissionError:
            self._denied(manifest)

    def _denied(self, path: str) -> NoReturn:
        """A clear PermissionError for a catalog file this user may not read (catalogs are private by default)."""
        import pwd

        where = self.path
        try:
            st = os.stat(where)
            try:
                owner = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                owner = str(st.st_uid)
            detail = f"the catalog belongs to {owner}, mode {st.st_mode & 0o7777:04o}"
        except OSError:
            detail = "its directory cannot be looked at"
        what = "" if path == os.path.join(where, MANIFEST) else f" ({os.path.relpath(path, where)})"
        raise PermissionError(f"cannot read the catalog {where}{what}: permission denied ({detail}; "
                              "see metaextract.catalog.file-mode / dir-mode)") from None

    @property
    def target(self) -> Any:
        """What :func:`metaextract_dask.sinks.open_sink` takes to write this catalog (its directory)."""
        return self.path

    @property
    def manifest(self) -> dict[str, Any]:
        """The catalog manifest: schema version, committed batches, completion flag, scan summary."""
        try:
            return read_manifest(self.path)
        except PermissionError:
            self._denied(os.path.join(self.path, MANIFEST))

    @property
    def scan_summary(self) -> Any:
        """The :class:`~metaextract_dask.scan.ScanSummary` of the scan that wrote this catalog (None while a scan
        is still running)."""
        from metaextract_dask.scan import ScanSummary

        summary = self.manifest.get("summary")
        return None if summary is None else ScanSummary(summary)

    def table_path(self, name: str) -> str:
        """Directory of one table's Parquet parts."""
        if name not in SCHEMAS:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(SCHEMAS)}")
        return os.path.join(self.path, name)

    def parts(self, name: str) -> list[str]:
        """The committed Parquet parts of one table (what the manifest lists; nothing half-written)."""
        self.table_path(name)
        return committed_parts(self.path, name, self.manifest)

    def table(self, name: str) -> Any:
        """One table as a lazy dask DataFrame over its committed parts.

        Consecutive parts are read as one partition of about ``metaextract.catalog.partition-rows`` rows;
        integer and boolean columns are nullable Arrow-backed dtypes (see :mod:`metaextract_dask.frames`).
        """
        from metaextract_dask import config
        from metaextract_dask.frames import group_parts, table_frame

        self.table_path(name)
        manifest = self.manifest
        # a scan still running may not have committed this table yet: an empty frame of the right columns
        parts = [(os.path.join(self.path, name, b["parts"][name]), int(b.get("rows", {}).get(name, 0)))
                 for b in manifest.get("batches", []) if name in b["parts"]]
        target = int(config.get("catalog.partition-rows", 100_000))
        return table_frame(group_parts(parts, target), SCHEMAS[name])

    def to_arrow(self, name: str) -> Any:
        """One table read eagerly into a pyarrow Table."""
        import pyarrow.dataset as ds

        parts = self.parts(name)
        for part in parts:  # one clear message instead of arrow's, for a part this user may not read
            if not os.access(part, os.R_OK) and os.path.exists(part):
                self._denied(part)
        return ds.dataset(parts, schema=SCHEMAS[name], format="parquet").to_table()

    def to_pandas(self, name: str) -> pd.DataFrame:
        """One table read eagerly into pandas (nullable Arrow-backed integers: ``n_arrays`` stays an integer)."""
        from metaextract_dask.frames import to_pandas

        return to_pandas(self.to_arrow(name))

    @cached_property
    def files(self) -> Any:
        """``files`` table (dask DataFrame): one row per file or Zarr store."""
        return self.table("files")

    @cached_property
    def arrays(self) -> Any:
        """``arrays`` table (dask DataFrame): one row per variable, dataset, Zarr array, FITS data HDU, pixel data."""
        return self.table("arrays")

    @cached_property
    def hdus(self) -> Any:
        """``hdus`` table (dask DataFrame): one row per FITS HDU."""
        return self.table("hdus")

    @cached_property
    def dicom(self) -> Any:
        """``dicom`` table (dask DataFrame): one row per DICOM file."""
        return self.table("dicom")

    @cached_property
    def stats(self) -> Any:
        """``stats`` table (dask DataFrame): one row per array profiled by :func:`metaextract_dask.profile`."""
        return self.table("stats")

    def open_array(self, path: str, name: str, **kwargs: Any) -> Any:
        """One array of a catalogued file as a lazy xarray.DataArray (see :func:`metaextract_dask.open_array`)."""
        from metaextract_dask.arrays import open_array
        from metaextract_dask.discover import decode_path

        return open_array(decode_path(path), name, **kwargs)

    def open_arrays(self, path: str, **kwargs: Any) -> Any:
        """All arrays of one catalogued file as a lazy xarray.Dataset."""
        from metaextract_dask.arrays import open_arrays
        from metaextract_dask.discover import decode_path

        return open_arrays(decode_path(path), **kwargs)

    # xarray side (metaextract_dask.combine, .drift, .esm): combined datasets built from the catalog's rows
    def search(self, **query: Any) -> Any:
        """A sub-catalog of the matching files and arrays (``format``, ``name``, ``attrs``, ``path``, ``files``
        columns); see :func:`metaextract_dask.combine.search`."""
        from metaextract_dask.combine import search

        return search(self, **query)

    def open_mfdataset(self, variables: Any = None, **kwargs: Any) -> Any:
        """``(dataset, skipped)``: the files combined along ``concat_dim``, those that do not fit left out with
        the reason; see :func:`metaextract_dask.combine.open_mfdataset`."""
        from metaextract_dask.combine import open_mfdataset

        return open_mfdataset(self, variables, **kwargs)

    def to_dataset_dict(self, groupby: Any = ("format",), **kwargs: Any) -> Any:
        """``({key: dataset}, skipped)`` per group of files; see :func:`metaextract_dask.combine.to_dataset_dict`."""
        from metaextract_dask.combine import to_dataset_dict

        return to_dataset_dict(self, groupby, **kwargs)

    def drift(self, group_by: Any = ("format",), **kwargs: Any) -> Any:
        """Where files that should share structure differ; see :func:`metaextract_dask.drift.drift`."""
        from metaextract_dask.drift import drift

        return drift(self, group_by, **kwargs)

    def to_intake_esm(self, path: str | os.PathLike[str], **kwargs: Any) -> str:
        """Write an intake-esm collection (JSON + CSV); see :func:`metaextract_dask.esm.to_intake_esm`."""
        from metaextract_dask.esm import to_intake_esm

        return to_intake_esm(self, path, **kwargs)

    def summary(self, examples: int = 3) -> dict[str, Any]:
        """Counts computed from the tables: files and bytes by format, errors by type with up to `examples`
        example paths each, rows per table."""
        import pyarrow.compute as pc

        files = self.to_arrow("files").select(["path", "format", "status", "error_type", "size_bytes"])
        by_format = files.group_by("format").aggregate([("path", "count"), ("size_bytes", "sum")])
        by_format = sorted(zip(by_format.column("format").to_pylist(), by_format.column("path_count").to_pylist(),
                               by_format.column("size_bytes_sum").to_pylist()))
        errors = files.filter(pc.equal(files.column("status"), "error"))
        error_types: dict[str, int] = {}
        error_examples: dict[str, list[str]] = {}
        for path, etype in zip(errors.column("path").to_pylist(), errors.column("error_type").to_pylist()):
            etype = etype or "unknown"
            error_types[etype] = error_types.get(etype, 0) + 1
            if len(error_examples.setdefault(etype, [])) < examples:
                error_examples[etype].append(path)
        rows = {name: 0 for name in SCHEMAS}
        for batch in self.manifest.get("batches", []):
            for name, n in batch.get("rows", {}).items():
                if name in rows and name in batch.get("parts", {}):
                    rows[name] += int(n)
        return {
            "files": files.num_rows,
            "bytes": int(pc.sum(files.column("size_bytes")).as_py() or 0),
            "by_format": {k: int(n) for k, n, _ in by_format},
            "bytes_by_format": {k: int(b or 0) for k, _, b in by_format},
            "errors": errors.num_rows,
            "error_types": dict(sorted(error_types.items(), key=lambda kv: -kv[1])),
            "error_examples": error_examples,
            "arrays": rows["arrays"],
            "rows": rows,
        }

    def report(self, output: str | os.PathLike[str], *, title: str | None = None) -> str:
        """Write a self-contained HTML report of this catalog (see :func:`metaextract_dask.report.write_report`).

        Returns
        -------
        str
            The path of the report written.
        """
        from metaextract_dask.report import write_report

        return write_report(self, output, title=title)

    def __repr__(self) -> str:
        s = self.summary()
        formats = ", ".join(f"{k}={v}" for k, v in s["by_format"].items())
        return f"<Catalog {self.path}: {s['files']} files ({formats}), {s['arrays']} arrays, {s['errors']} errors>"

    def _repr_html_(self) -> str:
        from metaextract_dask.display import catalog_html

        return catalog_html(self)


class SQLCatalog(Catalog):
    """A catalog in a database (see :mod:`metaextract_dask.sqlsink`), read like a catalog directory.

    Tables are dask DataFrames over key ranges of ``path`` (``metaextract.sql.partition-rows`` files per
    partition; all rows of one file in one partition), each partition one query run where it is computed.
    ``path`` is the URL with its password hidden; the tasks carry the URL itself, to connect.

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL
        SQLAlchemy URL of a database a scan wrote.
    """

    def __init__(self, url: Any) -> None:  # noqa: D107 - documented on the class
        from metaextract_dask import sqldb

        self.url = sqldb.sql_url(url)
        self.path = sqldb.safe_url(self.url)
        db = self.url.database if self.url.get_backend_name() == "sqlite" else None
        if db is not None and not os.path.isfile(db):  # connecting would create an empty database
            raise FileNotFoundError(f"not a metaextract catalog (no such database file): {db}")
        self._manifest()  # FileNotFoundError now, for a database without a catalog

    @property
    def target(self) -> Any:
        """The URL (with its password) to write this catalog."""
        return self.url

    def _manifest(self) -> dict[str, Any]:
        import sqlalchemy as sa

        from metaextract_dask import sqldb

        engine = sqldb.make_engine(self.url)
        t = sqldb.tables()[sqldb.META]

        def read(conn: Any) -> dict[str, Any]:
            if not sa.inspect(conn).has_table(sqldb.META):
                raise FileNotFoundError(f"not a metaextract catalog (no table {sqldb.META}): {self.path}")
            return {k: json.loads(v) for k, v in conn.execute(sa.select(t.c.key, t.c.value))}

        meta = sqldb.transaction(engine, read, f"reading the catalog {self.path}")
        tables = {k.split(":", 1)[1]: v for k, v in meta.items() if k.startswith("table:")}
        out = {k: v for k, v in meta.items() if not k.startswith("table:")}
        if tables:
            out["tables"] = tables
        return out

    @property
    def manifest(self) -> dict[str, Any]:
        """The catalog-wide facts: schema version, completion flag, the last scan's summary and settings."""
        return self._manifest()

    def table_path(self, name: str) -> str:
        """The table's name in the database."""
        if name not in SCHEMAS:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(SCHEMAS)}")
        return name

    def parts(self, name: str) -> list[str]:
        """Key ranges have no files: the table's name, once."""
        return [self.table_path(name)]

    def table(self, name: str) -> Any:
        """One table as a lazy dask DataFrame, one partition per key range of paths."""
        import dask
        import dask.dataframe as dd

        from metaextract_dask import config, sqldb

        self.table_path(name)
        bounds = sqldb.partition_bounds(self.url, name, int(config.get("sql.partition-rows", 50000)))
        meta = sqldb.to_pandas(SCHEMAS[name].empty_table())
        # the dtypes are read_parquet's already: dask must not turn the list columns into strings
        with dask.config.set({"dataframe.convert-string": False}):
            if not bounds:
                return dd.from_pandas(meta, npartitions=1)
            his = [*bounds[1:], None]
            url = self.url.render_as_string(hide_password=False)
            return dd.from_map(sqldb.read_partition, bounds, his, url=url, name=name, meta=meta,
                               label=f"read-sql-{name}", enforce_metadata=False)

    def to_arrow(self, name: str) -> Any:
        """One table read eagerly into a pyarrow Table (in key order)."""
        from metaextract_dask import sqldb

        self.table_path(name)
        return sqldb.read_arrow(self.url, name)


def open_catalog(path: Any) -> Catalog:
    """Open the catalog at `path`: a catalog directory, or a database by SQLAlchemy URL (:class:`SQLCatalog`)."""
    if is_sql_url(path):
        return SQLCatalog(path)
    return Catalog(path)
