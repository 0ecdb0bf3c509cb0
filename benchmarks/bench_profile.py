"""Profile throughput on a >= 2 GB uncompressed HDF5 dataset in page cache, three ways in one run.

    python benchmarks/bench_profile.py [--gib 2] [--workers 2] [--repeat 2] [--memory-limit 700MiB]
    python benchmarks/bench_profile.py --case f64-chunked|f32-contiguous|f32-gzip|all [--gib G] [--repeat N]

Cases without a valid range (issue #15: the histogram from the one-pass sketch, ``passes == 1``):
``f64-chunked`` (2 GiB float64, chunks (1024, 16384)), ``f32-contiguous`` (2 GiB float32, contiguous) and
``f32-gzip`` (float32, chunks (1024, 16384), gzip level 1; 0.5 GiB by default: compressing random floats is
slow to write). Each is timed against the raw h5py read of the same dataset (for gzip: decompressing it once
with h5py, one process), interleaved, best and median, profile on an already started LocalCluster, a fresh
catalog per run.

(a) metaextract-dask `profile` (one pass: counts, NaN/fill, min, max, mean, std, 64-bin histogram over the
    CF valid_range), on an already started LocalCluster;
(b) naive xarray on the same lazy array: each statistic its own `.compute()` (7 passes);
(c) the raw read: h5py into a numpy buffer, chunk by chunk in one process, no arithmetic.
Prints GB/s of each and the ratios (targets: a/b >= 3, a/c >= 0.7), and the peak RSS of the workers
during (a) against their memory limit. With cupy and a GPU visible, adds a GPU line for (a).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

from metaextract_dask import profile, scan
from metaextract_dask.arrays import open_array
from metaextract_dask.cluster import connect


def write_dataset(path: str, gib: float) -> None:
    import h5py

    n = int(gib * 2**30 / (1024 * 1024 * 4))
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("field", shape=(n, 1024, 1024), dtype="f4", chunks=(8, 1024, 1024))
        d.attrs["valid_range"] = np.array([-50.0, 350.0], dtype="f4")
        d.attrs["units"] = "K"
        base = rng.normal(280, 15, size=(8, 1024, 1024)).astype("f4")
        for i in range(0, n, 8):
            d[i:i + 8] = base + np.float32(i % 17)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def raw_read(path: str) -> float:
    import h5py

    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        d = f["field"]
        buf = np.empty((8, 1024, 1024), dtype="f4")
        for i in range(0, d.shape[0], 8):
            d.read_direct(buf, np.s_[i:i + 8])
    return time.perf_counter() - t0


def naive_xarray(path: str, client) -> float:
    import dask.array as da

    arr = open_array(path, "/field", decode=False)
    lo, hi = arr.attrs["valid_range"]
    t0 = time.perf_counter()
    with client.as_current():
        arr.count().compute()
        arr.isnull().sum().compute()
        arr.min().compute()
        arr.max().compute()
        arr.mean().compute()
        arr.std().compute()
        da.histogram(arr.data, bins=64, range=(float(lo), float(hi)))[0].compute()
    return time.perf_counter() - t0


class PeakRSS:
    """Polls the workers' RSS while running."""

    def __init__(self, client) -> None:
        self.client, self.peak, self._stop = client, 0, threading.Event()

    def __enter__(self) -> "PeakRSS":
        def poll() -> None:
            while not self._stop.is_set():
                rss = self.client.run(lambda: __import__("psutil").Process().memory_info().rss)
                self.peak = max(self.peak, *rss.values())
                time.sleep(0.1)
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


CASES = {  # name: (dtype, chunks or None, compression, default GiB)
    "f64-chunked": ("f8", (1024, 16384), None, 2.0),
    "f32-contiguous": ("f4", None, None, 2.0),
    "f32-gzip": ("f4", (1024, 16384), "gzip", 0.5),
}


def write_case(path: str, case: str, gib: float) -> None:
    """A 2-D dataset "x" of the case's dtype and layout, no valid range: smooth field plus noise (a few
    distinct values per bucket, as measurements are; compressible enough for gzip to matter)."""
    import h5py

    dtype, chunks, compression, _ = CASES[case]
    cols = 16384
    rows = int(gib * 2**30 / (cols * np.dtype(dtype).itemsize)) // 1024 * 1024
    rng = np.random.default_rng(1)
    step = 1024
    base = (np.sin(np.linspace(0, 20, cols))[None, :] * 30 + 280).astype(dtype)
    with h5py.File(path, "w") as f:
        kw = {"chunks": chunks} if chunks else {}
        if compression:
            kw.update(compression=compression, compression_opts=1)
        d = f.create_dataset("x", shape=(rows, cols), dtype=dtype, **kw)
        d.attrs["units"] = "K"
        noise = rng.normal(0, 2, size=(step, cols)).astype(dtype)
        for i in range(0, rows, step):
            block = base + noise + dtype_type(dtype)(i % 97)
            if compression:  # about 3 decimal digits, as stored measurements often are
                block = np.round(block, 2).astype(dtype)
            d[i:i + step] = block


def dtype_type(dtype: str) -> type:
    return np.dtype(dtype).type


def raw_read_case(path: str) -> float:
    """The dataset read (decompressed) once with h5py, chunk rows at a time, into one reused buffer."""
    import h5py

    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        d = f["x"]
        rows = d.chunks[0] if d.chunks else max(1, (128 << 20) // (d.shape[1] * d.dtype.itemsize))
        buf = np.empty((rows, d.shape[1]), dtype=d.dtype)
        for i in range(0, d.shape[0], rows):
            n = min(rows, d.shape[0] - i)
            d.read_direct(buf[:n], np.s_[i:i + n])
    return time.perf_counter() - t0


def run_case(case: str, args: argparse.Namespace) -> None:
    dtype, chunks, compression, default_gib = CASES[case]
    gib = args.gib if args.gib_set else default_gib
    path = os.path.join(os.path.dirname(args.data) or ".", f"profile-{case}-{gib:g}g.h5")
    if not os.path.exists(path):
        write_case(path, case, gib)
    warm(path)
    import h5py

    with h5py.File(path, "r") as f:
        nbytes = f["x"].size * f["x"].dtype.itemsize
        shape = f["x"].shape
    work = tempfile.mkdtemp(prefix="bench-profile-")
    ours, raw = [], []
    try:
        with connect(n_workers=args.workers, memory_limit=args.memory_limit) as client:
            for i in range(args.repeat):  # interleaved; each profile writes a fresh catalog
                raw.append(raw_read_case(path))
                cat = scan([path], os.path.join(work, f"cat{i}"), client=client)
                t0 = time.perf_counter()
                st = profile(cat, client=client, device="cpu")
                ours.append(time.perf_counter() - t0)
                row = st.iloc[0]
                assert row["status"] == "ok", row
                passes = st["passes"].tolist()
            chunks_used = [int(c) for c in st["dask_chunks"].iloc[0]]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gb = nbytes / 1e9
    a, c = min(ours), min(raw)
    med = sorted(r / o for r, o in zip(raw, ours))[len(ours) // 2]
    what = "decompress once with h5py" if compression else "raw h5py read"
    target = 0.9 if compression else 0.7
    print(f"[{case}] {gb:.2f} GB {dtype} {shape}, disk chunks {chunks or 'contiguous'}"
          f"{', ' + compression + ' level 1' if compression else ''}; dask chunks {chunks_used}; "
          f"{args.workers} workers on {os.cpu_count()} cpus; {args.repeat} interleaved runs")
    print(f"  profile          : best {gb / a:6.2f} GB/s ({a:.2f} s), median {gb / sorted(ours)[len(ours) // 2]:.2f} GB/s;"
          f" passes per array {passes}; hist_exact {bool(row['hist_exact'])}, p50 {row['p50']:.4g}")
    print(f"  {what:<17}: best {gb / c:6.2f} GB/s ({c:.2f} s), median {gb / sorted(raw)[len(raw) // 2]:.2f} GB/s")
    print(f"  ratio profile / {what}: best {c / a:.2f}, median of pairs {med:.2f} (target >= {target})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="valid-range", choices=["valid-range", *CASES, "all"],
                    help="valid-range (the float32 dataset with a CF valid_range, three ways), one of the cases "
                         "without a valid range, or all of them")
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data", default="bench-data/profile.h5")
    ap.add_argument("--memory-limit", default="auto", help="worker memory limit, e.g. 700MiB (default: auto)")
    args = ap.parse_args()
    args.gib_set = "--gib" in sys.argv
    os.makedirs(os.path.dirname(args.data) or ".", exist_ok=True)
    if args.case != "valid-range":
        for case in (CASES if args.case == "all" else [args.case]):
            run_case(case, args)
        return 0
    if not os.path.exists(args.data) or os.path.getsize(args.data) < args.gib * 2**30 * 0.99:
        write_dataset(args.data, args.gib)
    nbytes = os.path.getsize(args.data)
    warm(args.data)
    work = tempfile.mkdtemp(prefix="bench-profile-")
    ours, naive, raw, gpu, peaks, gpu_peaks = [], [], [], [], [], []
    naive_failure = ""
    try:
        with connect(n_workers=args.workers, memory_limit=args.memory_limit) as client:
            cat = scan([args.data], os.path.join(work, "cat"), client=client)
            limit = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
            for _ in range(args.repeat):  # interleaved, so machine noise hits every side alike
                raw.append(raw_read(args.data))
                with PeakRSS(client) as rss:
                    t0 = time.perf_counter()
                    st = profile(cat, client=client, device="cpu")
                    ours.append(time.perf_counter() - t0)
                peaks.append(rss.peak)
                assert st["status"].tolist() == ["ok"] and st["passes"].tolist() == [1], st
                try:
                    naive.append(naive_xarray(args.data, client))
                except Exception as exc:  # e.g. KilledWorker: xarray's std keeps too much in memory
                    naive_failure = f"{type(exc).__name__}"
                    client.wait_for_workers(args.workers, timeout=120)
            from metaextract_dask.profiler import gpu_available

            if all(client.run(gpu_available).values()):
                for _ in range(args.repeat):
                    with PeakRSS(client) as rss:
                        t0 = time.perf_counter()
                        sg = profile(cat, client=client, device="gpu")
                        gpu.append(time.perf_counter() - t0)
                    gpu_peaks.append(rss.peak)
                cpu_row, gpu_row = st.iloc[0], sg.iloc[0]  # the same statistics, whichever device
                assert gpu_row["device"] == "gpu" and gpu_row["valid_count"] == cpu_row["valid_count"]
                assert list(gpu_row["hist_counts"]) == list(cpu_row["hist_counts"])
                assert abs(gpu_row["std"] - cpu_row["std"]) <= 1e-9 * cpu_row["std"]
            chunks = [int(c) for c in st["dask_chunks"].iloc[0]]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gb = nbytes / 1e9
    a, c = min(ours), min(raw)
    b = min(naive) if naive else float("nan")
    print(f"dataset: {gb:.2f} GB float32, disk chunks (8, 1024, 1024), dask chunks {chunks}; "
          f"{args.workers} workers on {os.cpu_count()} cpus; best of {args.repeat}")
    print(f"(a) metaextract-dask profile : {gb / a:6.2f} GB/s  ({a:.2f} s)")
    print(f"(b) naive xarray, 7 computes : {gb / b:6.2f} GB/s  ({b:.2f} s)"
          + (f"  [{len(naive)} of {args.repeat} runs; others failed: {naive_failure}]" if naive_failure else ""))
    print(f"(c) raw h5py read, 1 process : {gb / c:6.2f} GB/s  ({c:.2f} s)")
    pairs = sorted(r / o for r, o in zip(raw, ours))
    print(f"ratio a/b: {b / a:5.2f}x (target >= 3)   ratio a/c: {c / a:5.2f} (target >= 0.7); "
          f"a/c per run: median {pairs[len(pairs) // 2]:.2f}, range {pairs[0]:.2f}-{pairs[-1]:.2f}")
    print(f"memory limit per worker: {limit / 2**20:,.0f} MiB")
    print(f"peak worker RSS during (a): {max(peaks) / 2**20:,.0f} MiB of a {limit / 2**20:,.0f} MiB memory limit "
          f"(dataset {nbytes / 2**20:,.0f} MiB)")
    if gpu:
        g = min(gpu)
        print(f"(a) on GPU (cupy)             : {gb / g:6.2f} GB/s  ({g:.2f} s); ratio to (c): {c / g:.2f}, "
              f"to (a) on CPU: {a / g:.2f}; statistics equal to the CPU's")
        print(f"peak worker RSS during (a) on GPU: {max(gpu_peaks) / 2**20:,.0f} MiB (host memory, CUDA context "
              "included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
