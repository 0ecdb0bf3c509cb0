"""Profile pipeline: catalog -> stats (content statistics of every array), on a cluster.

    python -m pipelines.profile --config conf/profile.yaml

Profiles every numeric array of ``catalog`` into its ``stats`` table, prints the dashboard link, progress and
the profile summary (arrays by status and format, elements read, errors with examples).
"""

from __future__ import annotations

import sys
from typing import Any

from pipelines._job import Key, cluster_client, main_for

__all__ = ["KEYS", "run", "main"]

KEYS: dict[str, Key] = {
    "catalog": Key(str, required=True, path="in", help="the catalog directory (written by a scan)"),
    "strategy": Key(str, default="full", choices=("full", "sample"), help="every chunk, or a sample of chunks"),
    "sample-fraction": Key(float, default=0.1, help="share of chunks for strategy: sample"),
    "device": Key(str, default="auto", choices=("auto", "cpu", "gpu"), help="numpy, cupy, or GPU where all have one"),
    "bins": Key(int, default=64, help="histogram bins"),
    "performance-report": Key((str, type(None)), path="out", help="Dask performance report of the profile (HTML)"),
}


def run(job: dict[str, Any]) -> Any:
    """Profile as the job says; returns the :class:`~metaextract_dask.profiler.ProfileResult`."""
    import metaextract_dask as mx

    catalog = mx.open_catalog(job["catalog"])  # before the cluster: a wrong path costs no startup
    with cluster_client(job) as client:
        stats = mx.profile(catalog, client=client, strategy=job["strategy"],
                           sample_fraction=job["sample-fraction"], device=job["device"], bins=job["bins"],
                           progress=True, performance_report=job["performance-report"])
    s = stats.summary()
    print(f"profiled {s['arrays']} arrays ({', '.join(f'{k} {v}' for k, v in sorted(s['status'].items()))}) "
          f"on {s['device']}, {s['elements']:,} elements in {s['seconds']:.1f} s")
    for fmt, v in s["by_format"].items():
        print(f"  {fmt:<8} {v['arrays']:>6} arrays {v['errors']:>4} errors {v['elements']:>14,} elements")
    for etype, paths in s["error_examples"].items():
        print(f"  {etype}: {s['error_types'][etype]} (e.g. {paths[0]})")
    return stats


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return main_for("profile", __doc__ or "", KEYS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
