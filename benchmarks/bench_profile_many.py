"""Profiling many small arrays: metaextract's `profile` against a plain loop doing the same work in one process.

    python benchmarks/bench_profile_many.py [--files 6000] [--repeat 3]

The tree is `generate_many` (the scan benchmark's mixed small files: HDF5, netCDF3/4, FITS, DICOM, Zarr).
(a) `profile(catalog)` on an already started 2-worker embedded cluster; (b) the loop a user would write without
it: for every numeric array of the catalog, read it whole with the same readers (no dask) and compute the same
statistics with numpy (NaN and fill counts, min, max, mean, std, a 64-bin histogram over the valid range or the
data's range). Prints arrays/s of both and the ratio (best of --repeat, interleaved); with cupy and a GPU on
the workers, also (a) with ``device="gpu"``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from metaextract_dask import profile, scan
from metaextract_dask.arrays import _spec_of
from metaextract_dask.cluster import connect
from metaextract_dask.sample import generate_many
from metaextract_dask.stats import histogram_range


def plain_loop(rows: list[dict]) -> int:
    done = 0
    for row in rows:
        try:
            spec, _ = _spec_of(row["path"], row["name"])
            x = np.asarray(spec.proxy.read_region(tuple(slice(0, n) for n in spec.proxy.shape)), dtype=np.float64)
        except Exception:
            continue
        fill = spec.attrs.get("_FillValue")
        nan = int(np.isnan(x).sum())
        valid = x[np.isfinite(x) & ((x != fill) if fill is not None else True)]
        if valid.size:
            rng, _ = histogram_range(spec.proxy.dtype, spec.attrs)
            rng = rng or (valid.min(), valid.max() if valid.max() > valid.min() else valid.min() + 1)
            _ = (nan, valid.min(), valid.max(), valid.mean(), valid.std(), np.histogram(valid, 64, rng))
        done += 1
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="bench-data/many")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        generate_many(args.data, n_files=args.files, seed=0)
    work = tempfile.mkdtemp(prefix="bench-profile-many-")
    ours, loop, gpu = [], [], []
    try:
        with connect(n_workers=2) as client:
            cat = scan([args.data], os.path.join(work, "cat"), client=client)
            files = cat.to_pandas("files")
            ok = set(files.loc[files["status"] == "ok", "path"])
            arrays = cat.to_pandas("arrays")
            numeric = [r for r in arrays.to_dict("records") if r["path"] in ok and np.dtype(r["dtype"]).kind in "biuf"
                       and r.get("kind") != "fits-table"] if "kind" in arrays else []
            profile(cat, client=client, device="cpu")  # warm: numba caches loaded in the workers
            plain_loop(numeric[:200])
            for _ in range(args.repeat):  # interleaved, so machine noise hits both sides alike
                t0 = time.perf_counter()
                st = profile(cat, client=client, device="cpu")
                ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                n_loop = plain_loop(numeric)
                loop.append(time.perf_counter() - t0)
            from metaextract_dask.profiler import gpu_available

            if all(client.run(gpu_available).values()):
                profile(cat, client=client, device="gpu")  # warm: CUDA kernels compiled in the workers
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    sg = profile(cat, client=client, device="gpu")
                    gpu.append(time.perf_counter() - t0)
                assert int((sg["status"] == "ok").sum()) == int((st["status"] == "ok").sum())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = int((st["status"] == "ok").sum())
    a, b = min(ours), min(loop)
    print(f"{len(files)} files, {n} arrays profiled ({n_loop} by the loop); 2 workers on {os.cpu_count()} cpus; "
          f"best of {args.repeat}")
    print(f"(a) metaextract-dask profile : {n / a:8.0f} arrays/s ({a:.2f} s)")
    print(f"(b) plain loop, numpy        : {n_loop / b:8.0f} arrays/s ({b:.2f} s)")
    print(f"ratio a/b: {(n / a) / (n_loop / b):.2f}x")
    if gpu:
        g = min(gpu)
        print(f"(a) on GPU (cupy)            : {n / g:8.0f} arrays/s ({g:.2f} s); ratio to (b): "
              f"{(n / g) / (n_loop / b):.2f}x, to (a) on CPU: {a / g:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
