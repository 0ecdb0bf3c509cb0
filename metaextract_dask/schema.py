"""The catalog's tables as pyarrow schemas: the single source of truth for column names and types.

``files``, ``arrays`` and ``stats`` are the core; the extra tables (FITS ``hdus``, DICOM ``dicom``) are declared by
their format backends (``FormatBackend.extra_tables``) and gathered here.
"""

from __future__ import annotations

import pyarrow as pa

from metaextract_dask.formats import BUILTIN_BACKENDS
from metaextract_dask.formats.dicom import DICOM
from metaextract_dask.formats.fits import HDUS

__all__ = ["FILES", "ARRAYS", "HDUS", "DICOM", "STATS", "SCHEMAS", "SCHEMA_VERSION", "FORMATS"]

SCHEMA_VERSION = 1


def _builtin_backends() -> list[type]:
    from metaextract_dask.formats import _load

    return [_load(target) for target in BUILTIN_BACKENDS.values()]


#: Values of ``files.format`` ("unknown": the file's task failed before the file was identified; "special":
#: FIFOs, sockets, devices and symlinks, never opened; "directory": a directory that could not be listed).
FORMATS = tuple(f for cls in _builtin_backends() for f in cls.formats()) + ("binary", "special", "directory",
                                                                              "unknown")

_JSON = pa.string()  # JSON documents are stored as strings; duckdb/pandas parse them on demand
_INTS = pa.list_(pa.int64())

FILES = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("format", pa.string(), nullable=False),
    ("format_version", pa.string()),
    pa.field("size_bytes", pa.int64(), nullable=False),
    ("mtime", pa.timestamp("us", tz="UTC")),
    pa.field("status", pa.string(), nullable=False),  # ok | error
    ("error_type", pa.string()),
    ("error_message", pa.string()),
    ("n_arrays", pa.int32()),
    ("attrs", _JSON),  # file-level attributes (root attrs, global attrs, primary header, key DICOM UIDs)
    ("groups", _JSON),  # {group path: {"attrs": ..., "dims": ...}} for hierarchical formats
    ("warnings", pa.list_(pa.string())),  # distinct warnings the libraries raised while reading
    ("attempts", pa.int32()),  # reads tried (more than 1 after transient I/O errors)
    ("content_hash", pa.string()),  # blake2b of the content, with --hash (Zarr: of all files in the store)
    ("read_seconds", pa.float64()),
    # Compressed single files (gzip, bz2, xz, zstd): the wrapper, and the size of what it holds; `format` is
    # the content's. Null for files that are not compressed (and in catalogs written before these columns).
    ("compression", pa.string()),
    ("uncompressed_bytes", pa.int64()),
    # Remote files: the version the store gave (its ETag, else "last-modified:<date>"), compared by re-scans.
    ("remote_version", pa.string()),
])

ARRAYS = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("name", pa.string(), nullable=False),  # hierarchical: /grp/var, HDU<n>, PixelData
    ("kind", pa.string()),  # dataset | variable | zarr-array | fits-image | fits-table | dicom-pixels
    ("shape", _INTS),
    ("dtype", pa.string()),  # numpy dtype.str; compound as JSON [[field, dtype], ...]; vlen-str
    ("dims", pa.list_(pa.string())),
    ("chunks", _INTS),  # on-disk chunk shape; null for contiguous layouts
    ("compression", pa.string()),  # main codec (gzip, zlib, blosc, zstd, rice_1, ...)
    ("filters", _JSON),  # full filter/codec pipeline
    ("fill_value", _JSON),
    ("units", pa.string()),
    ("nbytes", pa.int64()),  # uncompressed size
    ("attrs", _JSON),
    ("error", pa.string()),  # set when this one array could not be described
])

STATS = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # ok | error | skipped
    ("error_type", pa.string()),
    ("error_message", pa.string()),
    ("device", pa.string()),  # cpu | gpu
    ("strategy", pa.string()),  # full | sample
    ("sampled_fraction", pa.float64()),  # share of the elements read
    ("dask_chunks", _INTS),  # the dask chunk shape used (whole multiples of the on-disk chunks)
    ("n_chunks", pa.int64()),
    ("chunks_read", pa.int64()),
    ("count", pa.int64()),  # elements read
    ("valid_count", pa.int64()),  # finite, not fill
    ("nan_count", pa.int64()),
    ("inf_count", pa.int64()),
    ("fill_count", pa.int64()),  # equal to _FillValue / missing_value / BLANK
    ("min", pa.float64()),  # of the raw stored values
    ("max", pa.float64()),
    ("mean", pa.float64()),
    ("std", pa.float64()),  # population standard deviation (merged M2 / n)
    ("phys_min", pa.float64()),  # after scale_factor/add_offset (BSCALE/BZERO, RescaleSlope/Intercept)
    ("phys_max", pa.float64()),
    ("phys_mean", pa.float64()),
    ("phys_std", pa.float64()),
    # quantiles of the valid raw values from the one-pass sketch: within 0.4 % (relative) of the order statistic
    # of rank ceil(n q - 1) (numpy's method="inverted_cdf"); phys_ variants where scale/offset apply
    ("p01", pa.float64()),
    ("p05", pa.float64()),
    ("p25", pa.float64()),
    ("p50", pa.float64()),
    ("p75", pa.float64()),
    ("p95", pa.float64()),
    ("p99", pa.float64()),
    ("phys_p01", pa.float64()),
    ("phys_p05", pa.float64()),
    ("phys_p25", pa.float64()),
    ("phys_p50", pa.float64()),
    ("phys_p75", pa.float64()),
    ("phys_p95", pa.float64()),
    ("phys_p99", pa.float64()),
    ("hist_min", pa.float64()),  # histogram range (raw units)
    ("hist_max", pa.float64()),
    # valid_range | valid_min/valid_max | dtype | data (sketch) | data (second pass)
    ("hist_range_source", pa.string()),
    ("bins", pa.int32()),
    ("hist_counts", pa.list_(pa.int64())),
    ("hist_underflow", pa.int64()),
    ("hist_overflow", pa.int64()),
    ("hist_exact", pa.bool_()),  # counts binned value by value (True) or derived from the sketch (False)
    ("passes", pa.int32()),  # 1; 2 for float data without a valid range with metaextract.profile.histogram: exact
])



def _gather() -> dict[str, pa.Schema]:
    tables: dict[str, pa.Schema] = {"files": FILES, "arrays": ARRAYS}
    for cls in _builtin_backends():
        for name, schema in cls.extra_tables.items():
            if name in tables or name == "stats":
                raise RuntimeError(f"backend {cls.name!r} redeclares catalog table {name!r}")
            tables[name] = schema
    tables["stats"] = STATS
    return tables


#: Every catalog table by name, in catalog order.
SCHEMAS: dict[str, pa.Schema] = _gather()
