"""Scan throughput: metaextract-dask on a 2-worker LocalCluster against what a user would otherwise write, in
one run, interleaved, every timed run writing a fresh output.

Sides, each timed `--repeat` times in turn (best and median reported):

* **scan**: ``metaextract_dask.scan`` on an already started cluster, into a new catalog directory each run;
* **(a) plain loop**: one process, a sequential loop that opens each file with its own library and reads the
  metadata a user would want -- h5py ``visititems`` with shapes, dtypes, chunks, compression and attributes;
  netCDF4 variables with their attributes; astropy headers of every HDU as dicts; pydicom without pixel data,
  every element as a value; zarr members with their attributes -- and writes it to one Parquet file;
* **(b) project extraction**: one process, ``extract_batch`` over the same files (the project's own readers,
  every catalog column), written to Parquet;
* **(c) two plain processes** (a reference, not a target): (b) split in halves between two already started
  processes, no dask. What this machine gives two processes over one is the ceiling of scan / (b) here.

Per-format milliseconds per file are given for (a) and (b) (the cost the scan's workers pay per file).
kerchunk's per-file translation of the HDF5/netCDF-4/FITS files is timed once as a peer line.

    python benchmarks/bench_scan.py [--files 6000] [--workers 2] [--repeat 3] [--data bench-data/many]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metaextract_dask import scan
from metaextract_dask.cluster import connect
from metaextract_dask.discover import discover
from metaextract_dask.extract import extract_batch
from metaextract_dask.sample import generate_many_cached


def warm_page_cache(entries: list[Any]) -> None:
    for e in entries:
        if e.is_dir:
            for root, _d, files in os.walk(e.path):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        f.read()
        else:
            with open(e.path, "rb") as f:
                f.read()


# --------------------------------------------------------------------------- (a) the loop a user writes
def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _hdf5(path: str) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: _plain(v) for k, v in f.attrs.items()}

        def visit(name: str, obj: Any) -> None:
            item: dict[str, Any] = {"attrs": {k: _plain(v) for k, v in obj.attrs.items()
                                              if k not in ("DIMENSION_LIST", "REFERENCE_LIST")}}
            if isinstance(obj, h5py.Dataset):
                item.update(shape=obj.shape, dtype=obj.dtype.str, chunks=obj.chunks, compression=obj.compression)
            out[name] = item

        f.visititems(visit)
    return out


def _netcdf(path: str) -> dict[str, Any]:
    import netCDF4

    out: dict[str, Any] = {}
    with netCDF4.Dataset(path) as ds:
        def walk(g: Any) -> None:
            out[g.path] = {k: _plain(g.getncattr(k)) for k in g.ncattrs()}
            for v in g.variables.values():
                out[f"{g.path}/{v.name}"] = {"shape": v.shape, "dims": v.dimensions, "dtype": str(v.dtype),
                                             "chunking": v.chunking(), "filters": v.filters(),
                                             "attrs": {k: _plain(v.getncattr(k)) for k in v.ncattrs()}}
            for sub in g.groups.values():
                walk(sub)

        walk(ds)
    return out


def _fits(path: str) -> dict[str, Any]:
    from astropy.io import fits

    with warnings.catch_warnings(), fits.open(path, memmap=False) as hdul:
        warnings.simplefilter("ignore")
        return {str(i): {k: str(v) for k, v in h.header.items()} for i, h in enumerate(hdul)}


def _dicom(path: str) -> dict[str, Any]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {str(e.tag): str(e.value) for e in ds.iterall()}


def _zarr(path: str) -> dict[str, Any]:
    import zarr

    node = zarr.open(store=path, mode="r")
    out = {"/": dict(node.attrs)}
    if isinstance(node, zarr.Group):
        for name, m in node.members(max_depth=None):
            out[name] = {"attrs": dict(m.attrs), **({"shape": m.shape, "dtype": str(m.dtype), "chunks": m.chunks}
                                                   if isinstance(m, zarr.Array) else {})}
    return out


def head_kind(head: bytes) -> str:
    """The format a user's loop would pick from a file's first 132 bytes (HDF5 for netCDF-4 too)."""
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"CDF"):
        return "netcdf3"
    if head.startswith(b"SIMPLE"):
        return "fits"
    if head[128:132] == b"DICM":
        return "dicom"
    return "other"


def _kind(path: str, is_dir: bool) -> str:
    if is_dir:
        return "zarr"
    with open(path, "rb") as f:
        kind = head_kind(f.read(132))
    return "netcdf4" if kind == "hdf5" and path.endswith(".nc") else kind


_READ = {"hdf5": _hdf5, "netcdf4": _netcdf, "netcdf3": _netcdf, "fits": _fits, "dicom": _dicom, "zarr": _zarr}


def plain_loop(data: str, out: str, per_format: dict[str, list[float]]) -> float:
    t0 = time.perf_counter()
    rows = []
    for root, dirs, files in os.walk(data):
        dirs.sort()
        for d in [d for d in dirs if d.endswith(".zarr")]:
            files.append(d)
            dirs.remove(d)
        for name in sorted(files):
            path = os.path.join(root, name)
            t = time.perf_counter()
            kind = _kind(path, os.path.isdir(path))
            try:
                meta = json.dumps(_READ[kind](path), default=str) if kind in _READ else None
                error = None
            except Exception as exc:
                meta, error = None, f"{type(exc).__name__}: {exc}"
            per_format[kind].append(time.perf_counter() - t)
            rows.append({"path": path, "kind": kind, "metadata": meta, "error": error})
    pq.write_table(pa.Table.from_pylist(rows), out, compression="zstd")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- (b) the project's extraction
def _extract_to(paths: list[str], out: str) -> int:
    """(c)'s half: extract_batch over `paths`, written to Parquet under `out` (in a pool process)."""
    tables = extract_batch(discover(paths))
    os.makedirs(out)
    for name, table in tables.items():
        pq.write_table(table, os.path.join(out, f"{name}.parquet"), compression="zstd")
    return tables["files"].num_rows


def two_processes(pool: Any, paths: list[str], out: str) -> float:
    """(c): the files dealt alternately to two pool processes; wall seconds until both wrote their part."""
    t0 = time.perf_counter()
    halves = [pool.submit(_extract_to, paths[i::2], os.path.join(out, str(i))) for i in range(2)]
    rows = sum(h.result() for h in halves)
    elapsed = time.perf_counter() - t0
    assert rows == len(paths)  # both halves did the work
    return elapsed


def project_extraction(data: str, out: str, per_format: dict[str, list[float]]) -> float:
    t0 = time.perf_counter()
    tables = extract_batch(discover([data]))
    os.makedirs(out)
    for name, table in tables.items():
        pq.write_table(table, os.path.join(out, f"{name}.parquet"), compression="zstd")
    elapsed = time.perf_counter() - t0
    files = tables["files"].to_pydict()
    for fmt, seconds in zip(files["format"], files["read_seconds"]):
        per_format[fmt].append(seconds)
    return elapsed


def kerchunk_peer(entries: list[Any], formats: dict[str, str]) -> tuple[int, float, int]:
    """kerchunk per-file reference generation (HDF5, netCDF4 through its HDF5 layer, FITS)."""
    from kerchunk.fits import process_file
    from kerchunk.hdf import SingleHdf5ToZarr

    todo = [e for e in entries if formats.get(e.path) in ("hdf5", "netcdf4", "fits")]
    failures = 0
    t0 = time.perf_counter()
    for e in todo:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if formats[e.path] == "fits":
                    process_file(e.path)
                else:
                    SingleHdf5ToZarr(e.path, inline_threshold=0).translate()
        except Exception:
            failures += 1
    return len(todo), time.perf_counter() - t0, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side (best and median reported)")
    ap.add_argument("--data", default="bench-data/many")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()

    t = time.perf_counter()
    if generate_many_cached(args.data, args.files, seed=0):
        print(f"generated {args.files} files in {time.perf_counter() - t:.1f} s")
    entries = discover([args.data])
    n = len(entries)
    warm_page_cache(entries)
    work = tempfile.mkdtemp(prefix="bench-scan-")
    times: dict[str, list[float]] = {"scan": [], "loop": [], "extract": [], "two": []}
    loop_ms: dict[str, list[float]] = defaultdict(list)
    extract_ms: dict[str, list[float]] = defaultdict(list)
    try:
        # warm-ups (imports, first-call costs) outside the timing
        plain_loop(args.data, os.path.join(work, "warm-loop.parquet"), defaultdict(list))
        extract_batch(entries[:: max(1, n // 50)])
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        paths = [e.path for e in entries]
        pool = ProcessPoolExecutor(2, mp_context=get_context("spawn"))
        warm = [pool.submit(_extract_to, paths[k::100], os.path.join(work, f"warm-two-{k}")) for k in range(4)]
        for f in warm:
            f.result()  # both processes imported every reader and made their first calls
        with pool, connect(n_workers=args.workers) as client:
            # the workers import every reader and make their first calls, as the two loops did above
            scan([e.path for e in entries[:: max(1, n // 50)]], os.path.join(work, "warm"), client=client)
            for i in range(args.repeat):  # interleaved, so machine noise hits every side alike; fresh outputs
                t0 = time.perf_counter()
                catalog = scan([args.data], os.path.join(work, f"cat-{i}"), client=client)
                times["scan"].append(time.perf_counter() - t0)
                files = catalog.to_pandas("files")
                assert len(files) == n  # the scan did the work
                formats = dict(zip(files["path"], files["format"]))
                times["loop"].append(plain_loop(args.data, os.path.join(work, f"loop-{i}.parquet"), loop_ms))
                times["extract"].append(project_extraction(args.data, os.path.join(work, f"ext-{i}"), extract_ms))
                times["two"].append(two_processes(pool, paths, os.path.join(work, f"two-{i}")))
                for name in (f"cat-{i}", f"ext-{i}", f"two-{i}"):
                    shutil.rmtree(os.path.join(work, name))
        k_files, k_time, k_fail = kerchunk_peer(entries, formats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    mix = Counter(formats.values())
    print(f"files: {n}  mix: {dict(sorted(mix.items()))}  cpus: {os.cpu_count()}  runs: {args.repeat}")
    for key, label in (("scan", f"metaextract-dask scan ({args.workers} workers)"),
                       ("loop", "(a) plain library loop, 1 process"), ("extract", "(b) project extraction, 1 process"),
                       ("two", "(c) (b) in 2 plain processes, no dask")):
        print(f"{label:40s}: {n / best[key]:7.0f} files/s best ({best[key]:.2f} s), "
              f"{n / median[key]:7.0f} median")
    pairs_a = sorted(loop / s for loop, s in zip(times["loop"], times["scan"]))
    pairs_b = sorted(ext / s for ext, s in zip(times["extract"], times["scan"]))
    print(f"scan / (a) plain loop       : {best['loop'] / best['scan']:5.2f}x best, median pair "
          f"{statistics.median(pairs_a):.2f}x (range {pairs_a[0]:.2f}-{pairs_a[-1]:.2f})   target >= 1.6x")
    print(f"scan / (b) project, 1 proc. : {best['extract'] / best['scan']:5.2f}x best, median pair "
          f"{statistics.median(pairs_b):.2f}x (range {pairs_b[0]:.2f}-{pairs_b[-1]:.2f})   target >= 1.8x")
    pairs_c = sorted(ext / two for ext, two in zip(times["extract"], times["two"]))
    print(f"(c) / (b), the machine's own : {best['extract'] / best['two']:5.2f}x best, median pair "
          f"{statistics.median(pairs_c):.2f}x (range {pairs_c[0]:.2f}-{pairs_c[-1]:.2f})   ceiling of scan / (b)")
    print("per-format ms/file (median over runs), project (b) vs plain loop (a):")
    per_format = {}
    for fmt in sorted(set(extract_ms) | set(loop_ms)):
        b = statistics.median(extract_ms[fmt]) * 1e3 if extract_ms.get(fmt) else float("nan")
        a = statistics.median(loop_ms[fmt]) * 1e3 if loop_ms.get(fmt) else float("nan")
        per_format[fmt] = {"project_ms": b, "loop_ms": a}
        print(f"  {fmt:10s} project {b:6.2f}   loop {a:6.2f}   ratio {b / a:5.2f}x   (target <= 1.25x)")
    print(f"kerchunk translate, sequential (peer): {k_files / k_time:7.0f} files/s over {k_files} "
          f"hdf5/netcdf4/fits files ({k_fail} failed)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"files": n, "mix": dict(mix), "times": times, "per_format_ms": per_format,
                       "kerchunk_files_per_s": k_files / k_time, "kerchunk_failures": k_fail}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
