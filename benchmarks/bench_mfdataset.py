"""Many small netCDF files as one dataset: Catalog.open_mfdataset vs xarray.open_mfdataset(parallel=True).

    python benchmarks/bench_mfdataset.py [--files 2000] [--workers 2] [--repeat 3] [--data bench-data/mf2000]

The files (CF netCDF-4, 4 time steps of tas(time, lat, lon) 32 x 64 and pr, times in days since 2000-01-01)
are written once. The catalog is scanned once (timed: the "scan" line); then, interleaved in each repeat, on the
same already started LocalCluster:

* ``catalog-cold``: ``open_catalog(dir).open_mfdataset(concat_dim="time", cache_coords=False)`` -- reads the
  catalog's Parquet tables, builds every array from its rows and reads the 1-D coordinates of each file
  (time, lat, lon: one open per file);
* ``catalog``: the same with the coordinate cache (``metaextract.combine.cache-coords``, the default) filled
  by an earlier open: no file is opened;
* ``xarray``: ``xarray.open_mfdataset(paths, parallel=True, combine="by_coords")`` -- opens every file on the
  workers (dask.delayed) and combines the Datasets;
* ``xarray-fast``: the same with xarray's recommended fast path for many files
  (``data_vars="minimal", coords="minimal", compat="override"``).

Both results are checked equal (values of a slice through every file, the time index). "catalog + scan" adds
the scan's time: a scan is made once and serves every later open, but it is the honest cost of a first use.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np


def write_files(root: str, n: int) -> list[str]:
    import netCDF4

    os.makedirs(root, exist_ok=True)
    paths = []
    rng = np.random.default_rng(7)
    for i in range(n):
        path = os.path.join(root, f"tas_{i:05d}.nc")
        with netCDF4.Dataset(path, "w") as nc:
            nc.setncatts({"Conventions": "CF-1.8", "source_id": "bench", "experiment_id": "hist"})
            nc.createDimension("time", None)
            nc.createDimension("lat", 32)
            nc.createDimension("lon", 64)
            t = nc.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            t.calendar = "standard"
            t[:] = np.arange(4) + 4 * i
            nc.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-87.5, 87.5, 32)
            nc.createVariable("lon", "f4", ("lon",))[:] = np.linspace(0, 354.375, 64)
            v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True, chunksizes=(1, 32, 64),
                                  fill_value=np.float32(1e20))
            v.units = "K"
            v[:] = (250 + 30 * rng.random((4, 32, 64))).astype("f4")
            p = nc.createVariable("pr", "i2", ("time", "lat", "lon"), zlib=True, chunksizes=(1, 32, 64))
            p.scale_factor = 0.01
            p.units = "mm"
            p[:] = np.full((4, 32, 64), i % 100, dtype="f4")
        paths.append(path)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="bench-data/mf2000")
    args = ap.parse_args()

    import dask
    import xarray as xr

    from metaextract_dask import open_catalog, scan
    from metaextract_dask.arrays import close_cached_files
    from metaextract_dask.cluster import connect

    marker = f"{args.data.rstrip(os.sep)}.complete-{args.files}"
    if not os.path.exists(marker):
        shutil.rmtree(args.data, ignore_errors=True)
        write_files(args.data, args.files)
        open(marker, "w").close()
    paths = sorted(os.path.join(args.data, f) for f in os.listdir(args.data) if f.endswith(".nc"))
    work = tempfile.mkdtemp(prefix="bench-mf-")
    times: dict[str, list[float]] = {"catalog-cold": [], "catalog": [], "xarray": [], "xarray-fast": []}
    try:
        with connect(n_workers=args.workers) as client, contextlib.ExitStack() as stack:
            out = os.path.join(work, "cat")
            t0 = time.perf_counter()
            scan([args.data], out, client=client)
            scan_s = time.perf_counter() - t0
            # xarray's parallel=True runs on the current scheduler: make it this cluster (connect() does not make
            # its client the default), so both sides use the same two worker processes
            stack.enter_context(client.as_current())
            xr.open_mfdataset(paths[:20], parallel=True, combine="by_coords").close()  # warm imports, workers
            open_catalog(out).open_mfdataset(concat_dim="time")  # fills the coordinate cache
            for i in range(args.repeat):
                t0 = time.perf_counter()
                cold, _ = open_catalog(out).open_mfdataset(concat_dim="time", cache_coords=False)
                times["catalog-cold"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ds, skipped = open_catalog(out).open_mfdataset(concat_dim="time")
                times["catalog"].append(time.perf_counter() - t0)
                assert len(skipped) == 0 and ds.tas.shape == (4 * len(paths), 32, 64), (skipped, ds)
                t0 = time.perf_counter()
                theirs = xr.open_mfdataset(paths, parallel=True, combine="by_coords")
                times["xarray"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                fast = xr.open_mfdataset(paths, parallel=True, combine="by_coords", data_vars="minimal",
                                         coords="minimal", compat="override")
                times["xarray-fast"].append(time.perf_counter() - t0)
                if i == 0:  # same combined dataset: the time index, values of one cell through every file
                    # (read in this process: xarray's netCDF-C handles, closed by the garbage collector on a
                    # worker's event-loop thread while its task thread reads, crashed workers in a trial run)
                    with dask.config.set(scheduler="synchronous"):
                        xr.testing.assert_identical(cold, ds)
                        assert ds.indexes["time"].equals(theirs.indexes["time"])
                        np.testing.assert_array_equal(ds.tas[:, 5, 7].values, theirs.tas[:, 5, 7].values)
                        np.testing.assert_array_equal(ds.pr[:, 0, 0].values, fast.pr[:, 0, 0].values)
                    close_cached_files()
                theirs.close()
                fast.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(paths)} netCDF files, {args.workers} workers, {args.repeat} interleaved repeats (median, s)")
    print(f"  scan (once)            {scan_s:8.2f}")
    for k, v in times.items():
        print(f"  {k:<22} {med[k]:8.2f}   runs: {', '.join(f'{x:.2f}' for x in v)}")
    print(f"  catalog-cold + scan    {med['catalog-cold'] + scan_s:8.2f}")
    for k in ("catalog", "catalog-cold"):
        print(f"speedup {k} vs xarray: {med['xarray'] / med[k]:.1f}x, vs xarray-fast: "
              f"{med['xarray-fast'] / med[k]:.1f}x")
    print(f"with the scan inside the timing (catalog-cold + scan): {med['xarray'] / (med['catalog-cold'] + scan_s):.1f}x"
          f" / {med['xarray-fast'] / (med['catalog-cold'] + scan_s):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
