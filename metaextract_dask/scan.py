"""Scan orchestration: discover, plan against what the catalog holds, extract on the cluster, commit.

A scan is resumable and incremental. Each run compares the files found with the catalog's committed rows by
fingerprint (size, mtime; plus a content hash with ``hash=True``): unchanged files are kept, files already
committed by an interrupted run are reused, the rest are read. Rows of changed or vanished files are
replaced or dropped in one atomic switch at the end (see :mod:`metaextract_dask.sinks`).

A batch task that fails as a whole (its worker died: a segfaulting library, a reader stuck in native code
past ``scan.file-timeout``, the memory limit) does not lose its files: the files the worker reported before
dying get their ``timeout`` / ``too_large`` rows, the others are re-run, one task per file when the culprit
is unknown, so that the file that kills a worker ends as its own error row and is not retried forever.

Special entries (FIFOs, sockets, devices, symlinks not followed) and directories that cannot be listed get
their rows here, on the client, without being opened; the rows of files below an unlisted directory are
kept, not dropped, until it can be listed again. The catalog being written is never scanned itself.
Catalog paths are :func:`~metaextract_dask.discover.encode_path` of the OS paths.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaextract_dask import config
from metaextract_dask.catalog import Catalog, open_catalog
from metaextract_dask.cluster import connect
from metaextract_dask.discover import (DIRECTORY_KIND, Batch, FileEntry, PathFilter, encode_path, iter_discover,
                                      lead_batches, plan_batches)
from metaextract_dask.extract import error_tables, extract_batch, hash_batch, special_tables
from metaextract_dask.progress import PROGRESS_TOPIC, Progress
from metaextract_dask.sinks import open_sink, output_files
from metaextract_dask.watchdog import ABORT_TOPIC, STARTED_TOPIC

__all__ = ["scan", "ScanSummary", "ScanPlan", "plan_scan"]


class ScanSummary(dict):
    """What a scan did and what the catalog holds (a dict, also stored in the manifest)."""

    def format(self) -> str:
        """Human-readable multi-line summary for the CLI."""
        startup = self.get("startup_seconds", 0.0)
        recorded = f", {self['recorded']} special recorded" if self.get("recorded") else ""
        lines = [f"scanned {self['files']} files ({self['bytes'] / 1e6:,.1f} MB) in {self['seconds']:.1f} s: "
                 f"{self['read']} read ({self['files_per_second']:,.0f} files/s){recorded}, "
                 f"{self['unchanged']} unchanged, {self['reused']} reused from an interrupted run, "
                 f"{self['removed']} removed"]
        if self["read"]:
            lines.append(f"  on {self['threads']} worker threads, {self['batches']} tasks"
                         + (f"; cluster start {startup:.1f} s" if startup >= 0.05 else ""))
        lines += [f"  {fmt:<8} {n:>8}" for fmt, n in sorted(self["by_format"].items())]
        special = self.get("special") or {}
        if special:
            lines.append("  special files (not read): " + ", ".join(f"{k} {n}" for k, n in sorted(special.items())))
        lines.append(f"  errors   {self['errors']:>8}")
        lines += [f"    {etype}: {n}" for etype, n in sorted(self["error_types"].items())]
        if self.get("kept"):
            lines.append(f"  kept     {self['kept']:>8} rows of files below directories that could not be listed")
        if self.get("retries"):
            lines.append(f"  retries  {self['retries']:>8} (transient I/O errors, {self['retried_files']} files)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from metaextract_dask.display import scan_summary_html

        return scan_summary_html(self)


@dataclass
class ScanPlan:
    """What a scan run has to do, from the files found and the rows the catalog already holds."""

    to_read: list[FileEntry] = field(default_factory=list)
    verify: list[tuple[FileEntry, str]] = field(default_factory=list)  # unchanged fingerprint, hash to check
    drop_visible: set[str] = field(default_factory=set)  # committed rows to remove (changed / vanished files)
    drop_pending: set[str] = field(default_factory=set)  # rows of an interrupted run that are stale again
    unchanged: int = 0
    reused: int = 0
    removed: int = 0
    kept: int = 0  # rows of files below directories that could not be listed, kept as they were


_FINGERPRINT_COLUMNS = ["path", "size_bytes", "mtime", "status", "content_hash", "remote_version"]


def _fingerprints(table: pa.Table) -> dict[str, tuple[int, int, str, str | None, str | None]]:
    mtimes = pc.cast(table.column("mtime"), pa.int64()).to_pylist()  # microseconds since the epoch
    return {p: (s, m, st, h, v) for p, s, m, st, h, v in zip(table.column("path").to_pylist(),
                                                             table.column("size_bytes").to_pylist(), mtimes,
                                                             table.column("status").to_pylist(),
                                                             table.column("content_hash").to_pylist(),
                                                             table.column("remote_version").to_pylist())}


def plan_scan(entries: list[FileEntry], sink: Any, *, full: bool = False, use_hash: bool = False,
              retry_errors: bool = False) -> ScanPlan:
    """Compare the files found with the catalog's committed rows (see :class:`ScanPlan`).

    `sink` is a :class:`~metaextract_dask.sinks.ParquetSink` or :class:`~metaextract_dask.sqlsink.SQLSink`.

    Rows are matched by catalog path (:attr:`FileEntry.catalog_path`). Special entries are never hashed:
    size and mtime decide. Rows below a directory that could not be listed are kept.
    """
    planner = _Planner(sink, full=full, use_hash=use_hash, retry_errors=retry_errors)
    for e in entries:
        planner.add(e)
    return planner.finish()


class _Planner:
    """:func:`plan_scan` one entry at a time, as the walk finds them: ``add`` each, then ``finish``."""

    def __init__(self, sink: Any, *, full: bool, use_hash: bool, retry_errors: bool) -> None:
        self.visible = _fingerprints(sink.files_rows("batches", columns=_FINGERPRINT_COLUMNS))
        self.pending = _fingerprints(sink.files_rows("pending", columns=_FINGERPRINT_COLUMNS))
        self.full, self.use_hash, self.retry_errors = full, use_hash, retry_errors
        self.plan = ScanPlan()
        self.current: set[str] = set()
        self.unlisted: list[str] = []

    def _still_good(self, old: tuple[int, int, str, str | None, str | None] | None, fp: tuple[int, int],
                    version: str | None) -> bool:
        # a remote file's ETag (version) must match too
        return (old is not None and not self.full and old[:2] == fp and (version is None or old[4] == version)
                and not (self.retry_errors and old[2] == "error"))

    def add(self, e: FileEntry) -> None:
        """Plan one entry: to read, to verify by hash, unchanged or reused."""
        plan, use_hash = self.plan, self.use_hash
        key = e.catalog_path
        self.current.add(key)
        if e.kind == DIRECTORY_KIND:
            self.unlisted.append(key)
        v, p = self.visible.get(key), self.pending.get(key)
        if v is None and p is None:  # new to the catalog (every file of a first scan)
            plan.to_read.append(e)
            return
        fp = (e.size, e.mtime_us)
        remote_file = "://" in e.path  # remote files: size, mtime and the store's version (ETag) decide
        if self._still_good(v, fp, e.version):
            assert v is not None
            if not use_hash or e.special or remote_file:
                plan.unchanged += 1
            elif v[3] is None:  # scanned without --hash: nothing to compare, read again
                plan.to_read.append(e)
                plan.drop_visible.add(key)
            else:
                plan.verify.append((e, v[3]))
            if p is not None:
                plan.drop_pending.add(key)
            return
        if self._still_good(p, fp, e.version) and (not use_hash or e.special or remote_file
                                                   or (p is not None and p[3] is not None)):
            plan.reused += 1
            if v is not None:
                plan.drop_visible.add(key)
            return
        plan.to_read.append(e)
        if v is not None:
            plan.drop_visible.add(key)
        if p is not None:
            plan.drop_pending.add(key)

    def finish(self) -> ScanPlan:
        """The plan, with the rows of files no longer found to drop."""
        plan = self.plan
        gone_visible = set(self.visible) - self.current
        gone_pending = set(self.pending) - self.current
        if self.unlisted:  # not seen is not gone: keep what the catalog knows below a directory it could not list
            below = tuple(d.rstrip("/") + "/" for d in self.unlisted)
            kept = {k for k in gone_visible if k.startswith(below)}
            plan.kept = len(kept)
            gone_visible -= kept
            gone_pending = {k for k in gone_pending if not k.startswith(below)}
        plan.removed = len(gone_visible)
        plan.drop_visible |= gone_visible
        plan.drop_pending |= gone_pending
        return plan


def _verify_hashes(c: Any, plan: ScanPlan, threads: int, settings: dict[str, Any]) -> None:
    """--hash re-scan: files whose size and mtime match are re-read only if their content hash changed.

    Hashing runs under the file limits (`settings`); a file whose hash fails or hits a limit, or whose
    task died (a worker ended by the watchdog), is read again, and its row records why.
    """
    entries = [e for e, _ in plan.verify]
    stored = dict((e.path, h) for e, h in plan.verify)
    batches = plan_batches(entries, threads)
    futures = c.map(hash_batch, [Batch(b) for b in batches], settings=settings, pure=False)
    for batch, future in zip(batches, futures):
        try:
            hashes = future.result()
        except Exception:
            hashes = [None] * len(batch)
        future.release()
        for entry, h in zip(batch, hashes):
            if h is not None and h == stored[entry.path]:
                plan.unchanged += 1
            else:
                plan.to_read.append(entry)
                plan.drop_visible.add(entry.catalog_path)
    plan.verify = []


#: Times a task may fail without an abort event naming a file (a worker killed from outside, a segfault)
#: before the scan splits it into one task per file, or, for a one-file task, gives up on that file. A task
#: queued behind the culprit on a dying worker fails once through no fault of its own.
TASK_ATTEMPTS = 2

#: Times a task run again may be failed by a worker death before it started (it waited its turn on that worker,
#: behind the culprit) without that counting as an attempt. Tasks run again announce their start
#: (:data:`~metaextract_dask.watchdog.STARTED_TOPIC`), so a file is given up only for deaths while it was read.
UNSTARTED_RETRIES = 8


def _started(c: Any, key: str, since: float) -> bool:
    """Whether the task `key` announced its start on the scheduler."""
    return any(ts >= since and isinstance(msg, dict) and msg.get("key") == key
               for ts, msg in c.get_events(STARTED_TOPIC))


def _recover(c: Any, batch: list[FileEntry], exc: BaseException, since: float, failures: Counter[tuple[str, ...]],
             unstarted: Counter[tuple[str, ...]], announced_key: str | None = None,
             ) -> tuple[dict[str, pa.Table] | None, list[list[FileEntry]]]:
    """Rows for a failed batch task's files, and the batches to run again.

    `announced_key` is the task's key when it was submitted to announce its start.
    """
    paths = {e.catalog_path for e in batch}  # abort events name files by catalog path
    aborted: dict[str, dict[str, Any]] = {}
    for ts, msg in c.get_events(ABORT_TOPIC):
        if ts >= since and isinstance(msg, dict) and msg.get("path") in paths:
            aborted[msg["path"]] = msg
    named = [e for e in batch if e.catalog_path in aborted]
    rest = [e for e in batch if e.catalog_path not in aborted]
    parts = [error_tables([e], aborted[e.catalog_path]["reason"], aborted[e.catalog_path]["message"])
             for e in named]
    retry: list[list[FileEntry]] = []
    if named:
        retry = [rest] if rest else []  # the culprit is known: the others go again, together
    else:
        key = tuple(e.path for e in batch)
        if announced_key is not None and unstarted[key] < UNSTARTED_RETRIES and not _started(c, announced_key, since):
            unstarted[key] += 1
            return None, [batch]
        failures[key] += 1
        if failures[key] < TASK_ATTEMPTS:
            retry = [batch]
        elif len(batch) > 1:
            retry = [[e] for e in batch]  # one task per file finds the culprit
        else:
            parts.append(error_tables(batch, type(exc).__name__,
                                      f"the worker process died while reading this file ({exc})"))
    if not parts:
        return None, retry
    return {name: pa.concat_tables([p[name] for p in parts]) for name in parts[0]}, retry


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    dashboard_address: str | None = None,
    full: bool = False,
    hash: bool | None = None,
    retry_errors: bool = False,
    file_timeout: float | None = None,
    performance_report: str | os.PathLike[str] | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    on_client: Callable[[Any], None] | None = None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    deidentify: Any = None,
) -> Catalog:
    """Scan files and directories into a Parquet catalog, incrementally.

    Parameters
    ----------
    paths : path or iterable of paths
        Files, directories (walked recursively) and Zarr stores.
    output : path or SQLAlchemy URL
        Catalog directory. A new one is created; an existing one is continued: an interrupted scan resumes,
        a complete one is updated (only new and changed files are read; vanished files are dropped). Or a
        database (``sqlite:///catalog.db``, ``postgresql://user@host/db``): the same tables with primary keys,
        written by upserts; a database may hold the catalogs of many scans, and a scan only compares and
        deletes the rows below its own `paths` (see :mod:`metaextract_dask.sqlsink`).
    client : distributed.Client, optional
        Client to run on. Default: `scheduler` if given, else the current client, else an embedded
        ``LocalCluster`` (worker processes, everything on 127.0.0.1). No cluster is started when there is
        nothing to read.
    scheduler : str, optional
        Address of an existing scheduler, e.g. ``tcp://127.0.0.1:8786``.
    n_workers, dashboard_address
        Embedded cluster settings (default from ``metaextract.cluster``).
    full : bool
        Read every file again, whatever the catalog holds.
    hash : bool, optional
        Store a content hash per file and re-read files whose content changed even if size and mtime did
        not (default ``metaextract.scan.hash``).
    retry_errors : bool
        Read files again whose committed row is an error, even if unchanged.
    file_timeout : float, optional
        Seconds one file may take before it becomes a ``timeout`` row (default ``metaextract.scan.file-timeout``).
    performance_report : path, optional
        Write Dask's performance report (HTML) of the extraction here.
    progress : bool or callable, optional
        True: a widget in Jupyter, a bar on a terminal, whole log lines otherwise
        (:class:`~metaextract_dask.progress.Progress`); a callable receives ``(files_done, files_to_read)``;
        None (default): True inside Jupyter, else False.
    on_client : callable, optional
        Called with the client once it is up (the CLI prints the dashboard link from it).
    include, exclude : iterable of str, optional
        Glob patterns for the files found in directories (default ``metaextract.scan.include`` /
        ``exclude``; see :class:`~metaextract_dask.discover.PathFilter`). Files a pattern leaves out are not
        in the catalog: a re-scan with new patterns drops the rows of files no longer included.
    deidentify : metaextract_dask.deid.Profile, optional
        De-identify every DICOM object (PS3.15 profile, keyed) before any of its values reaches the catalog.
        A catalog written with another profile, key or none is read again in full.

    Returns
    -------
    Catalog
        The catalog; ``catalog.scan_summary`` is the :class:`ScanSummary` of this run.

    Raises
    ------
    ValueError
        An invalid argument or ``metaextract`` setting (unknown key, value out of range).
    FileNotFoundError
        An input path does not exist.
    metaextract_dask.sinks.CatalogError
        The output cannot be written, or another scan is writing it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    t0 = time.perf_counter()
    # Environment overrides arrive as sniff_bytes, YAML as sniff-bytes: one spelling for tasks and manifest.
    settings = {k.replace("_", "-"): v for k, v in config.get("scan", {}).items()}
    if hash is not None:
        settings["hash"] = bool(hash)
    if file_timeout is not None:
        settings["file-timeout"] = file_timeout
    config.validate({"scan": settings, "cluster": {"n-workers": n_workers}})  # ValueError: unknown keys, bad values
    # The catalog is left out of its own scan, however it is reached (symlink, relative path).
    # Local inputs are planned as the walk finds them, and files go to idle workers while it goes on (_feed).
    # Remote files a listing finds are sized by the tasks that read them (many at once), except those the
    # catalog already holds, which are asked about together once listed, to compare (see _size_known).
    walk = iter_discover(paths, exclude=output_files(output), patterns=PathFilter(include, exclude),
                         remote_sizes=False)
    from metaextract_dask.remote import is_url, local_from_url

    streaming = not any(is_url(local_from_url(os.fspath(p))) for p in paths)
    startup = 0.0
    threads = 0
    attempts: Counter[int] = Counter()

    # An SQL catalog is shared: this scan's rows are those below its inputs (catalog paths, as discover makes them).
    scope = [_scope_of(os.fspath(p)) for p in paths]
    deid_mark = None if deidentify is None else {"options": list(deidentify.options),
                                                  "key_fingerprint": deidentify.key.fingerprint}
    with open_sink(output, scope=scope) as sink, ExitStack() as cluster:
        previous = (sink.manifest.get("summary") or {}) if sink.has_visible else {}
        if previous and previous.get("deidentify") != deid_mark:
            full = True  # rows written under another profile (or with identities) must all be replaced
        planner = _Planner(sink, full=full, use_hash=bool(settings.get("hash")), retry_errors=retry_errors)
        plan = planner.plan
        # A new catalog holds just what this scan writes: the summary counts it on the way, not read back.
        tally = _Tally() if not (planner.visible or planner.pending) else None
        extraction: _Extraction | None = None

        def start() -> _Extraction:
            # The cluster is reached (or started) once there is something to read, not before.
            nonlocal extraction, startup, threads
            if extraction is None:
                t_connect = time.perf_counter()
                c = cluster.enter_context(connect(scheduler, client=client, n_workers=n_workers,
                                                  dashboard_address=dashboard_address))
                startup = time.perf_counter() - t_connect
                if on_client is not None:
                    on_client(c)
                threads = sum(c.nthreads().values()) or 1
                if performance_report is not None:
                    from distributed import performance_report as perf

                    cluster.enter_context(c.as_current())
                    cluster.enter_context(perf(filename=os.fspath(performance_report)))
                extraction = _Extraction(c, settings, threads, deidentify)
            return extraction

        found = 0  # entries the walk found
        fed = 0  # plan.to_read[:fed] went to tasks during the walk (its special entries aside)
        try:
            if streaming:
                look_at = LEAD_FILES  # length of plan.to_read at which to look for idle threads next
                walk_began = time.monotonic()
                for e in walk:
                    found += 1
                    planner.add(e)
                    if len(plan.to_read) >= look_at:
                        look_at = len(plan.to_read) + LEAD_CHECK
                        if (extraction.idle_threads() if extraction is not None
                                else time.monotonic() - walk_began >= LEAD_AFTER):
                            fed = _feed(plan.to_read, fed, start)
            else:
                entries = _size_known(list(walk), sink)
                found = len(entries)
                for e in entries:
                    planner.add(e)
            planner.finish()

            def write(tables: dict[str, pa.Table], pending: bool) -> None:
                # Every row this scan commits goes through here, so a new catalog's tally misses none.
                sink.write_batch(tables, pending=pending)
                if tally is not None:
                    tally.add(tables["files"])

            def write_special() -> bool:
                # Rows replacing committed ones stay pending until the end, so no reader sees a file twice.
                pending = bool(plan.drop_visible) or sink.has_pending
                special = [e for e in plan.to_read if e.special]  # recorded here, never opened, no worker needed
                if special:
                    write(special_tables(special), pending)
                return pending

            if extraction is not None or any(not e.special for e in plan.to_read) or plan.verify:
                ex = start()
                if plan.verify:
                    _verify_hashes(ex.c, plan, threads, settings)
                pending = write_special()
                ex.run(write, getattr(sink, "group_commits", True), [e for e in plan.to_read[fed:] if not e.special],
                       pending, progress, attempts)
            else:
                write_special()
        except BaseException:
            if extraction is not None:
                extraction.cancel()
            raise
        tasks = extraction.tasks if extraction is not None else 0
        cluster.close()  # before the catalog's last commit, as a scan without early reads did
        sink.finish(plan.drop_visible, plan.drop_pending)

        if tally is None:  # the catalog held rows before: count them all
            tally = _Tally()
            tally.add(sink.files_rows("batches", columns=_Tally.COLUMNS))
        seconds = time.perf_counter() - t0 - startup  # the scan itself; starting a cluster is reported apart
        n_read = sum(1 for e in plan.to_read if not e.special)  # special rows are recorded, not read
        summary = ScanSummary(
            files=found, read=n_read, recorded=len(plan.to_read) - n_read, unchanged=plan.unchanged,
            reused=plan.reused, removed=plan.removed, bytes=tally.bytes, by_format=dict(tally.by_format),
            errors=tally.errors, error_types=dict(tally.error_types), error_examples=tally.examples,
            special=dict(tally.special), kept=plan.kept,
            retries=sum((a - 1) * n for a, n in attempts.items() if a > 1),
            retried_files=sum(n for a, n in attempts.items() if a > 1),
            batches=tasks, threads=threads, seconds=seconds, startup_seconds=startup,
            files_per_second=n_read / seconds if seconds and n_read else 0.0,
            deidentify=deid_mark,
        )
        sink.set_summary(summary, settings)
    return open_catalog(sink.output)


#: A walk that takes longer than this (seconds: a big tree, a slow file system) has the files it found read
#: while it goes on ...
LEAD_AFTER = 0.5
#: ... a worker thread with nothing to do getting the files found since the last such task, at least this many
#: (fewer are not worth a task) and at most ``scan.batch-max-files`` ...
LEAD_FILES = 64
#: ... looked for each time the walk has found this many more files to read.
LEAD_CHECK = 16


def _feed(to_read: list[FileEntry], fed: int, start: Callable[[], _Extraction]) -> int:
    """Submit files the walk found, ``to_read[fed:]``, to idle worker threads; returns the new `fed`.

    The first call with :data:`LEAD_FILES` files to read reaches the cluster (`start`). Only walks longer than
    :data:`LEAD_AFTER` are fed: reading during a short walk started the workers ~0.18 s earlier on a local tree
    of 6,000 small files (a 0.1-0.2 s walk), but the walk then shared the two cores with them and the scan took
    as long (BENCHMARKS.md).
    """
    found = [i for i in range(fed, len(to_read)) if not to_read[i].special]
    if len(found) < LEAD_FILES:
        return fed
    ex = start()
    n = min(ex.idle_threads(), len(found) // LEAD_FILES)
    if n <= 0:
        return fed
    per = min(max(LEAD_FILES, int(config.get("scan.batch-max-files", 800))), len(found) // n)
    take = found[:n * per]
    ex.feed([to_read[i] for i in take], n)
    return take[-1] + 1


def _size_known(entries: list[FileEntry], sink: Any) -> list[FileEntry]:
    """Remote entries listed unsized whose path the catalog holds: asked about now (size, mtime, version, many
    at once), so that unchanged files are recognised; new ones stay unsized and are asked about when read."""
    unsized = [i for i, e in enumerate(entries) if e.size < 0]
    if not unsized:
        return entries
    from metaextract_dask.remote import infos

    known = set(sink.files_rows("batches", columns=["path"]).column("path").to_pylist())
    known |= set(sink.files_rows("pending", columns=["path"]).column("path").to_pylist())
    ask = [i for i in unsized if entries[i].catalog_path in known]
    if not ask:
        return entries
    out = list(entries)
    for i, info in zip(ask, infos([entries[i].path for i in ask])):
        e = entries[i]
        if isinstance(info, BaseException):  # the read asks again, and says why if it still fails
            out[i] = e._replace(size=0, detail=f"{type(info).__name__}: {info}")
        else:
            out[i] = e._replace(size=info.size, mtime_ns=info.mtime_ns, version=info.version)
    return out


def _scope_of(path: str) -> str:
    """The catalog path below which an input's rows lie (a URL without credentials, glob characters cut)."""
    from metaextract_dask.remote import has_glob, is_url, local_from_url, redact

    path = local_from_url(path)
    if not is_url(path):
        return encode_path(os.path.abspath(path))
    url = redact(path)
    if has_glob(url):
        url = url[:min(url.find(c) for c in "*?[" if c in url)].rsplit("/", 1)[0]
    return url.rstrip("/")


class _Tally:
    """What a scan summary says of the catalog's ``files`` rows, counted table by table (in catalog order)."""

    #: The ``files`` columns it reads.
    COLUMNS = ("path", "format", "format_version", "status", "error_type", "size_bytes")
    #: Paths of each error type kept as examples.
    EXAMPLES = 3

    def __init__(self) -> None:
        self.bytes = 0
        self.errors = 0
        self.by_format: Counter[str] = Counter()
        self.error_types: Counter[str] = Counter()
        self.special: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, files: pa.Table) -> None:
        """Count `files` rows (a table with :attr:`COLUMNS`)."""
        self.bytes += int(pc.sum(files.column("size_bytes")).as_py() or 0)
        self.by_format.update(files.column("format").to_pylist())
        errors = files.filter(pc.equal(files.column("status"), "error"))
        self.errors += errors.num_rows
        types = errors.column("error_type").to_pylist()
        self.error_types.update(types)
        for path, etype in zip(errors.column("path").to_pylist(), types):
            bucket = self.examples.setdefault(str(etype), [])
            if len(bucket) < self.EXAMPLES:
                bucket.append(path)
        special = files.filter(pc.equal(files.column("format"), "special"))
        self.special.update(special.column("format_version").to_pylist())


class _Extraction:
    """The extraction tasks of one scan: submitted as batches are known (the first ones while the walk goes
    on, :meth:`feed`), collected and committed by :meth:`run`."""

    def __init__(self, c: Any, settings: dict[str, Any], threads: int, deidentify: Any = None) -> None:
        from distributed import as_completed

        self.c, self.settings, self.threads, self.deidentify = c, settings, threads, deidentify
        self.since = time.time() - 5  # abort events of this scan (scheduler clock; a little slack for skew)
        self.ac = as_completed(loop=c.loop)
        self.running: dict[str, list[FileEntry]] = {}
        self.announcing: set[str] = set()  # keys of tasks run again, which announce their start
        self.tasks = 0
        self.files = 0  # files submitted (first attempts)
        self.lead: list[Any] = []  # futures of tasks submitted while the walk went on, not yet seen done
        self.interval = config.parse_seconds(config.get("progress.worker-interval", 0.5))  # for every worker
        self.remote_conf: Any = None

    def submit(self, batch: list[FileEntry], announce: bool = False) -> Any:
        """Submit one batch task (`announce`: it is run again, see :data:`UNSTARTED_RETRIES`)."""
        if self.remote_conf is None and any("://" in e.path for e in batch):
            from metaextract_dask.remote import settings as remote_settings

            self.remote_conf = remote_settings()
        future = self.c.submit(extract_batch, Batch(batch), self.settings, self.deidentify, self.interval,
                               self.remote_conf, announce, pure=False)
        self.running[future.key] = batch
        if announce:
            self.announcing.add(future.key)
        else:
            self.files += len(batch)
        self.ac.add(future)
        self.tasks += 1
        return future

    def idle_threads(self) -> int:
        """Worker threads the tasks submitted during the walk no longer keep busy."""
        self.lead = [f for f in self.lead if not f.done()]
        return max(0, self.threads - len(self.lead))

    def feed(self, found: list[FileEntry], n: int) -> None:
        """Submit `found` (files in the order walked) as `n` batches of neighbours while the walk goes on."""
        for batch in lead_batches(found, n):
            self.lead.append(self.submit(batch))

    def cancel(self) -> None:
        """Drop every task (the scan failed before collecting them)."""
        self.c.cancel(list(self.ac.futures))

    def run(self, write: Callable[[dict[str, pa.Table], bool], None], group_commits: bool, rest: list[FileEntry],
            pending: bool, progress: bool | Callable[[int, int], None], attempts: Counter[int]) -> None:
        """Submit `rest` in balanced batches, then collect every task, committing what arrived (``write(tables,
        pending)``) every ``scan.commit-interval`` seconds and at the end, or per task unless `group_commits`."""
        c = self.c
        running = self.running
        failures: Counter[tuple[str, ...]] = Counter()
        unstarted: Counter[tuple[str, ...]] = Counter()
        bar = Progress(self.files + len(rest), progress)
        committed = 0
        in_batch: dict[str, int] = {}  # files done so far in running batches, as their workers report
        arrived_files = 0  # files of results not yet committed

        def on_progress(event: tuple[float, Any]) -> None:  # the client's event loop thread
            msg = event[1]
            if isinstance(msg, dict) and msg.get("key") in running:
                in_batch[msg["key"]] = int(msg.get("done", 0))
                bar.set(committed + arrived_files + sum(in_batch.values()))

        if bar.mode != "none" or bar.callback is not None:
            c.subscribe_topic(PROGRESS_TOPIC, on_progress)
        for batch in plan_batches(rest, self.threads):
            self.submit(batch)
        # Parquet: what arrived is committed together every `scan.commit-interval` seconds and at the end, one
        # part per table and one manifest commit for all of it. A commit's cost there is mostly fixed (~8 ms for
        # four parts of any small size, plus the manifest), paid on the cores the workers need. SQL: per task.
        interval_s = (config.parse_seconds(config.get("scan.commit-interval", 1.0))
                      if group_commits else 0.0)
        max_rows = 10 * int(config.get("scan.batch-max-files", 800))
        arrived: list[dict[str, pa.Table]] = []
        last_commit = time.monotonic()

        def commit() -> None:
            nonlocal committed, arrived, arrived_files, last_commit
            if arrived:
                tables = arrived[0] if len(arrived) == 1 else \
                    {name: pa.concat_tables([t[name] for t in arrived]) for name in arrived[0]}
                write(tables, pending)
                attempts.update(a for a in tables["files"].column("attempts").to_pylist() if a)
                committed += tables["files"].num_rows
            arrived, arrived_files, last_commit = [], 0, time.monotonic()

        try:
            for done in self.ac.batches():
                for future in done:
                    batch = running.pop(future.key)
                    in_batch.pop(future.key, None)
                    tables: dict[str, pa.Table] | None
                    try:
                        tables = future.result()
                    except Exception as exc:
                        tables, again = _recover(c, batch, exc, self.since, failures, unstarted,
                                                 future.key if future.key in self.announcing else None)
                        for b in again:
                            self.submit(b, announce=True)
                    self.announcing.discard(future.key)
                    future.release()
                    if tables is not None:
                        arrived.append(tables)
                        arrived_files += tables["files"].num_rows
                # A thread with nothing left to run (the scan's last round) lends its core to the commit, so that
                # the last one, after the last task, holds only that task's rows.
                if (len(running) < self.threads or arrived_files >= max_rows
                        or time.monotonic() - last_commit >= interval_s):
                    commit()
                bar.set(committed + arrived_files + sum(in_batch.values()))
            commit()
        finally:
            if bar.mode != "none" or bar.callback is not None:
                c.unsubscribe_topic(PROGRESS_TOPIC)
            bar.close()
