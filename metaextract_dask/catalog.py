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
    def scan_summary(self) -> dict[str, Any] | None:
        """Summary of the scan that wrote this catalog (None while a scan is still running)."""
        return self.manifest.get("summary")

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
        """One table as a lazy dask DataFrame over its committed parts."""
        import dask.dataframe as dd

        parts = self.parts(name)
        if not parts:  # a scan still running has not committed this table yet
            return dd.from_pandas(SCHEMAS[name].empty_table().to_pandas(), npartitions=1)
        return dd.read_parquet(parts, schema=SCHEMAS[name])

    def to_arrow(self, name: str) -> Any:
        """One table read eagerly into a pyarrow Table."""
        import pyarrow.dataset as ds

        parts = self.parts(name)
        for part in parts:  # one clear message instead of arrow's, for a part this user may not read
            if not os.access(part, os.R_OK) and os.path.exists(part):
                self._denied(part)
        return ds.dataset(parts, schema=SCHEMAS[name], format="parquet").to_table()

    def to_pandas(self, name: str) -> pd.DataFrame:
        """One table read eagerly into pandas."""
        return self.to_arrow(name).to_pandas()

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

    def summary(self) -> dict[str, Any]:
        """Counts computed from the tables: files by format and status, bytes, arrays, errors by type."""
        files = self.to_pandas("files")
        errors = files[files["status"] == "error"]
        return {
            "files": len(files),
            "bytes": int(files["size_bytes"].sum()),
            "by_format": {k: int(v) for k, v in files["format"].value_counts().sort_index().items()},
            "errors": len(errors),
            "error_types": {k: int(v) for k, v in errors["error_type"].value_counts().items()},
            "arrays": int(self.to_pandas("arrays").shape[0]),
        }

    def __repr__(self) -> str:
        s = self.summary()
        formats = ", ".join(f"{k}={v}" for k, v in s["by_format"].items())
        return f"<Catalog {self.path}: {s['files']} files ({formats}), {s['arrays']} arrays, {s['errors']} errors>"

    def _repr_html_(self) -> str:
        import html

        s = self.summary()
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in s["by_format"].items())
        return (f"<b>metaextract catalog</b> <code>{html.escape(self.path)}</code><br>"
                f"{s['files']} files, {s['bytes']:,} bytes, {s['arrays']} arrays, {s['errors']} errors"
                f"<table><tr><th>format</th><th>files</th></tr>{rows}</table>")


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
