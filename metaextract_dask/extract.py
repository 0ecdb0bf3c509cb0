"""Worker-side extraction: sniff and read each file of a batch into catalog rows, errors included.

Every file yields exactly one ``files`` row. A failure is an ``error`` row with the exception type and
message; transient I/O errors are retried with exponential backoff; a reader (or the content hash) that runs
past ``scan.file-timeout`` seconds or grows the process by more than ``scan.file-memory-limit`` is stopped
by :mod:`metaextract_dask.watchdog` and reported as ``timeout`` / ``too_large``. Special entries (FIFOs,
sockets, devices, symlinks not followed, unlisted directories) get their row without being opened.

Warnings raised while a file is read, and the warning log records of the libraries named in
``scan.warning-loggers`` (astropy logs through its own logger), land in the row's ``warnings`` column.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import logging
import os
import random
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dask.config
import pyarrow as pa

from metaextract_dask import config, remote, sources
from metaextract_dask.discover import DIRECTORY_KIND, FileEntry, encode_path, is_utf8_path
from metaextract_dask.formats import sniff, suffix_claims
from metaextract_dask.formats.base import Records
from metaextract_dask.formats.hdf5 import netcdf4_check_in_read
from metaextract_dask.jsonutil import dumps
from metaextract_dask.progress import WorkerTicker
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.watchdog import FileAbort, announce_start, get_watchdog

__all__ = ["extract_file", "extract_batch", "hash_batch", "classify_unknown", "file_row", "error_tables",
           "special_row", "special_tables", "content_hash", "TRANSIENT_ERRNOS", "NON_UTF8_WARNING"]

#: errno values worth another try: the storage, not the file, is at fault (NFS/Lustre hiccups, EIO, ...).
TRANSIENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EIO", "EAGAIN", "EINTR", "EBUSY", "ETIMEDOUT", "ESTALE", "ECONNRESET", "ECONNABORTED", "ENETDOWN",
    "ENETUNREACH", "EHOSTUNREACH", "ENOLCK", "EREMOTEIO") if hasattr(errno, name))

_MAX_WARNINGS = 20

#: Row warning of a file whose name is not valid UTF-8 (its ``path`` is escaped, see ``encode_path``).
NON_UTF8_WARNING = (r"PathWarning: the file name is not valid UTF-8; path holds its bytes as \xNN escapes "
                    "(metaextract_dask.discover.decode_path gives the OS path)")
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
    """The ``files`` columns known from discovery alone (the path as the catalog stores it)."""
    path = entry.catalog_path
    row: dict[str, Any] = {
        "path": path,
        "size_bytes": max(entry.size, 0),  # (a remote file listed unsized gets its size when it is read)
        "mtime": _EPOCH + dt.timedelta(microseconds=entry.mtime_us),
    }
    if path is not entry.path and "://" not in entry.path and not is_utf8_path(entry.path):
        row["warnings"] = [NON_UTF8_WARNING]  # (encode_path returns its input unchanged)
    if entry.version is not None:
        row["remote_version"] = entry.version
    return row


def special_row(entry: FileEntry) -> dict[str, Any]:
    """The ``files`` row of a special entry or an unlisted directory, made without opening it.

    Special files are ``format = "special"``, ``status = "skipped"``, their kind in ``format_version`` and
    ``attrs`` (with a symlink's target); a directory that could not be listed is ``format = "directory"``,
    an error row with the listing error.
    """
    row = file_row(entry)
    attrs: dict[str, Any] = {"kind": entry.kind}
    if entry.kind == DIRECTORY_KIND:
        etype, _, message = (entry.detail or "OSError: cannot list the directory").partition(": ")
        row.update(format="directory", status="error", error_type=etype,
                   error_message=f"cannot list the directory ({message}); the rows of the files below it are kept")
    else:
        if entry.detail is not None:
            attrs["target"] = encode_path(entry.detail)
        row.update(format="special", format_version=entry.kind, status="skipped")
    row["attrs"] = dumps(attrs)
    return row


def special_tables(entries: Sequence[FileEntry]) -> dict[str, pa.Table]:
    """Catalog tables holding the rows of special entries (built where discovery ran, no worker needed)."""
    tables = {name: SCHEMAS[name].empty_table() for name in SCHEMAS}
    tables["files"] = _table("files", [special_row(e) for e in entries])
    return tables


def _hash_tree(h: Any, top: str, rel: bytes) -> None:
    # Same order and bytes as os.walk(top) with sorted names (hashes stay comparable with older catalogs);
    # entries that are not regular files (a FIFO, a socket, a dangling link) add their name and a marker only:
    # opening a FIFO would block forever.
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    dirs = []
    for e in entries:
        try:
            is_dir, is_file = e.is_dir(), e.is_file()
        except OSError:  # a looping symlink
            is_dir = is_file = False
        if is_dir:
            if not e.is_symlink():  # os.walk does not descend into linked directories either
                dirs.append(e)
            continue
        name = rel + os.fsencode(e.name)
        if is_file:
            h.update(name + b"\0")
            with open(e.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        else:
            h.update(name + b"\0" + b"\0special\0")
    for d in dirs:
        _hash_tree(h, d.path, rel + os.fsencode(d.name) + os.sep.encode())


def content_hash(entry: FileEntry) -> str:
    """blake2b (128-bit) of a file's bytes; for a Zarr store, of its files' relative names and bytes.

    Never opens special files (a special entry raises :class:`ValueError`; inside a store they count by
    name only).
    """
    if entry.special:
        raise ValueError(f"special entry ({entry.kind}) is not hashed: {entry.catalog_path}")
    h = hashlib.blake2b(digest_size=16)
    if entry.is_dir:
        _hash_tree(h, entry.path, b"")
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


def _read(entry: FileEntry, sniff_bytes: int, seen: dict[str, Any] | None = None) -> tuple[str, Records]:
    # The reader gets a local path (metaextract_dask.sources): the file itself, the local copy of a remote
    # file holding the bytes it needs, or the decompressed content of a compressed file.
    fmt = "unknown" if "://" in entry.path else "binary"  # a remote file that cannot be fetched is not binary
    seen = {} if seen is None else seen
    try:
        with sources.open_source(entry, sniff_bytes) as src:
            seen.update(compression=src.compression, uncompressed_bytes=src.uncompressed_bytes)
            if src.info is not None:  # a remote file listed unsized: what the store said when asked
                seen.update(size_bytes=src.info.size, remote_version=src.info.version,
                            mtime=_EPOCH + dt.timedelta(microseconds=src.info.mtime_ns // 1000))
            head = src.head
            fmt = "binary"
            # (inside netcdf4_check_in_read, entered by the callers: plain HDF5 vs netCDF-4 is decided inside
            # the reader's one open)
            reader = sniff(src.path, head, is_dir=entry.is_dir)
            if reader is None:
                return fmt, Records(format="binary", attrs=classify_unknown(head, entry.path))
            fmt = reader.error_format(head)  # what an error row says, should the read fail
            reader.require()  # a missing library: an error row naming the package to install
            return fmt, src.read(reader)
    except (Exception, FileAbort) as exc:
        if getattr(exc, "compression", None):  # the decompression failed: say what it held, if it got that far
            seen["compression"] = exc.compression  # type: ignore[attr-defined]
            inner = getattr(exc, "inner_head", b"")
            fmt = "binary"
            try:
                found = sniff(entry.path, inner) if inner and "://" not in entry.path else None
                fmt = found.error_format(inner) if found is not None else fmt
            except Exception:
                pass
        raise _Failure(fmt, exc) from exc


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, FileAbort):
        return exc.reason  # timeout | too_large
    if isinstance(exc, MemoryError):
        return "too_large"
    return type(exc).__name__


def _warning_texts(caught: list[warnings.WarningMessage], logged: list[str], first: list[str] | None = None
                   ) -> list[str] | None:
    texts = list(dict.fromkeys([*(first or []), *(f"{w.category.__name__}: {w.message}" for w in caught), *logged]))
    return texts[:_MAX_WARNINGS] or None


class _LogRouter(logging.Handler):
    """One handler on the root logger (per process): the warning records of the loggers a reading thread
    asked for go to that thread's list; every other record is left as it was.

    On the root logger because a library's logger may not exist before the reader first imports the
    library, and creating it early would break libraries with their own logger class (astropy).
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.active: dict[int, tuple[tuple[str, ...], list[str]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        capture = self.active.get(record.thread) if record.thread is not None else None
        if capture is not None:
            prefixes, texts = capture
            name = record.name
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                try:
                    texts.append(f"{name} {record.levelname}: {record.getMessage()}")
                except Exception:  # a record whose arguments do not format is still a warning
                    texts.append(f"{name} {record.levelname}: {record.msg}")
                return
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and self._unhandled(record):
            # Without this handler, logging's last resort (stderr) would have shown the record.
            last.handle(record)

    def _unhandled(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


_ROUTER: _LogRouter | None = None
_ROUTER_LOCK = threading.Lock()


@contextmanager
def _capture_logs(prefixes: tuple[str, ...]) -> Iterator[list[str]]:
    """The texts of warning records from loggers `prefixes` (and their children) emitted by this thread."""
    global _ROUTER
    texts: list[str] = []
    if not prefixes:
        yield texts
        return
    if _ROUTER is None:
        with _ROUTER_LOCK:
            if _ROUTER is None:
                _ROUTER = _LogRouter()
                logging.getLogger().addHandler(_ROUTER)
    tid = threading.get_ident()
    _ROUTER.active[tid] = (prefixes, texts)
    try:
        yield texts
    finally:
        _ROUTER.active.pop(tid, None)


class _WarningRouter:
    """One process-wide ``warnings.showwarning`` while any batch runs, handing each warning to the recorder of
    the thread that raised it.

    ``catch_warnings`` swaps process-wide state: batches running in several threads of one worker (``dask
    worker --nthreads 4``) would record each other's warnings, and the one leaving last would restore the
    state of another that had already left. Here the first batch in saves the warnings state and sets
    "always"; the last one out restores it; a warning from a thread without a batch goes where it went.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[int, list[warnings.WarningMessage]] = {}
        self.saved: tuple[Any, Any] | None = None  # (showwarning, filters list) from before the first batch
        self.takeovers = 0  # times a library replaced showwarning during a batch (see _Recorder.took_over)
        self.hook = self.show  # one bound method, so that `warnings.showwarning is hook` tells it is ours

    def enter(self, caught: list[warnings.WarningMessage]) -> None:
        with self.lock:
            if not self.active:
                self.saved = (warnings.showwarning, warnings.filters)
                warnings.filters = list(warnings.filters)  # as catch_warnings: a copy to change, the old to restore
                warnings.simplefilter("always")
                warnings.showwarning = self.hook
            self.active[threading.get_ident()] = caught

    def exit(self) -> None:
        with self.lock:
            self.active.pop(threading.get_ident(), None)
            if not self.active and self.saved is not None:
                warnings.showwarning, warnings.filters = self.saved
                mutated = getattr(warnings, "_filters_mutated", None)  # the registries' cache is stale
                if mutated is not None:
                    mutated()
                self.saved = None

    def show(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        caught = self.active.get(threading.get_ident())
        if caught is not None:
            caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
            return
        saved = self.saved
        shown = saved[0] if saved is not None else warnings._showwarning_orig  # type: ignore[attr-defined]
        shown(message, category, filename, lineno, file, line)


_WARNINGS = _WarningRouter()


class _Recorder:
    """Warnings and warning log records, captured for a whole batch and handed out file by file.

    The warnings machinery is set up once per batch, not per file (a per-file ``catch_warnings`` copies the
    filter list and resets the machinery: a measurable share of a small file's cost), through
    :class:`_WarningRouter`, so that batches in several threads of one process each get their own warnings.
    What a library changes while a file is read is undone before the next one, as a per-file
    ``catch_warnings`` would: a filter it added, or ``warnings.showwarning`` taken over (see :meth:`took_over`).
    """

    def __init__(self, loggers: tuple[str, ...]) -> None:
        self.loggers = loggers
        self.caught: list[warnings.WarningMessage] = []
        self.logs: list[str] = []
        self.takeovers = 0  # _WARNINGS.takeovers when this file's read began
        self._stack: Any = None

    def __enter__(self) -> _Recorder:
        from contextlib import ExitStack

        with ExitStack() as stack:
            self.caught = []
            _WARNINGS.enter(self.caught)
            stack.callback(_WARNINGS.exit)
            self.logs = stack.enter_context(_capture_logs(self.loggers))
            self._stack = stack.pop_all()
        self.shown = _WARNINGS.hook  # not whatever is there: another thread's library may hold it just now
        self.filters = list(warnings.filters)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def clear(self) -> None:
        """Forget what the previous file left (called before each file)."""
        self.takeovers = _WARNINGS.takeovers
        del self.caught[:]
        del self.logs[:]
        if warnings.filters != self.filters:  # a library changed the filters while reading the previous file
            warnings.filters[:] = self.filters
            warnings.simplefilter("always", append=True)  # (present already: only tells the machinery)

    def took_over(self) -> bool:
        """True (and the recorder put back) when a library imported during the read replaced
        ``warnings.showwarning`` (astropy sends its warnings to its logger, printed to stderr), here or in
        another thread's batch, which may have put the recorder back first."""
        with _WARNINGS.lock:
            if warnings.showwarning is not self.shown:
                warnings.showwarning = self.shown
                _WARNINGS.takeovers += 1
                return True
        return _WARNINGS.takeovers != self.takeovers


def _read_recorded(entry: FileEntry, sniff_bytes: int, recorder: _Recorder, seen: dict[str, Any] | None = None
                   ) -> tuple[str, Records]:
    failure: _Failure | None = None
    try:
        result = _read(entry, sniff_bytes, seen)
    except _Failure as exc:
        failure = exc
    if recorder.took_over():
        # Read again, so that the first file of a process gets the same warnings as every other. Not after
        # a limit: the watch has fired already.
        if failure is not None and isinstance(failure.exc, FileAbort):
            raise failure
        recorder.clear()
        return _read(entry, sniff_bytes, seen)
    if failure is not None:
        raise failure
    return result


def _hash_limited(entry: FileEntry, watchdog: Any, watch_path: str) -> str | None:
    """The content hash under the watchdog's limits (None when the content cannot be read)."""
    try:
        with watchdog.watch(watch_path):
            return content_hash(entry)
    except OSError:
        return None


def extract_file(entry: FileEntry, *, sniff_bytes: int = 8192, retries: int = 0, backoff: float = 0.5,
                 hash_content: bool = False, warning_loggers: Sequence[str] = ("astropy",)
                 ) -> dict[str, list[dict[str, Any]]]:
    """Rows for all catalog tables from one file; a failure becomes an ``error`` row, never an exception.

    Special entries (``entry.kind``) are never opened: their row says what they are.
    """
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS if name != "stats"}
    if entry.special:
        out["files"].append(special_row(entry))
        return out
    with netcdf4_check_in_read(), _Recorder(tuple(warning_loggers)) as recorder:
        _extract(entry, out, recorder, get_watchdog(), sniff_bytes, retries, backoff, hash_content)
    return out


def _extract(entry: FileEntry, out: dict[str, list[dict[str, Any]]], recorder: _Recorder, watchdog: Any,
             sniff_bytes: int, retries: int, backoff: float, hash_content: bool) -> None:
    """Append the rows of one (not special) file to `out`'s lists, warnings from `recorder`.

    Callers hold :func:`netcdf4_check_in_read` and the recorder (once per batch in a scan)."""
    t0 = time.perf_counter()
    recorder.clear()
    row = file_row(entry)
    first_warnings = row.pop("warnings", None) or []
    problems: list[str] = []
    watch_path = row["path"]  # abort events travel as msgpack: catalog text, not surrogate escapes
    attempts = 0
    seen: dict[str, Any] = {}  # compression and decompressed size, as the source found them
    # Warnings are data about the file. (catch_warnings is process-global: fine for the default
    # one-thread workers; with more threads a warning may land on a neighbouring file's row. Log records
    # are matched by thread.)
    rows: dict[str, list[dict[str, Any]]] = {}
    while True:
        attempts += 1
        failure: _Failure | None = None
        try:
            with watchdog.watch(watch_path):
                fmt, rec = _read_recorded(entry, sniff_bytes, recorder, seen)
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
                       error_message=remote.redact_text(str(failure.exc) or repr(failure.exc)))
            break
        row.update(format=rec.format, format_version=rec.format_version, status="ok",
                   n_arrays=len(rec.arrays), attrs=dumps(rec.attrs),
                   groups=dumps(rec.groups) if rec.groups else None)
        path = row["path"]
        rows["arrays"] = [dict(r, path=path) for r in rec.arrays]
        problems = list(rec.warnings)
        for table, trows in rec.tables.items():
            if table in out and table not in ("files", "arrays"):
                rows[table] = [dict(r, path=path) for r in trows]
            else:  # a plugin's own table: the catalog has no place for it (yet)
                problems.append(f"{len(trows)} rows for table {table!r} left out: not a catalog table")
        break
    # Error rows are hashed too, so an unchanged bad file is not re-read on every --hash run; not a file
    # that already hit a limit (hashing would hit it again).
    if hash_content and row.get("error_type") not in ("timeout", "too_large"):
        try:
            row["content_hash"] = _hash_limited(entry, watchdog, watch_path)
        except FileAbort as exc:  # the hash hit the limits: the file is a timeout / too_large row
            row.update(status="error", error_type=exc.reason, error_message=f"hashing the content: {exc}",
                       format_version=None, n_arrays=None, attrs=None, groups=None)
            rows = {}
    for key, value in seen.items():
        if value is not None:
            row[key] = value
    texts = _warning_texts(recorder.caught, recorder.logs, [*first_warnings, *problems])
    if texts and "://" in entry.path:  # library messages may quote the URL: never its credentials
        texts = [remote.redact_text(t) for t in texts]
    row.update(warnings=texts, attempts=attempts, read_seconds=time.perf_counter() - t0)
    out["files"].append(row)
    for table, trows in rows.items():
        out[table].extend(trows)


def _clean(value: Any) -> Any:
    """`value` with every string made valid UTF-8 (surrogate escapes from file names shown as ``\\udcff``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows, schema=SCHEMAS[name])
    except UnicodeEncodeError:
        # A reader put an undecodable file name into a message or attribute: escape it rather than lose
        # the batch (only this rare case pays for the walk over every value).
        return pa.Table.from_pylist([_clean(r) for r in rows], schema=SCHEMAS[name])


def _task_settings() -> dict[str, Any]:
    return {
        "sniff_bytes": int(config.get("scan.sniff-bytes", 8192)),
        "retries": int(config.get("scan.retries", 0)),
        "backoff": float(config.get("scan.retry-backoff", 0.5)),
        "hash_content": bool(config.get("scan.hash", False)),
        "warning_loggers": tuple(config.get("scan.warning-loggers", None) or ()),
    }


def extract_batch(entries: Sequence[FileEntry], settings: dict[str, Any] | None = None,
                  deidentify: Any = None, progress_interval: float | None = None,
                  remote_settings: dict[str, Any] | None = None, announce: bool = False) -> dict[str, pa.Table]:
    """Extract a batch of files into one Arrow table per catalog table (the unit of work of a scan task).

    Parameters
    ----------
    entries : sequence of FileEntry
        The files of this batch.
    settings : dict, optional
        ``metaextract.scan`` settings resolved on the client: workers of an existing cluster do not share
        the client's dask.config, so the task carries what it needs.
    deidentify : metaextract_dask.deid.Profile, optional
        De-identify every DICOM object before any of its values reaches a row.
    progress_interval : float, optional
        Seconds between reports of the files done so far (:class:`~metaextract_dask.progress.WorkerTicker`;
        default ``metaextract.progress.worker-interval`` here).
    remote_settings : dict, optional
        ``metaextract.remote`` settings resolved on the client (block size, cache, retries, concurrency).
    announce : bool
        Tell the scheduler that the task started before reading anything
        (:func:`~metaextract_dask.watchdog.announce_start`): set on tasks run again after a worker death.
    """
    from metaextract_dask.formats.dicom import deidentifying

    if announce:
        announce_start()

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
    overrides: dict[str, Any] = {"metaextract.scan": settings} if settings else {}
    if remote_settings:
        overrides["metaextract.remote"] = remote_settings
    with dask.config.set(overrides), deidentifying(deidentify), \
            config.pinned():  # the batch's settings are read once, not per file
        kw = _task_settings()
        watchdog = get_watchdog()
        watchdog.configure(config.get("scan.file-timeout"), config.get("scan.file-memory-limit"))
        ticker = WorkerTicker(progress_interval)  # the client's progress moves per file, not per batch
        # Remote files are fetched by a thread pool while the batch is read in order: many requests in flight.
        with sources.prefetching(entries, kw["sniff_bytes"]), netcdf4_check_in_read(), \
                _Recorder(kw["warning_loggers"]) as recorder:
            for i, entry in enumerate(entries, 1):
                if entry.special:
                    rows["files"].append(special_row(entry))
                else:
                    _extract(entry, rows, recorder, watchdog, kw["sniff_bytes"], kw["retries"], kw["backoff"],
                             kw["hash_content"])
                ticker.tick(i)
    return {name: _table(name, rows[name]) for name in SCHEMAS}


def hash_batch(entries: Sequence[FileEntry], settings: dict[str, Any] | None = None) -> list[str | None]:
    """Content hashes of a batch, for ``--hash`` re-scans, under the same limits as reading.

    None where a file cannot be read, is special, or its hash ran past ``scan.file-timeout`` /
    ``scan.file-memory-limit`` (the scan then reads it again, which records the limit in its row).
    """
    out: list[str | None] = []
    with dask.config.set({"metaextract.scan": settings} if settings else {}):
        watchdog = get_watchdog()
        watchdog.configure(config.get("scan.file-timeout"), config.get("scan.file-memory-limit"))
        for entry in entries:
            if entry.special:
                out.append(None)
                continue
            try:
                out.append(_hash_limited(entry, watchdog, entry.catalog_path))
            except FileAbort:
                out.append(None)
    return out


def error_tables(entries: Sequence[FileEntry], error_type: str, message: str, fmt: str = "unknown") -> dict[str, pa.Table]:
    """Catalog tables holding one error row per entry (files whose task could not report for them)."""
    rows = [dict(file_row(e), format=fmt, status="error", error_type=error_type, error_message=message)
            for e in entries]
    tables = {name: SCHEMAS[name].empty_table() for name in SCHEMAS}
    tables["files"] = _table("files", rows)
    return tables
