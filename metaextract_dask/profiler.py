"""Content profiles of every array in a catalog, in one pass over the data, on numpy or cupy.

Each array is opened lazily with its raw stored values (:func:`metaextract_dask.arrays.open_array`,
``decode=False``) in adaptive chunks; every dask block becomes one partial (:mod:`metaextract_dask.stats`) and
the partials of an array merge in a small tree. One task reads a block from the array's recipe and
summarises it (:func:`_region_partial`: in place from a memory map where the stored bytes are the values,
else into a reused buffer; on the GPU after one host-to-device copy); arrays of a single block go many to a
task (:func:`_small_partials`). All arrays are submitted together; each array's (or batch's) result is its
own future, so an array whose chunks fail to decode becomes an error row without stopping the others.
Results go to the catalog's ``stats`` table (keyed like ``arrays`` by path and name).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from metaextract_dask import config
from metaextract_dask.cluster import connect
from metaextract_dask.discover import decode_path
from metaextract_dask.formats.base import TRUNCATED
from metaextract_dask.progress import Progress
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.stats import (Partial, block_partial, data_range, finalize, histogram_range, merge_all,
                                    sketch_histogram)

__all__ = ["profile", "ProfileResult", "profile_array", "resolve_device", "gpu_available", "release_buffers"]

_FAN_IN = 32  # partials merged per task


def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device (evaluated where it runs: on the workers)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def resolve_device(device: str, client: Any = None) -> str:
    """``cpu`` or ``gpu`` for `device` in auto|cpu|gpu, asking the workers (they hold the GPUs)."""
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be auto, cpu or gpu, not {device!r}")
    if device == "cpu":
        return "cpu"
    answers = list(client.run(gpu_available).values()) if client is not None else [gpu_available()]
    ok = bool(answers) and all(answers)
    if device == "gpu" and not ok:
        raise RuntimeError("device 'gpu' asked for, but cupy cannot see a CUDA device on every worker "
                           f"({sum(answers)} of {len(answers)} workers have one); use --device cpu or auto")
    return "gpu" if ok else "cpu"


def _to_cupy(block: np.ndarray) -> Any:
    import cupy

    return cupy.asarray(block)


def _pass_partial(block: Any, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    return block_partial(block, fill=fill, bins=bins, rng=rng)


# One read buffer per worker thread, reused from block to block while a profile runs (released at its end).
_BUFFERS: dict[int, np.ndarray] = {}
_BUFFERS_LOCK = threading.Lock()


def _buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    key = threading.get_ident()
    with _BUFFERS_LOCK:
        buf = _BUFFERS.pop(key, None)
    if buf is None or buf.nbytes < nbytes:
        del buf  # the old one goes before the new one comes
        buf = np.empty(nbytes, dtype=np.uint8)
    with _BUFFERS_LOCK:
        _BUFFERS[key] = buf
    return buf[:nbytes].view(dtype).reshape(shape)


def release_buffers() -> int:
    """Drop this process's profile read buffers (and, where blocks went to a GPU, the staging buffers and
    cupy's cached memory); returns the host read-buffer bytes released (run on workers by profile)."""
    with _BUFFERS_LOCK:
        nbytes = sum(b.nbytes for b in _BUFFERS.values())
        _BUFFERS.clear()
    cuda = sys.modules.get("metaextract_dask._cuda")
    if cuda is not None:  # this process summarised blocks on a GPU: its staging buffers and cupy's pools
        try:
            cuda.release()
        except Exception:  # a broken CUDA context must not cost the profile that is being written
            logging.getLogger(__name__).warning("could not release GPU buffers", exc_info=True)
    return nbytes


def _region_partial(source: Any, region: tuple[slice, ...], fill: Any, bins: int,
                    rng: tuple[float, float] | None, device: str = "cpu") -> Partial:
    """Read one block of `source` (an ArrayProxy: a recipe, opened through the worker's handle cache) and
    summarise it, in one task: no block travels between tasks, and formats that read in place reuse one buffer.
    With ``device="gpu"`` the block is copied to the GPU and summarised there."""
    pieces = source.iter_region(region) if source.maps_regions else None
    if device == "gpu":
        from metaextract_dask._cuda import thread_stream

        with thread_stream():  # this block's copies and kernels on this thread's stream
            return block_partial(_device_block(source, region, pieces), fill=fill, bins=bins, rng=rng)
    if pieces is not None:  # the stored bytes are the values: summarise them where they lie (page cache)
        return merge_all([block_partial(piece, fill=fill, bins=bins, rng=rng) for piece in pieces])
    return block_partial(_read_block(source, region), fill=fill, bins=bins, rng=rng)


def _read_block(source: Any, region: tuple[slice, ...]) -> np.ndarray:
    """The values of `region`, into this thread's reused buffer where the format reads in place."""
    shape = tuple(s.stop - s.start for s in region)
    out = _buffer(shape, source.dtype) if source.reads_in_place and region else None
    return source.read_region(region, out=out)


def _device_block(source: Any, region: tuple[slice, ...], pieces: Any) -> Any:
    """One block's values in GPU memory, flat: mapped pieces straight from the page cache (the statistics do
    not depend on element order), else the block read into the host buffer; either way through this
    thread's pinned staging buffers (:func:`metaextract_dask._cuda.to_device`)."""
    from metaextract_dask._cuda import to_device

    if pieces is None:
        block = _read_block(source, region)
        return to_device([block], block.nbytes, block.dtype)
    return to_device(pieces, math.prod(s.stop - s.start for s in region) * source.dtype.itemsize, source.dtype)


def _tree(parts: list[Any]) -> Any:
    from dask import delayed

    merge = delayed(merge_all, pure=True)
    while len(parts) > _FAN_IN:
        parts = [merge(parts[i:i + _FAN_IN]) for i in range(0, len(parts), _FAN_IN)]
    return merge(parts)


def _sample_blocks(n_blocks: int, fraction: float, key: str) -> list[int]:
    """A deterministic subset of block indices (same catalog, same choice), at least one block."""
    k = max(1, math.ceil(n_blocks * fraction))
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return sorted(np.random.default_rng(seed).choice(n_blocks, size=min(k, n_blocks), replace=False).tolist())


def _scalar(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        v = attrs.get(key)
        if v is not None:
            arr = np.asarray(v).ravel()
            if arr.size:
                return arr[0].item()
    return None


def profile_array(data: Any, attrs: dict[str, Any], *, bins: int = 64, strategy: str = "full",
                  sample_fraction: float = 0.1, device: str = "cpu", key: str = "",
                  rng: tuple[float, float] | None = None, source: Any = None) -> tuple[Any, dict[str, Any]]:
    """The delayed merged partial of one raw dask array, and the metadata of how it is computed.

    Parameters
    ----------
    data : dask.array.Array
        Raw stored values.
    attrs : dict
        The array's attributes (``_FillValue``/``missing_value``, ``valid_range``, ...).
    rng : (float, float), optional
        Histogram range; default from metadata (:func:`~metaextract_dask.stats.histogram_range`).
    source : ArrayProxy, optional
        The recipe `data` reads from. Each block is then read (and on the GPU, copied there) and summarised by
        one task (:func:`_region_partial`) instead of a read task feeding a summary task.
    """
    from dask import delayed

    rng, fill, chosen, meta = _plan(data, attrs, bins=bins, strategy=strategy, sample_fraction=sample_fraction,
                                    key=key, rng=rng)
    if source is not None:
        regions = _block_regions(data.chunks)
        part = delayed(_region_partial, pure=True)
        final = _tree([part(source, regions[i], fill, bins, rng, device) for i in chosen])
    else:
        if device == "gpu":
            data = data.map_blocks(_to_cupy, dtype=data.dtype, meta=data._meta)
        blocks = data.to_delayed().ravel().tolist()
        part = delayed(_pass_partial, pure=True)
        final = _tree([part(blocks[i], fill, bins, rng) for i in chosen])
    return final, meta


def _plan(data: Any, attrs: dict[str, Any], *, bins: int, strategy: str, sample_fraction: float, key: str,
          rng: tuple[float, float] | None) -> tuple[tuple[float, float] | None, Any, list[int], dict[str, Any]]:
    """Histogram range, fill value, the blocks to read and the row metadata of one array's profile."""
    if rng is None:
        rng, range_source = histogram_range(data.dtype, attrs)
    else:
        range_source = "data (second pass)"
    fill = _scalar(attrs, "_FillValue", "missing_value")
    sizes = [math.prod(s) for s in _block_shapes(data.chunks)]
    chosen = list(range(len(sizes)))
    if strategy == "sample":
        chosen = _sample_blocks(len(sizes), sample_fraction, key)
    elif strategy != "full":
        raise ValueError(f"strategy must be full or sample, not {strategy!r}")
    total = max(1, int(data.size))
    meta = {
        "dask_chunks": [int(c[0]) for c in data.chunks],
        "n_chunks": len(sizes),
        "chunks_read": len(chosen),
        "sampled_fraction": sum(sizes[i] for i in chosen) / total if data.size else 1.0,
        "hist_min": rng[0] if rng else None,
        "hist_max": rng[1] if rng else None,
        "hist_range_source": range_source or None,
        "bins": bins,
    }
    return rng, fill, chosen, meta


def _data_range(p: Partial) -> tuple[float, float]:
    """The histogram range of data without a known range: the data's min and max (one value: a unit-wide range)."""
    return data_range(p)


#: ``hist_range_source`` of histograms over the data's own range: from the sketch, or from a second pass.
_FROM_SKETCH, _SECOND_PASS = "data (sketch)", "data (second pass)"


def _histogram_mode(histogram: str | None) -> str:
    mode = config.get("profile.histogram", "sketch") if histogram is None else histogram
    if mode not in ("sketch", "exact"):
        raise ValueError(f"histogram must be sketch or exact, not {mode!r}")
    return str(mode)


def _sketch_histogram(p: Partial, meta: dict[str, Any], bins: int) -> None:
    """The histogram of data without a known range from `p`'s sketch, with the row metadata that says so."""
    lo, hi = sketch_histogram(p, bins)
    meta.update(hist_min=lo, hist_max=hi, hist_range_source=_FROM_SKETCH)


@dataclass(frozen=True)
class _ArrayShape:
    """What :func:`_plan` needs of an array: dtype and dask chunks (a dask array also qualifies)."""

    dtype: np.dtype
    chunks: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:  # noqa: D102
        return math.prod(sum(c) for c in self.chunks)


def _small_partials(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Profile many small arrays (one block each) in one task, opening them here on the worker: one task (or
    one client-side open) per tiny array would cost more than reading it. Each array is read once; float data
    without a valid range gets its histogram from the sketch, or with ``histogram="exact"`` from a second pass
    over the values already in memory. Errors stay per array.

    Items are ``(path, name, format, bins, (memory_limit, chunk limit), strategy, sample_fraction, device
    [, histogram])``
    (``format`` as ``files.format`` says: the backend opens the file without sniffing it); results are
    ``("ok", partial, row metadata, {scale_factor, add_offset}, passes, hist_exact)`` or ``("error", type, message,
    row metadata so far)``.
    """
    from metaextract_dask.arrays import _spec_of
    from metaextract_dask.chunking import adaptive_chunks

    out: list[tuple[Any, ...]] = []
    for path, name, fmt, bins, (memory_limit, limit), strategy, sample_fraction, device, *more in items:
        mode = more[0] if more else "sketch"
        meta: dict[str, Any] = {}
        try:
            spec, _ = _spec_of(path, name, fmt)  # the recipe and attributes; no dask or xarray object is needed here
            source, attrs = spec.proxy, dict(spec.attrs)
            # the chunks open_array would choose, with the client's chunk settings (not this worker's config)
            chunks = adaptive_chunks(source.shape, source.dtype, spec.disk_chunks, memory_limit=memory_limit,
                                     limit=limit)
            shape = _ArrayShape(source.dtype, chunks)
            rng, fill, chosen, meta = _plan(shape, attrs, bins=bins, strategy=strategy,
                                            sample_fraction=sample_fraction, key=f"{path}::{name}", rng=None)
            every = _block_regions(shape.chunks)
            regions = [every[i] for i in chosen]
            # One block, as the catalog's size said; should the file have grown since, blocks are read one at
            # a time (and read again for a second pass), never all held at once.
            read = source.read_region if device == "cpu" else (lambda r: _to_cupy(source.read_region(r)))
            kept = read(regions[0]) if len(regions) == 1 else None
            blocks = (lambda: [kept]) if kept is not None else (lambda: (read(r) for r in regions))
            p = merge_all([block_partial(b, fill=fill, bins=bins, rng=rng) for b in blocks()])
            passes, exact = 1, True
            if rng is None and p.n and mode == "sketch":
                _sketch_histogram(p, meta, bins)
                exact = False
            elif rng is None and p.n:
                second = _data_range(p)
                h = merge_all([block_partial(b, fill=fill, bins=bins, rng=second) for b in blocks()])
                p.hist, p.under, p.over = h.hist, h.under, h.over
                meta.update(hist_min=second[0], hist_max=second[1], hist_range_source=_SECOND_PASS)
                passes = 2
            units = {k: attrs[k] for k in ("scale_factor", "add_offset") if k in attrs}
            out.append(("ok", p, meta, units, passes, exact))
        except Exception as exc:  # this array's error row (with what is known of it); the batch goes on
            out.append(("error", type(exc).__name__, str(exc) or repr(exc), meta))
    return out


def _block_shapes(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*chunks))


def _block_regions(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[slice, ...]]:
    """Each block's region, in the order of ``to_delayed().ravel()`` (C order)."""
    axes = [[slice(o - c, o) for c, o in zip(cs, itertools.accumulate(cs))] for cs in chunks]
    return list(itertools.product(*axes))


def _profilable(row: dict[str, Any], fmt: str) -> str | None:
    """Why an ``arrays`` row of a file of catalog format `fmt` is not profiled, or None."""
    from metaextract_dask.formats import backend_for_format

    err = row.get("error")
    if isinstance(err, str) and err:  # (pandas gives NaN for a missing string)
        return "array could not be described"
    try:
        backend = backend_for_format(fmt)
    except KeyError as exc:
        return str(exc.args[0])
    if not backend.supports_arrays:
        return f"format {backend.name!r} has no lazy arrays"
    reason = backend.not_profiled.get(row.get("kind"))
    if reason:
        return reason
    try:
        dt = np.dtype(row["dtype"])
    except (TypeError, ValueError):
        return f"non-numeric dtype {row['dtype']}"
    if dt.kind not in "biufc":
        return f"non-numeric dtype {row['dtype']}"
    return None


def profile(catalog: Any, *, strategy: str = "full", sample_fraction: float = 0.1, device: str = "auto",
            bins: int = 64, client: Any = None, scheduler: str | None = None, n_workers: int | None = None,
            progress: bool | Callable[[int, int], None] | None = None, on_client: Callable[[Any], None] | None = None,
            performance_report: str | os.PathLike[str] | None = None, histogram: str | None = None) -> pd.DataFrame:
    """Profile every numeric array of `catalog` and write the ``stats`` table.

    Parameters
    ----------
    catalog : Catalog, path or SQLAlchemy URL
        A catalog written by :func:`metaextract_dask.scan` (a directory or a database).
    strategy : {"full", "sample"}
        Every block, or a deterministic subset of blocks (``sample_fraction`` of them, at least one).
    device : {"auto", "cpu", "gpu"}
        ``gpu`` moves blocks to cupy on the workers and reduces there (an error if a worker has no GPU);
        ``auto`` does so when every worker has one, else uses numpy.
    bins : int
        Histogram bins.
    histogram : {"sketch", "exact"}, optional
        The histogram of float data without a valid range: derived from the one-pass sketch over the data's
        min..max (``hist_exact`` False, one pass), or binned exactly in a second pass over the data
        (``hist_exact`` True, ``passes`` 2). Default: the ``metaextract.profile.histogram`` setting (sketch).
        Integer data and data with a valid range are binned exactly in the one pass either way.
    client, scheduler, n_workers
        Where to run, as for :func:`metaextract_dask.scan`.

    progress : bool or callable, optional
        As for :func:`metaextract_dask.scan` (default: shown inside Jupyter only).
    on_client : callable, optional
        Called with the client once it is up (the CLI prints the dashboard link from it).
    performance_report : path, optional
        Write Dask's performance report (HTML) of the profile here.

    Returns
    -------
    ProfileResult
        The ``stats`` table that was written (a pandas DataFrame), with each array's file ``format``.
    """
    from distributed import as_completed

    from metaextract_dask.arrays import _open_raw
    from metaextract_dask.catalog import Catalog, open_catalog
    from metaextract_dask.chunking import chunk_limit, worker_memory_limit
    from metaextract_dask.sinks import open_sink

    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, not {bins!r}")
    mode = _histogram_mode(histogram)
    if not isinstance(catalog, Catalog):
        catalog = open_catalog(catalog)
    t0 = time.perf_counter()
    files = catalog.to_arrow("files").select(["path", "format", "status"]).to_pylist()
    fmt_of = {r["path"]: r["format"] for r in files if r["status"] == "ok"}  # each file's backend: no re-sniffing
    arrays = [r for r in catalog.to_arrow("arrays").to_pylist() if r["path"] in fmt_of]
    rows: list[dict[str, Any]] = []

    with open_sink(catalog.target) as sink, connect(scheduler, client=client, n_workers=n_workers) as c, \
            ExitStack() as stack:
        if on_client is not None:
            on_client(c)
        if performance_report is not None:
            from distributed import performance_report as perf

            stack.enter_context(c.as_current())
            stack.enter_context(perf(filename=os.fspath(performance_report)))
        dev = resolve_device(device, c)
        # An unfinished profile with the same settings committed some rows already: keep them, skip their arrays.
        settings = {"strategy": strategy, "sample_fraction": sample_fraction if strategy == "sample" else None,
                    "bins": int(bins), "device": dev, "histogram": mode}
        wanted = {(r["path"], r["name"]) for r in arrays}
        resumed = sink.stats_pending(settings)
        if resumed is not None:  # errors (a lost worker, a transient read error) are tried again
            rows = [r for r in resumed.to_pylist()
                    if (r["path"], r["name"]) in wanted and r["status"] in ("ok", "skipped")]
            done = {(r["path"], r["name"]) for r in rows}
            arrays = [r for r in arrays if (r["path"], r["name"]) not in done]
        committer = _Committer(sink, settings, rows)
        memory_limit = worker_memory_limit(c)
        batch_bytes = config.parse_bytes(config.get("profile-batch", "64MiB"))
        small_bytes = min(batch_bytes, chunk_limit(memory_limit))
        # on a GPU, tiny arrays go to the CPU kernels: per array, the copy and launches cost more than they save
        gpu_min = config.parse_bytes(config.get("gpu-min-bytes", "4MiB")) if dev == "gpu" else 0
        max_chunks = int(config.get("profile-max-chunks", 100_000))
        todo: dict[str, dict[str, Any]] = {}
        futures: list[Any] = []
        small: list[dict[str, Any]] = []
        for row in arrays:
            base = {"path": row["path"], "name": row["name"], "device": dev, "strategy": strategy}
            fmt = fmt_of[row["path"]]
            err = row.get("error")
            if isinstance(err, str) and err.startswith(f"{TRUNCATED}:"):
                # the file cannot hold what its metadata declares: an error row at once, no graph
                rows.append({**base, "status": "error", "error_type": TRUNCATED,
                             "error_message": err[len(TRUNCATED) + 1:].strip()})
                continue
            reason = _profilable(row, fmt)
            if reason:
                rows.append({**base, "status": "skipped", "error_message": reason})
                continue
            key = f"{row['path']}::{row['name']}"
            nbytes = row.get("nbytes")
            if nbytes is not None and nbytes == nbytes and nbytes > max_chunks * chunk_limit(memory_limit):
                # a graph this size would take the client minutes and gigabytes to build (and tokenize)
                rows.append({**base, "status": "error", "error_type": "too_large", "error_message":
                             f"{int(nbytes):,} bytes would be more than {max_chunks:,} dask chunks of "
                             f"{chunk_limit(memory_limit):,} bytes (metaextract.profile-max-chunks)"})
                continue
            if nbytes is not None and nbytes == nbytes and nbytes <= small_bytes:
                # one dask chunk (adaptive_chunks keeps arrays under the chunk limit whole): opened, read and
                # summarised on a worker, many per task; the client does no I/O for it
                where = "cpu" if nbytes < gpu_min else dev
                small.append({"base": {**base, "device": where}, "nbytes": int(nbytes),
                              "item": (decode_path(row["path"]), row["name"], fmt, bins,
                                       (memory_limit, chunk_limit(memory_limit)),
                                       strategy, sample_fraction, where, mode)})
                continue
            try:
                arr, source = _open_raw(decode_path(row["path"]), row["name"], engine=fmt,
                                        memory_limit=memory_limit)
                attrs = dict(arr.attrs)
                final, meta = profile_array(arr.data, attrs, bins=bins, strategy=strategy,
                                            sample_fraction=sample_fraction, device=dev, key=key, source=source)
            except Exception as exc:  # the graph could not even be built (e.g. unreadable metadata)
                rows.append({**base, "status": "error", "error_type": type(exc).__name__, "error_message": str(exc)})
                continue
            (future,) = c.compute([final])
            todo[future.key] = {"kind": "array", "base": base, "meta": meta, "opened": (arr, source),
                                "attrs": attrs, "final": final, "retried": False}
            futures.append(future)
        jobs = list(todo.values())
        for batch in _batches(small, batch_bytes):
            future = c.submit(_small_partials, [entry["item"] for entry in batch], pure=False)
            todo[future.key] = {"kind": "batch", "entries": batch, "retried": False}
            futures.append(future)

        try:
            bar = Progress(len(small) + sum(1 for t in todo.values() if t["kind"] == "array"), progress,
                           unit="array", desc="profile")
            second: list[Any] = []
            ac = as_completed(futures, loop=c.loop)
            for future in _completed(ac, committer):
                job = todo.pop(future.key)
                if job["kind"] == "batch":
                    _batch_done(c, ac, todo, future, job, rows, bar)
                    continue
                base, meta, opened, attrs = job["base"], job["meta"], job["opened"], job["attrs"]
                try:
                    partial = future.result()
                except Exception as exc:  # e.g. a compressed chunk that does not decode
                    if type(exc).__name__ == "KilledWorker" and not job["retried"]:
                        # a worker died under this array (possibly for another's sake): one more try
                        (again,) = c.compute([job["final"]])
                        todo[again.key] = {**job, "retried": True}
                        ac.add(again)
                        continue
                    rows.append({**base, **meta, "status": "error", "error_type": type(exc).__name__,
                                 "error_message": str(exc) or repr(exc), "passes": 1})
                    bar.update(1)
                    continue
                finally:
                    future.release()
                if meta["hist_min"] is None and partial.n and mode == "sketch":
                    # float data without a valid range: its histogram over min..max from the sketch, no second pass
                    meta = dict(meta)
                    _sketch_histogram(partial, meta, bins)
                    rows.append(_row(base, meta, partial, attrs, passes=1, hist_exact=False))
                    bar.update(1)
                    continue
                if meta["hist_min"] is None and partial.n:
                    # histogram: exact asked for: float data without a valid range needs its min/max first
                    final, meta2 = profile_array(opened[0].data, attrs, bins=bins, strategy=strategy,
                                                 sample_fraction=sample_fraction, device=dev,
                                                 key=f"{base['path']}::{base['name']}", rng=_data_range(partial),
                                                 source=opened[1])
                    (f2,) = c.compute([final])
                    second.append((f2, base, {**meta, **{k: meta2[k] for k in ("hist_min", "hist_max",
                                                                                "hist_range_source")}}, partial, attrs))
                    continue
                rows.append(_row(base, meta, partial, attrs, passes=1))
                bar.update(1)
            for f2, base, meta, partial, attrs in second:
                committer.maybe_commit()
                try:
                    hist = f2.result()
                    partial.hist, partial.under, partial.over = hist.hist, hist.under, hist.over
                    rows.append(_row(base, meta, partial, attrs, passes=2))
                except Exception as exc:
                    rows.append({**base, **meta, "status": "error", "error_type": type(exc).__name__,
                                 "error_message": str(exc) or repr(exc), "passes": 2})
                bar.update(1)
            bar.close()
        finally:
            if dev == "gpu" or any(job["opened"][1].reads_in_place for job in jobs):
                c.run(release_buffers)  # the per-thread read buffers (see _region_partial), cupy's pool

        table = pa.Table.from_pylist(rows, schema=SCHEMAS["stats"])
        sink.replace_table("stats", table, {"strategy": strategy, "device": dev, "arrays": len(rows),
                                            "resumed": committer.resumed, "seconds": time.perf_counter() - t0})
    return ProfileResult.from_table(table, fmt_of, seconds=time.perf_counter() - t0)


class ProfileResult(pd.DataFrame):
    """The ``stats`` table a profile wrote, as pandas, with the file's ``format`` beside each ``path``.

    A pandas DataFrame (columns as in the ``stats`` table, nullable Arrow-backed integers) whose Jupyter repr
    starts with a summary (:meth:`summary`); frames derived from it are plain DataFrames.
    """

    _metadata = ["seconds"]

    @property
    def _constructor(self) -> type[pd.DataFrame]:  # type: ignore[override]
        return pd.DataFrame

    @classmethod
    def from_table(cls, table: pa.Table, formats: dict[str, str], seconds: float | None = None) -> ProfileResult:
        """A result from the ``stats`` rows and the catalog's ``{path: format}``."""
        from metaextract_dask.frames import to_pandas

        df = to_pandas(table)
        df.insert(1, "format", [formats.get(p) for p in df["path"]])
        out = cls(df)
        out.seconds = seconds
        return out

    def summary(self, examples: int = 3) -> dict[str, Any]:
        """Arrays by status and format, elements read, errors by type with example ``path::name``."""
        status = self["status"].astype(object)
        errors = self[status == "error"]
        error_types: dict[str, int] = {}
        error_examples: dict[str, list[str]] = {}
        for path, name, etype in zip(errors["path"], errors["name"], errors["error_type"].astype(object)):
            etype = str(etype) if isinstance(etype, str) else "unknown"
            error_types[etype] = error_types.get(etype, 0) + 1
            if len(error_examples.setdefault(etype, [])) < examples:
                error_examples[etype].append(f"{path}::{name}")
        by_format: dict[str, dict[str, int]] = {}
        for fmt, st, count in zip(self["format"].astype(object), status, self["count"].astype(object)):
            entry = by_format.setdefault(str(fmt), {"arrays": 0, "errors": 0, "elements": 0})
            entry["arrays"] += 1
            entry["errors"] += int(st == "error")
            entry["elements"] += int(count) if isinstance(count, (int, np.integer)) else 0
        devices = sorted({str(d) for d in self["device"].dropna()})
        strategies = sorted({str(d) for d in self["strategy"].dropna()})
        return {"arrays": len(self), "status": {str(k): int(v) for k, v in status.value_counts().items()},
                "device": "/".join(devices) or "-", "strategy": "/".join(strategies) or "-",
                "elements": sum(v["elements"] for v in by_format.values()),
                "by_format": dict(sorted(by_format.items())),
                "error_types": error_types, "error_examples": error_examples,
                "seconds": getattr(self, "seconds", None)}

    def _repr_html_(self) -> str | None:
        from metaextract_dask.display import profile_html

        return profile_html(self) + pd.DataFrame(self)._repr_html_()


def _completed(ac: Any, committer: _Committer) -> Any:
    """The futures of `ac` as they finish; while none is ready, the rows so far are committed on time (so an
    array that never finishes does not hold back the others' rows)."""
    while not ac.is_empty():
        if not ac.has_ready():
            committer.maybe_commit()
            with ac.thread_condition:  # notified when a future finishes (as as_completed's own __next__ waits)
                if not ac.has_ready():  # under the lock: a completion between the checks is not missed
                    ac.thread_condition.wait(timeout=0.1)
            continue
        yield from ac.next_batch(block=False)
        committer.maybe_commit()


class _Committer:
    """Commits the stats rows of a running profile to the catalog as they come (pending parts, not visible to
    readers until the profile finishes): every `metaextract.profile-commit-rows` rows or 30 seconds."""

    def __init__(self, sink: Any, settings: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self.sink, self.settings, self.rows = sink, settings, rows
        self.resumed = self.done = len(rows)  # rows of an earlier run are committed already
        self.every = int(config.get("profile-commit-rows", 256))
        self.last = time.monotonic()

    def maybe_commit(self) -> None:
        new = self.rows[self.done:]
        if new and (len(new) >= self.every or time.monotonic() - self.last > 30):
            self.sink.add_stats_pending(pa.Table.from_pylist(new, schema=SCHEMAS["stats"]), self.settings)
            self.done += len(new)
            self.last = time.monotonic()


def _batches(small: list[dict[str, Any]], budget: int, most: int = 256) -> list[list[dict[str, Any]]]:
    """Small arrays in catalog order (neighbours share files), cut into batches of at most `budget` bytes and
    `most` arrays (so that progress moves and a lost batch costs little)."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for entry in small:
        if not out or size + entry["nbytes"] > budget or len(out[-1]) >= most:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += entry["nbytes"]
    return out


def _batch_done(c: Any, ac: Any, todo: dict[str, dict[str, Any]], future: Any, job: dict[str, Any],
                rows: list[dict[str, Any]], bar: Progress) -> None:
    """Rows of a finished batch of small arrays; a batch whose worker died is retried one array per task."""
    entries = job["entries"]
    try:
        outcomes = future.result()
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker" and not job["retried"]:
            for entry in entries:  # alone, so that an array that kills its worker takes no other down with it
                again = c.submit(_small_partials, [entry["item"]], pure=False)
                todo[again.key] = {"kind": "batch", "entries": [entry], "retried": True}
                ac.add(again)
            return
        outcomes = [("error", type(exc).__name__, str(exc) or repr(exc))] * len(entries)
    finally:
        future.release()
    for entry, outcome in zip(entries, outcomes):
        if outcome[0] == "ok":
            _, partial, meta, units, passes, exact = outcome
            rows.append(_row(entry["base"], meta, partial, units, passes=passes, hist_exact=exact))
        else:
            meta = outcome[3] if len(outcome) > 3 else {}
            rows.append({**entry["base"], **meta, "status": "error", "error_type": outcome[1],
                         "error_message": outcome[2], **({"passes": 1} if meta else {})})
    bar.update(len(entries))


def _row(base: dict[str, Any], meta: dict[str, Any], partial: Partial, attrs: dict[str, Any], passes: int,
         hist_exact: bool = True) -> dict[str, Any]:
    scale, offset = _scalar(attrs, "scale_factor"), _scalar(attrs, "add_offset")
    return {**base, **meta, **finalize(partial, scale=scale, offset=offset, hist_exact=hist_exact), "status": "ok",
            "passes": passes}
