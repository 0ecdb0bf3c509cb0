"""Incremental re-scan: an unchanged re-scan vs the first scan of the same tree, in one run.

    python benchmarks/bench_rescan.py [--files 10000] [--workers 2] [--repeat 3] [--data bench-data/many10k]

Both use the same already started 2-worker LocalCluster. The first scan reads every file; the re-scan lists
the tree, compares fingerprints (size, mtime) with the catalog's committed rows and reads nothing. A third
line re-scans after touching 1% of the files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from metaextract_dask import scan
from metaextract_dask.cluster import connect
from metaextract_dask.sample import generate_many


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="bench-data/many10k")
    args = ap.parse_args()

    marker = f"{args.data.rstrip(os.sep)}.complete-{args.files}"  # beside the tree, not scanned with it
    if not os.path.exists(marker):
        shutil.rmtree(args.data, ignore_errors=True)
        generate_many(args.data, n_files=args.files, seed=1)
        open(marker, "w").close()
    work = tempfile.mkdtemp(prefix="bench-rescan-")
    first, unchanged, touched = [], [], []
    try:
        with connect(n_workers=args.workers) as client:
            scan(os.path.join(args.data, "part_000"), os.path.join(work, "warm"), client=client)
            for i in range(args.repeat):
                out = os.path.join(work, f"cat{i}")
                t0 = time.perf_counter()
                cat = scan([args.data], out, client=client)
                first.append(time.perf_counter() - t0)
                n = cat.scan_summary["files"]
                t0 = time.perf_counter()
                again = scan([args.data], out, client=client)
                unchanged.append(time.perf_counter() - t0)
                assert again.scan_summary["read"] == 0, again.scan_summary
                paths = sorted(cat.to_pandas("files")["path"])[i::100]  # 1% of the files
                for p in paths:
                    os.utime(p)
                t0 = time.perf_counter()
                changed = scan([args.data], out, client=client)
                touched.append(time.perf_counter() - t0)
                assert changed.scan_summary["read"] == len(paths), changed.scan_summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
    f, u, t = min(first), min(unchanged), min(touched)
    print(f"files: {n}  workers: {args.workers}  cpus: {os.cpu_count()}  (best of {args.repeat})")
    print(f"first scan              : {f:7.2f} s  ({n / f:8.0f} files/s)")
    print(f"unchanged re-scan       : {u:7.2f} s  ({n / u:8.0f} files/s)")
    print(f"re-scan, 1% touched     : {t:7.2f} s")
    print(f"ratio first / unchanged : {f / u:7.1f}x  (target >= 20x)")
    print(f"ratio first / 1% touched: {f / t:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
