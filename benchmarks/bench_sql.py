"""Scan throughput into a database vs into Parquet: the same tree scanned into a Parquet catalog, an SQLite file
and a PostgreSQL database, in one run, interleaved, every timed run writing a fresh output.

All three use the same already started LocalCluster; the PostgreSQL server is a private one started here
(:class:`metaextract_dask.pgtest.PostgresServer`, durability settings as shipped: fsync and synchronous
commit on), a fresh database per run. Reported: best and median files/s per sink and the ratios to Parquet
(best, and the median of the per-round pairs). Target: >= 0.8x Parquet for both databases.

    python benchmarks/bench_sql.py [--files 6000] [--workers 2] [--repeat 3] [--data bench-data/many]
    python benchmarks/bench_sql.py --sink-cpu [--data bench-data/many]    # what each sink costs the client

``--sink-cpu`` times only the writing: the client CPU (``time.process_time``) of ``write_batch`` + ``finish``
for the first 1,200 files of the tree, extracted once, in batches of 400, into each sink (best of 3).
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

from metaextract_dask import scan
from metaextract_dask.cluster import connect
from metaextract_dask.discover import discover
from metaextract_dask.pgtest import PostgresServer
from metaextract_dask.sample import generate_many_cached


def sink_cpu(data: str, n_files: int = 1200, batch: int = 400, repeat: int = 3) -> None:
    """Client CPU per file of writing the same extracted batches into each sink."""
    from metaextract_dask import sqldb
    from metaextract_dask.extract import extract_batch
    from metaextract_dask.sinks import open_sink

    entries = discover([data])[:n_files]
    batches = [extract_batch(entries[i:i + batch]) for i in range(0, len(entries), batch)]
    work = tempfile.mkdtemp(prefix="bench-sql-sink-")
    cpu: dict[str, list[float]] = {"parquet": [], "sqlite": [], "postgresql": []}
    try:
        with PostgresServer(fsync=True) as pg:
            for i in range(repeat):
                for name in cpu:
                    out = (os.path.join(work, f"p{i}") if name == "parquet" else
                           f"sqlite:///{os.path.join(work, f's{i}.db')}" if name == "sqlite" else
                           pg.create_database(f"sink{i}"))
                    with open_sink(out) as sink:
                        t = time.process_time()
                        for tables in batches:
                            sink.write_batch(tables)
                        sink.finish(set())
                        cpu[name].append(time.process_time() - t)
            sqldb.dispose_engines()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = {k: sum(b[k].num_rows for b in batches) for k in batches[0]}
    print(f"{len(entries)} files in batches of {batch}: {rows}")
    for name, v in cpu.items():
        print(f"{name:10s}: {min(v) * 1e3 / len(entries):.3f} ms client CPU per file (best of {repeat})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each sink (best and median reported)")
    ap.add_argument("--data", default="bench-data/many")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--sink-cpu", action="store_true", help="time only the sinks' writing (client CPU)")
    args = ap.parse_args()

    t = time.perf_counter()
    if generate_many_cached(args.data, args.files, seed=0):
        print(f"generated {args.files} files in {time.perf_counter() - t:.1f} s")
    if args.sink_cpu:
        sink_cpu(args.data)
        return 0
    n = len(discover([args.data]))
    for root, _dirs, files in os.walk(args.data):  # warm the page cache
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                f.read()
    work = tempfile.mkdtemp(prefix="bench-sql-")
    times: dict[str, list[float]] = {"parquet": [], "sqlite": [], "postgresql": []}
    try:
        with PostgresServer(fsync=True) as pg, connect(n_workers=args.workers) as client:
            outputs = {
                "parquet": lambda i: os.path.join(work, f"cat-{i}"),
                "sqlite": lambda i: f"sqlite:///{os.path.join(work, f'cat-{i}.db')}",
                "postgresql": lambda i: pg.create_database(f"cat{i}"),
            }
            for name, out in outputs.items():  # warm-ups: imports, workers load the readers, first connections
                scan(discover([args.data])[0].path, out("warm"), client=client)
            for i in range(args.repeat):  # interleaved, so machine noise hits every sink alike; fresh outputs
                for name, out in outputs.items():
                    target = out(i)
                    t0 = time.perf_counter()
                    catalog = scan([args.data], target, client=client)
                    times[name].append(time.perf_counter() - t0)
                    assert catalog.scan_summary["read"] == n == len(catalog.to_pandas("files"))  # the work was done
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"files: {n}  cpus: {os.cpu_count()}  workers: {args.workers}  runs: {args.repeat}")
    for key in times:
        print(f"scan into {key:10s}: {n / best[key]:7.0f} files/s best ({best[key]:.2f} s), "
              f"{n / median[key]:7.0f} median")
    for key in ("sqlite", "postgresql"):
        pairs = sorted(p / s for p, s in zip(times["parquet"], times[key]))
        print(f"{key:10s} / parquet  : {best['parquet'] / best[key]:5.2f}x best, median pair "
              f"{statistics.median(pairs):.2f}x (range {pairs[0]:.2f}-{pairs[-1]:.2f})   target >= 0.8x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"files": n, "times": times}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
