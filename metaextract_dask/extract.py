"""Worker-side extraction: sniff and read each file of a batch into catalog rows, errors included."""

from __future__ import annotations

import datetime as dt
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import dask.config
import pyarrow as pa

from metaextract_dask import config
from metaextract_dask.discover import FileEntry
from metaextract_dask.formats import sniff
from metaextract_dask.formats.base import Records
from metaextract_dask.jsonutil import dumps
from metaextract_dask.schema import SCHEMAS

__all__ = ["extract_file", "extract_batch", "classify_unknown", "file_row"]

# Extensions that claim a format; a file that wears one without the content is flagged in its attrs.
_SUFFIX_CLAIMS = {".h5": "hdf5", ".hdf5": "hdf5", ".he5": "hdf5", ".nc": "netcdf", ".nc4": "netcdf",
                  ".cdf": "netcdf", ".fits": "fits", ".fit": "fits", ".fts": "fits", ".dcm": "dicom",
                  ".zarr": "zarr"}


def classify_unknown(head: bytes, path: str) -> dict[str, Any]:
    """Describe content no reader claims: empty, text or binary, plus a suffix that lies about it."""
    if not head:
        content = "empty"
    else:
        try:
            head.decode("utf-8")
            content = "binary" if b"\x00" in head else "text"
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the end of the sniffed head is still text.
            content = "text" if exc.start >= len(head) - 3 and b"\x00" not in head else "binary"
    attrs: dict[str, Any] = {"content": content}
    claim = _SUFFIX_CLAIMS.get(os.path.splitext(path)[1].lower())
    if claim:
        attrs["suffix_mismatch"] = f"name suggests {claim}, content is {content}"
    return attrs


def file_row(entry: FileEntry) -> dict[str, Any]:
    """The ``files`` columns known from discovery alone."""
    return {
        "path": entry.path,
        "size_bytes": entry.size,
        "mtime": dt.datetime.fromtimestamp(entry.mtime, tz=dt.timezone.utc),
    }


_MAX_WARNINGS = 20


def _warning_texts(caught: list[warnings.WarningMessage]) -> list[str] | None:
    texts = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return texts[:_MAX_WARNINGS] or None


def extract_file(entry: FileEntry, *, sniff_bytes: int = 1024) -> dict[str, list[dict[str, Any]]]:
    """Rows for all catalog tables from one file; a failure becomes an ``error`` row, never an exception."""
    t0 = time.perf_counter()
    # Warnings are data about the file. (catch_warnings is process-global: fine for the default
    # one-thread workers; with more threads a warning may land on a neighbouring file's row.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = _extract(entry, sniff_bytes)
    rows["files"][0]["warnings"] = _warning_texts(caught)
    rows["files"][0]["read_seconds"] = time.perf_counter() - t0
    return rows


def _extract(entry: FileEntry, sniff_bytes: int) -> dict[str, list[dict[str, Any]]]:
    row = file_row(entry)
    fmt = "binary"
    head = b""
    try:
        if not entry.is_dir:
            with open(entry.path, "rb") as f:
                head = f.read(sniff_bytes)
        reader = sniff(entry.path, head)
        if reader is None:
            rec = Records(format="binary", attrs=classify_unknown(head, entry.path))
        else:
            fmt = reader.name
            rec = reader.read(entry.path)
    except Exception as exc:
        if fmt == "netcdf":
            fmt = "netcdf3" if head.startswith(b"CDF") else "netcdf4"
        row.update(format=fmt, status="error", error_type=type(exc).__name__, error_message=str(exc) or repr(exc))
        return {"files": [row], "arrays": [], "hdus": [], "dicom": []}

    row.update(format=rec.format, format_version=rec.format_version, status="ok", n_arrays=len(rec.arrays),
               attrs=dumps(rec.attrs), groups=dumps(rec.groups) if rec.groups else None)
    tag = {"path": entry.path}
    return {
        "files": [row],
        "arrays": [{**tag, **r} for r in rec.arrays],
        "hdus": [{**tag, **r} for r in rec.hdus],
        "dicom": [{**tag, **r} for r in rec.dicom],
    }


def extract_batch(entries: Sequence[FileEntry], settings: dict[str, Any] | None = None) -> dict[str, pa.Table]:
    """Extract a batch of files into one Arrow table per catalog table (the unit of work of a scan task).

    Parameters
    ----------
    entries : sequence of FileEntry
        The files of this batch.
    settings : dict, optional
        ``metaextract.scan`` settings resolved on the client: workers of an existing cluster do not share
        the client's dask.config, so the task carries what it needs.
    """
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
    with dask.config.set({"metaextract.scan": settings} if settings else {}):
        sniff_bytes = int(config.get("scan.sniff-bytes", 1024))
        for entry in entries:
            for name, part in extract_file(entry, sniff_bytes=sniff_bytes).items():
                rows[name].extend(part)
    return {name: pa.Table.from_pylist(rows[name], schema=SCHEMAS[name]) for name in SCHEMAS}
