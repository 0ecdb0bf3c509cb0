"""Remote scan throughput: metaextract-dask over HTTP against a sequential fsspec loop, in one run, interleaved,
every timed run writing a fresh output.

A loopback HTTP server (:class:`metaextract_dask.httptest.HTTPTestServer`, in its own process, so its request
handling does not compete with either side for a GIL) serves the benchmark tree (``sample.generate_many``: HDF5,
netCDF-4, netCDF-3, FITS, DICOM, a few Zarr stores and misfits) and adds `--latency` seconds (default 20 ms)
to every request, as a network would.

Sides, each timed `--repeat` times in turn (best and median reported):

* **scan**: ``metaextract_dask.scan`` of the directory URL on an already started `--workers` LocalCluster,
  into a new catalog directory and with a new (empty) remote cache each run; the catalog row count is checked;
* **(b) sequential loop**: one process, the loop a user writes with fsspec and the same libraries: list the
  directory (``fs.find``), then for each URL open it with fsspec (its default read-ahead cache) and read the
  same metadata: h5py on the fsspec file (netCDF-4 files too, as HDF5), netCDF4 on the fetched bytes for
  netCDF-3 (``memory=``), astropy headers of every HDU, pydicom without pixel data, zarr members through the
  fsspec store; the rows go to one Parquet file.
* **(c) kerchunk** (peer line, timed once): per-file reference generation over the same URLs, sequential:
  ``kerchunk.hdf.SingleHdf5ToZarr`` for HDF5 and netCDF-4, ``kerchunk.netCDF3.NetCDF3ToZarr`` for netCDF-3,
  ``kerchunk.fits.process_file`` for FITS (DICOM and Zarr have no kerchunk translator and are left out).

Requests per file and bytes per file come from the server's own counters.

    python benchmarks/bench_remote.py [--files 600] [--workers 2] [--repeat 3] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import dask.config
import pyarrow as pa
import pyarrow.parquet as pq

from metaextract_dask import scan
from metaextract_dask.cluster import connect
from metaextract_dask.sample import generate_many_cached

# The plain loop's readers are bench_scan's: h5py, astropy and pydicom take the fsspec file object as they take
# a path, zarr the URL.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_scan import _dicom, _fits, _hdf5, _plain, _zarr, head_kind  # noqa: E402


# --------------------------------------------------------------------------- the server, in its own process
def _serve(root: str, latency: float, conn: Any) -> None:
    from metaextract_dask.httptest import HTTPTestServer

    with HTTPTestServer(root, latency=latency) as srv:
        conn.send(srv.url)
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                return
            if cmd == "reset":
                srv.reset_counters()
                conn.send(None)
            elif cmd == "stats":
                conn.send({"requests": srv.requests, "bytes": srv.bytes_sent, "methods": dict(srv.methods),
                           "ranges": srv.ranges})


class Server:
    def __init__(self, root: str, latency: float) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(root, latency, child), daemon=True)
        self.proc.start()
        self.url: str = self.conn.recv()

    def reset(self) -> None:
        self.conn.send("reset")
        self.conn.recv()

    def stats(self) -> dict[str, Any]:
        self.conn.send("stats")
        return self.conn.recv()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(10)


# --------------------------------------------------------------------------- (b) the loop a user writes
def _netcdf3(f: Any) -> dict[str, Any]:
    import netCDF4

    out: dict[str, Any] = {}
    with netCDF4.Dataset("remote.nc", memory=f.read()) as ds:
        out["/"] = {k: _plain(ds.getncattr(k)) for k in ds.ncattrs()}
        for v in ds.variables.values():
            out[v.name] = {"shape": v.shape, "dims": v.dimensions, "dtype": str(v.dtype),
                           "attrs": {k: _plain(v.getncattr(k)) for k in v.ncattrs()}}
    return out


def _kind(head: bytes) -> str:
    return head_kind(head)  # netCDF-4 read through its HDF5 layer, as a user of h5netcdf would


_READ = {"hdf5": _hdf5, "netcdf3": _netcdf3, "fits": _fits, "dicom": _dicom}


def list_urls(base: str) -> tuple[list[str], list[str]]:
    """(file URLs, Zarr store URLs) below `base`, as a user lists them with fsspec."""
    import fsspec

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    files, stores = [], set()
    for u in fs.find(base):
        if ".zarr/" in u:
            stores.add(u[:u.index(".zarr/") + 5])
        else:
            files.append(u)
    return sorted(files), sorted(stores)


def sequential_loop(base: str, out: str) -> tuple[float, int]:
    import fsspec

    t0 = time.perf_counter()
    files, stores = list_urls(base)
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    rows = []
    for url in files:
        try:
            with fs.open(url, "rb") as f:
                kind = _kind(f.read(132))
                f.seek(0)
                meta = json.dumps(_READ[kind](f), default=str) if kind in _READ else None
            error = None
        except Exception as exc:
            kind, meta, error = "error", None, f"{type(exc).__name__}: {exc}"
        rows.append({"path": url, "kind": kind, "metadata": meta, "error": error})
    for url in stores:
        try:
            meta, error = json.dumps(_zarr(url), default=str), None
        except Exception as exc:
            meta, error = None, f"{type(exc).__name__}: {exc}"
        rows.append({"path": url, "kind": "zarr", "metadata": meta, "error": error})
    pq.write_table(pa.Table.from_pylist(rows), out, compression="zstd")
    return time.perf_counter() - t0, len(rows)


# --------------------------------------------------------------------------- (c) kerchunk
def kerchunk_peer(files: list[str], formats: dict[str, str]) -> dict[str, Any]:
    from kerchunk.fits import process_file
    from kerchunk.hdf import SingleHdf5ToZarr
    from kerchunk.netCDF3 import NetCDF3ToZarr

    todo = [u for u in files if formats.get(u) in ("hdf5", "netcdf4", "netcdf3", "fits")]
    failures: dict[str, int] = {}
    t0 = time.perf_counter()
    for url in todo:
        fmt = formats[url]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if fmt == "fits":
                    process_file(url)
                elif fmt == "netcdf3":
                    NetCDF3ToZarr(url, inline_threshold=0).translate()
                else:
                    SingleHdf5ToZarr(url, inline_threshold=0).translate()
        except Exception:
            failures[fmt] = failures.get(fmt, 0) + 1
    return {"files": len(todo), "seconds": time.perf_counter() - t0, "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side (best and median reported)")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds the server adds to every request")
    ap.add_argument("--data", default="bench-data/remote")
    ap.add_argument("--no-kerchunk", action="store_true")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()

    t = time.perf_counter()
    if generate_many_cached(args.data, args.files, seed=0):
        print(f"generated {args.files} files in {time.perf_counter() - t:.1f} s")
    server = Server(os.path.abspath(args.data), args.latency)
    base = server.url + "/"
    work = tempfile.mkdtemp(prefix="bench-remote-")
    times: dict[str, list[float]] = {"scan": [], "loop": []}
    counters: dict[str, list[dict[str, Any]]] = {"scan": [], "loop": []}
    n = 0
    try:
        sequential_loop(base, os.path.join(work, "warm-loop.parquet"))  # imports, first-call costs
        with connect(n_workers=args.workers) as client:
            with dask.config.set({"metaextract.remote.cache-dir": os.path.join(work, "warm-cache")}):
                scan([base], os.path.join(work, "warm"), client=client)  # workers import the readers
            for i in range(args.repeat):  # interleaved, so machine noise hits every side alike; fresh outputs
                server.reset()
                with dask.config.set({"metaextract.remote.cache-dir": os.path.join(work, f"cache-{i}")}):
                    t0 = time.perf_counter()
                    catalog = scan([base], os.path.join(work, f"cat-{i}"), client=client)
                    times["scan"].append(time.perf_counter() - t0)
                counters["scan"].append(server.stats())
                files = catalog.to_pandas("files")
                n = len(files)
                assert n == args.files, (n, args.files)  # the scan did the work: one row per file
                assert (files["path"].str.startswith(server.url)).all()
                formats = dict(zip(files["path"], files["format"]))
                errors = int((files["status"] == "error").sum())
                server.reset()
                seconds, rows = sequential_loop(base, os.path.join(work, f"loop-{i}.parquet"))
                assert rows == n, (rows, n)
                times["loop"].append(seconds)
                counters["loop"].append(server.stats())
                for name in (f"cat-{i}", f"cache-{i}"):
                    shutil.rmtree(os.path.join(work, name))
        peer = None
        if not args.no_kerchunk:
            server.reset()
            peer = kerchunk_peer([p for p in formats if not p.endswith(".zarr")], formats)
            peer["counters"] = server.stats()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"files: {n} ({errors} error rows: the sample's misfits)  latency: {args.latency * 1e3:.0f} ms/request  "
          f"cpus: {os.cpu_count()}  runs: {args.repeat}")
    for key, label in (("scan", f"metaextract-dask scan ({args.workers} workers)"),
                       ("loop", "(b) sequential fsspec loop, 1 process")):
        c = counters[key][-1]
        print(f"{label:40s}: {n / best[key]:7.1f} files/s best ({best[key]:.2f} s), {n / median[key]:7.1f} median; "
              f"{c['requests'] / n:.2f} requests/file, {c['bytes'] / n / 1e3:.1f} kB/file")
    pairs = sorted(loop / s for loop, s in zip(times["loop"], times["scan"]))
    print(f"scan / (b) loop: {best['loop'] / best['scan']:5.2f}x best, median pair {statistics.median(pairs):.2f}x "
          f"(range {pairs[0]:.2f}-{pairs[-1]:.2f})   target >= 8x")
    if peer is not None:
        c = peer["counters"]
        print(f"(c) kerchunk translate, sequential (peer): {peer['files'] / peer['seconds']:7.1f} files/s over "
              f"{peer['files']} hdf5/netcdf4/netcdf3/fits URLs ({peer['seconds']:.1f} s; failures: "
              f"{peer['failures'] or 'none'}); {c['requests'] / peer['files']:.2f} requests/file, "
              f"{c['bytes'] / peer['files'] / 1e3:.1f} kB/file")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"files": n, "times": times, "counters": counters, "kerchunk": peer,
                       "latency": args.latency}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
