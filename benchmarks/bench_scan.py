"""Scan throughput: metaextract-dask on a 2-worker LocalCluster vs a plain sequential loop, in one run.

Both sides do the same work with the same libraries (sniff, read metadata with h5py/netCDF4/zarr/astropy/
pydicom, build the catalog rows, write Parquet); the cluster is started and warmed before timing, as a user
with a running client would have it. kerchunk's per-file translation of the HDF5/netCDF4/FITS files is timed
as a peer line. Files are read once beforehand so every timing runs from the page cache.

    python benchmarks/bench_scan.py [--files 6000] [--workers 2] [--repeat 3] [--data bench-data/many]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter

import pyarrow.parquet as pq

from metaextract_dask import scan
from metaextract_dask.cluster import connect
from metaextract_dask.discover import discover
from metaextract_dask.extract import extract_batch
from metaextract_dask.sample import generate_many


def warm_page_cache(entries) -> None:
    for e in entries:
        if e.is_dir:
            for root, _d, files in os.walk(e.path):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        f.read()
        else:
            with open(e.path, "rb") as f:
                f.read()


def sequential(data: str, out: str) -> float:
    """The baseline: one process, list the tree, a plain loop over the files, then the same Parquet tables."""
    t0 = time.perf_counter()
    tables = extract_batch(discover([data]))
    os.makedirs(out, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, os.path.join(out, f"{name}.parquet"), compression="zstd")
    return time.perf_counter() - t0


def kerchunk_peer(entries, formats: dict[str, str]) -> tuple[int, float, int]:
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
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best is reported")
    ap.add_argument("--data", default="bench-data/many")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()

    marker = f"{args.data.rstrip(os.sep)}.complete-{args.files}"  # beside the tree, not scanned with it
    if not os.path.exists(marker):
        shutil.rmtree(args.data, ignore_errors=True)
        t = time.perf_counter()
        generate_many(args.data, n_files=args.files, seed=0)
        open(marker, "w").close()
        print(f"generated {args.files} files in {time.perf_counter() - t:.1f} s")
    entries = discover([args.data])
    n = len(entries)
    warm_page_cache(entries)
    work = tempfile.mkdtemp(prefix="bench-scan-")

    seq_times, par_times = [], []
    try:
        # Baseline warm-up: imports and first-call costs paid outside the timing.
        extract_batch(entries[:: max(1, n // 50)])
        with connect(n_workers=args.workers) as client:
            scan(entries[0].path, os.path.join(work, "warm"), client=client)  # workers import the readers
            client.run(lambda: __import__("metaextract_dask.extract"))
            for _ in range(args.repeat):  # interleaved, so machine noise hits both sides alike
                seq_times.append(sequential(args.data, os.path.join(work, "seq")))
                t0 = time.perf_counter()
                catalog = scan([args.data], os.path.join(work, "cat"), client=client)
                par_times.append(time.perf_counter() - t0)
        formats = dict(zip(*[catalog.to_pandas("files")[c] for c in ("path", "format")]))
        k_files, k_time, k_fail = kerchunk_peer(entries, formats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    seq, par = min(seq_times), min(par_times)
    mix = Counter(formats.values())
    result = {
        "files": n, "mix": dict(mix), "workers": args.workers, "cpus": os.cpu_count(),
        "sequential_s": seq, "metaextract_s": par,
        "sequential_files_per_s": n / seq, "metaextract_files_per_s": n / par, "ratio": seq / par,
        "kerchunk_files": k_files, "kerchunk_files_per_s": k_files / k_time, "kerchunk_failures": k_fail,
        "all_sequential_s": seq_times, "all_metaextract_s": par_times,
    }
    print(f"files: {n}  mix: {dict(sorted(mix.items()))}  cpus: {os.cpu_count()}")
    print(f"sequential loop (1 process)    : {n / seq:8.0f} files/s  ({seq:.2f} s, best of {args.repeat})")
    print(f"metaextract-dask ({args.workers} workers)    : {n / par:8.0f} files/s  ({par:.2f} s, best of {args.repeat})")
    print(f"ratio metaextract / sequential : {seq / par:8.2f}x  (target >= 1.7x)")
    print(f"kerchunk translate, sequential : {k_files / k_time:8.0f} files/s  over {k_files} hdf5/netcdf4/fits "
          f"files ({k_fail} failed)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
