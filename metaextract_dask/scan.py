"""Scan orchestration: discover, batch, extract on the cluster, commit batch by batch."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaextract_dask import config
from metaextract_dask.catalog import Catalog
from metaextract_dask.cluster import connect
from metaextract_dask.discover import FileEntry, discover, plan_batches
from metaextract_dask.extract import extract_batch, file_row
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.sinks import ParquetSink

__all__ = ["scan", "ScanSummary"]


class ScanSummary(dict):
    """What a scan did: files by format, errors by type, bytes, time (a dict, also stored in the manifest)."""

    def format(self) -> str:
        """Human-readable multi-line summary for the CLI."""
        startup = self.get("startup_seconds", 0.0)
        lines = [f"scanned {self['files']} files ({self['bytes'] / 1e6:,.1f} MB) in {self['seconds']:.1f} s "
                 f"({self['files_per_second']:,.0f} files/s) on {self['threads']} worker threads, "
                 f"{self['batches']} batches" + (f"; cluster start {startup:.1f} s" if startup >= 0.05 else "")]
        lines += [f"  {fmt:<8} {n:>8}" for fmt, n in sorted(self["by_format"].items())]
        lines.append(f"  errors   {self['errors']:>8}")
        lines += [f"    {etype}: {n}" for etype, n in sorted(self["error_types"].items())]
        return "\n".join(lines)


def _failed_batch_tables(batch: list[FileEntry], exc: BaseException) -> dict[str, pa.Table]:
    # The task itself failed (e.g. its worker died): every file of the batch still gets its row, of format
    # "unknown" since it was never identified.
    rows = [dict(file_row(e), format="unknown", status="error", error_type=type(exc).__name__,
                 error_message=f"batch task failed: {exc}") for e in batch]
    tables = {name: SCHEMAS[name].empty_table() for name in SCHEMAS}
    tables["files"] = pa.Table.from_pylist(rows, schema=SCHEMAS["files"])
    return tables


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    dashboard_address: str | None = None,
    progress: bool | Callable[[int, int], None] = False,
    on_client: Callable[[Any], None] | None = None,
) -> Catalog:
    """Scan files and directories into a Parquet catalog.

    Parameters
    ----------
    paths : path or iterable of paths
        Files, directories (walked recursively) and Zarr stores.
    output : path
        Catalog directory to write (created; a previous catalog there is replaced).
    client : distributed.Client, optional
        Client to run on. Default: `scheduler` if given, else the current client, else an embedded
        ``LocalCluster`` (worker processes, everything on 127.0.0.1).
    scheduler : str, optional
        Address of an existing scheduler, e.g. ``tcp://127.0.0.1:8786``.
    n_workers, dashboard_address
        Embedded cluster settings (default from ``metaextract.cluster``).
    progress : bool or callable
        True for a tqdm progress bar; a callable receives ``(files_done, files_total)``.
    on_client : callable, optional
        Called with the client once it is up (the CLI prints the dashboard link from it).

    Returns
    -------
    Catalog
        The written catalog; its manifest carries the :class:`ScanSummary`.

    Raises
    ------
    FileNotFoundError
        An input path does not exist.
    metaextract_dask.sinks.CatalogError
        The output cannot be written.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    t0 = time.perf_counter()
    entries = discover(paths)
    sink = ParquetSink(output)
    settings = dict(config.get("scan", {}))
    n_files = len(entries)
    by_format: Counter[str] = Counter()
    error_types: Counter[str] = Counter()
    total_bytes = 0

    t_connect = time.perf_counter()
    with connect(scheduler, client=client, n_workers=n_workers, dashboard_address=dashboard_address) as c:
        startup = time.perf_counter() - t_connect
        if on_client is not None:
            on_client(c)
        from distributed import as_completed

        threads = sum(c.nthreads().values()) or 1
        batches = plan_batches(entries, threads)
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_files, unit="file", desc="scan", smoothing=0.1)
        futures = c.map(extract_batch, batches, settings=settings, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        done = 0
        for future in as_completed(futures, loop=c.loop):
            i = index[future.key]
            try:
                tables = future.result()
            except Exception as exc:
                tables = _failed_batch_tables(batches[i], exc)
            future.release()
            sink.write_batch(i, tables)
            files = tables["files"]
            by_format.update(files.column("format").to_pylist())
            errors = files.filter(pc.equal(files.column("status"), "error"))
            error_types.update(errors.column("error_type").to_pylist())
            total_bytes += pc.sum(files.column("size_bytes")).as_py() or 0
            done += len(batches[i])
            if bar is not None:
                bar.update(len(batches[i]))
            elif callable(progress):
                progress(done, n_files)
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - t0 - startup  # the scan itself; starting a cluster is reported apart
    summary = ScanSummary(
        files=n_files, bytes=int(total_bytes), by_format=dict(by_format), errors=sum(error_types.values()),
        error_types=dict(error_types), batches=len(batches), threads=threads, seconds=seconds,
        startup_seconds=startup, files_per_second=n_files / seconds if seconds else 0.0,
    )
    sink.close(summary)
    return Catalog(sink.output)
