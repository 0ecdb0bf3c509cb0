"""Catalog pipeline: discover -> scan -> sink (and optionally profile), on one cluster.

    python -m pipelines.catalog --config conf/catalog.yaml [--set output=other-catalog]

Scans ``inputs`` into the catalog ``output`` (incrementally: a second run reads only new and changed files),
prints the dashboard link, progress and the scan summary; with ``profile: true`` profiles every array on the
same cluster and prints the profile summary.
"""

from __future__ import annotations

import sys
from typing import Any

from pipelines._job import Key, cluster_client, main_for

__all__ = ["KEYS", "run", "main"]

KEYS: dict[str, Key] = {
    "inputs": Key(list, required=True, path="in", help="files and directories to scan"),
    "output": Key(str, required=True, path="out", help="the catalog directory"),
    "include": Key(list, default=[], help="glob patterns of files to scan (default: all)"),
    "exclude": Key(list, default=[], help="glob patterns of files and directories to leave out"),
    "full": Key(bool, default=False, help="read every file again"),
    "hash": Key(bool, default=False, help="content hashes (re-read files whose content changed)"),
    "profile": Key(bool, default=False, help="profile every array after the scan"),
    "device": Key(str, default="auto", choices=("auto", "cpu", "gpu"), help="profile device"),
    "performance-report": Key((str, type(None)), path="out", help="Dask performance report of the scan (HTML)"),
}


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Scan (and profile) as the job says; returns ``{"catalog", "summary", "stats"}``."""
    import metaextract_dask as mx

    with cluster_client(job) as client:
        catalog = mx.scan(job["inputs"], job["output"], client=client, include=job["include"],
                          exclude=job["exclude"], full=job["full"], hash=job["hash"], progress=True,
                          performance_report=job["performance-report"])
        summary = catalog.scan_summary
        print(summary.format())
        print(f"catalog: {catalog.path}")
        stats = None
        if job["profile"]:
            stats = mx.profile(catalog, client=client, device=job["device"], progress=True)
            s = stats.summary()
            print(f"profiled {s['arrays']} arrays on {s['device']}: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items())))
    return {"catalog": catalog, "summary": summary, "stats": stats}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return main_for("catalog", __doc__ or "", KEYS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
