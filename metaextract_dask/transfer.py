"""Copy a catalog between a directory and a database (either way, or database to database), chunk by chunk.

Reading goes by key ranges (SQL) or by part and record batch (Parquet), ``metaextract.sql.chunk-rows`` rows
at a time; each chunk is one transaction (upserts: exporting again updates, never duplicates) or one Parquet
part. The catalog-wide facts (scan summary and settings, profile info, completion) go along.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from metaextract_dask import config
from metaextract_dask.catalog import Catalog, SQLCatalog, open_catalog
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.sinks import CatalogError, ParquetSink, open_sink

__all__ = ["export", "iter_chunks"]


def iter_chunks(catalog: Catalog, name: str, rows: int) -> Iterator[pa.Table]:
    """Table `name` of `catalog` in pieces of at most about `rows` rows (SQL: of `rows` files)."""
    if isinstance(catalog, SQLCatalog):
        from metaextract_dask import sqldb

        yield from sqldb.iter_arrow(catalog.url, name, rows)
        return
    import pyarrow.parquet as pq

    for part in catalog.parts(name):
        with pq.ParquetFile(part) as f:
            for batch in f.iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch]).cast(SCHEMAS[name])


def export(source: Any, destination: Any, *, chunk_rows: int | None = None) -> dict[str, int]:
    """Copy the catalog `source` into `destination` (a directory or an SQLAlchemy URL).

    Parameters
    ----------
    source : Catalog, path or URL
        A catalog directory or database.
    destination : path or URL
        A new catalog directory (an existing catalog directory with rows is refused: parts would be added
        twice), or a database (rows are upserted: an export into the same database again updates them).
    chunk_rows : int, optional
        Rows per transaction or part (default ``metaextract.sql.chunk-rows``).

    Returns
    -------
    dict
        Rows copied per table.
    """
    src = source if isinstance(source, Catalog) else open_catalog(source)
    rows = int(chunk_rows or config.get("sql.chunk-rows", 20000))
    if rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, not {chunk_rows!r}")
    manifest = src.manifest
    counts: dict[str, int] = {}
    with open_sink(destination) as sink:
        if isinstance(sink, ParquetSink) and sink.has_visible:
            raise CatalogError(f"export goes into a new catalog directory; {sink.output} holds a catalog already")
        for name in SCHEMAS:
            counts[name] = 0
            for chunk in iter_chunks(src, name, rows):
                if isinstance(sink, ParquetSink):
                    sink.write_batch({name: chunk})
                else:
                    sink.upsert(name, chunk)
                counts[name] += chunk.num_rows
        for name, info in (manifest.get("tables") or {}).items():  # the profile's settings and timing
            if isinstance(sink, ParquetSink):
                sink.manifest.setdefault("tables", {})[name] = info  # committed by finish
            else:
                sink.set_table_info(name, info)
        sink.finish(set())
        if manifest.get("summary") is not None:
            sink.set_summary(manifest["summary"], manifest.get("settings"))
    return counts
