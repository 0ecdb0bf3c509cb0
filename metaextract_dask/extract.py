"""Worker-side extraction: sniff and read each file of a batch into catalog rows, errors included.

Every file yields exactly one ``files`` row. A failure is an ``error`` row with the exception type and
message; transient I/O errors are retried with exponential backoff; a reader that runs past
``scan.file-timeout`` seconds or grows the process by more than ``scan.file-memory-limit`` is stopped by
:mod:`metaextract_dask.watchdog` and reported as ``timeout`` / ``too_large``.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import random
import time
import warnings
from collections.abc import Sequence
from typing import Any

import dask.config
import pyarrow as pa

from metaextract_dask import config
from metaextract_dask.discover import FileEntry
from metaextract_dask.formats import sniff, suffix_claims
from metaextract_dask.formats.base import Records
from metaextract_dask.jsonutil import dumps
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.watchdog import FileAbort, get_watchdog

__all__ = ["extract_file", "extract_batch", "hash_batch", "classify_unknown", "file_row", "error_tables",
           "content_hash", "TRANSIENT_ERRNOS"]

#: errno values worth another try: the storage, not the file, is at fault (NFS/Lustre hiccups, EIO, ...).
TRANSIENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EIO", "EAGAIN", "EINTR", "EBUSY", "ETIMEDOUT", "ESTALE", "ECONNRESET", "ECONNABORTED", "ENETDOWN",
    "ENETUNREACH", "EHOSTUNREACH", "ENOLCK", "EREMOTEIO") if hasattr(errno, name))

_MAX_WARNINGS = 20
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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
    claim = suffix_claims().get(os.path.splitext(path)[1].lower())
    if claim:
        attrs["suffix_mismatch"] = f"name suggests {claim}, content is {content}"
    return attrs


def file_row(entry: FileEntry) -> dict[str, Any]:
    """The ``files`` columns known from discovery alone."""
    return {
        "path": entry.path,
        "size_bytes": entry.size,
        "mtime": _EPOCH + dt.timedelta(microseconds=entry.mtime_us),
    }


def content_hash(entry: FileEntry) -> str:
    """blake2b (128-bit) of a file's bytes; for a Zarr store, of its files' relative names and bytes."""
    h = hashlib.blake2b(digest_size=16)
    if entry.is_dir:
        for root, dirs, files in os.walk(entry.path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, entry.path).encode() + b"\0")
                with open(full, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
    else:
        with open(entry.path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


class _Failure(Exception):
    """A read failed; carries the format identified so far."""

    def __init__(self, fmt: str, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.fmt = fmt
        self.exc = exc


def _read(entry: FileEntry, sniff_bytes: int) -> tuple[str, Records]:
    fmt = "binary"
    head = b""
    try:
        if not entry.is_dir:
            with open(entry.path, "rb") as f:
                head = f.read(sniff_bytes)
        reader = sniff(entry.path, head)
        if reader is None:
            return fmt, Records(format="binary", attrs=classify_unknown(head, entry.path))
        fmt = reader.error_format(head)  # what an error row says, should the read fail
        reader.require()  # a missing library: an error row naming the package to install
        return fmt, reader.read(entry.path)
    except (Exception, FileAbort) as exc:
        raise _Failure(fmt, exc) from exc


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, FileAbort):
        return exc.reason  # timeout | too_large
    if isinstance(exc, MemoryError):
        return "too_large"
    return type(exc).__name__


def _warning_texts(caught: list[warnings.WarningMessage], problems: list[str]) -> list[str] | None:
    texts = list(dict.fromkeys([*problems, *(f"{w.category.__name__}: {w.message}" for w in caught)]))
    return texts[:_MAX_WARNINGS] or None


def extract_file(entry: FileEntry, *, sniff_bytes: int = 1024, retries: int = 0, backoff: float = 0.5,
                 hash_content: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Rows for all catalog tables from one file; a failure becomes an ``error`` row, never an exception."""
    t0 = time.perf_counter()
    row = file_row(entry)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS if name != "stats"}
    out["files"] = [row]
    problems: list[str] = []
    watchdog = get_watchdog()
    attempts = 0
    # Warnings are data about the file. (catch_warnings is process-global: fine for the default
    # one-thread workers; with more threads a warning may land on a neighbouring file's row.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while True:
            attempts += 1
            failure: _Failure | None = None
            try:
                with watchdog.watch(entry.path):
                    fmt, rec = _read(entry, sniff_bytes)
            except _Failure as exc:
                failure = exc
            except FileAbort as exc:  # delivered in the instant after the reader returned
                failure = _Failure("unknown", exc)
            if failure is not None:
                if attempts <= retries and _transient(failure.exc):
                    # Exponential backoff with jitter, so a struggling file server is not hammered in step.
                    time.sleep(backoff * 2 ** (attempts - 1) * (0.5 + random.random()))
                    continue
                row.update(format=failure.fmt, status="error", error_type=_error_type(failure.exc),
                           error_message=str(failure.exc) or repr(failure.exc))
                break
            row.update(format=rec.format, format_version=rec.format_version, status="ok",
                       n_arrays=len(rec.arrays), attrs=dumps(rec.attrs),
                       groups=dumps(rec.groups) if rec.groups else None)
            tag = {"path": entry.path}
            out["arrays"] = [{**tag, **r} for r in rec.arrays]
            problems = list(rec.warnings)
            for table, rows in rec.tables.items():
                if table in out and table not in ("files", "arrays"):
                    out[table] = [{**tag, **r} for r in rows]
                else:  # a plugin's own table: the catalog has no place for it (yet)
                    problems.append(f"{len(rows)} rows for table {table!r} left out: not a catalog table")
            break
        if hash_content:  # error rows too, so an unchanged bad file is not re-read on every --hash run
            try:
                row["content_hash"] = content_hash(entry)
            except OSError:
                pass
    row.update(warnings=_warning_texts(caught, problems), attempts=attempts, read_seconds=time.perf_counter() - t0)
    return out


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
        kwargs: dict[str, Any] = {
            "sniff_bytes": int(config.get("scan.sniff-bytes", 1024)),
            "retries": int(config.get("scan.retries", 0)),
            "backoff": float(config.get("scan.retry-backoff", 0.5)),
            "hash_content": bool(config.get("scan.hash", False)),
        }
        get_watchdog().configure(config.get("scan.file-timeout"), config.get("scan.file-memory-limit"))
        for entry in entries:
            for name, part in extract_file(entry, **kwargs).items():
                rows[name].extend(part)
    return {name: pa.Table.from_pylist(rows[name], schema=SCHEMAS[name]) for name in SCHEMAS}


def hash_batch(entries: Sequence[FileEntry]) -> list[str | None]:
    """Content hashes of a batch (None where a file cannot be read), for ``--hash`` re-scans."""
    out: list[str | None] = []
    for entry in entries:
        try:
            out.append(content_hash(entry))
        except OSError:
            out.append(None)
    return out


def error_tables(entries: Sequence[FileEntry], error_type: str, message: str, fmt: str = "unknown") -> dict[str, pa.Table]:
    """Catalog tables holding one error row per entry (files whose task could not report for them)."""
    rows = [dict(file_row(e), format=fmt, status="error", error_type=error_type, error_message=message)
            for e in entries]
    tables = {name: SCHEMAS[name].empty_table() for name in SCHEMAS}
    tables["files"] = pa.Table.from_pylist(rows, schema=SCHEMAS["files"])
    return tables
