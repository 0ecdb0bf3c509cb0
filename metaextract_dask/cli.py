"""The ``metaextract-dask`` command."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``metaextract-dask``."""
    parser = argparse.ArgumentParser(prog="metaextract-dask", description=__doc__)
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="merge a YAML config file (metaextract namespace) before running; repeatable")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-data", help="write a deterministic sample tree of all supported formats")
    p.add_argument("directory")
    p.add_argument("--preset", choices=["small", "medium"], default="small")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("scan", help="scan files and directories into a Parquet catalog")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-o", "--output", required=True, metavar="CATALOG_DIR")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="existing dask scheduler, e.g. tcp://127.0.0.1:8786 (default: $DASK_SCHEDULER_ADDRESS, "
                        "else an embedded LocalCluster)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the embedded cluster")
    p.add_argument("--dashboard-address", metavar="HOST:PORT",
                   help="dashboard of the embedded cluster (default 127.0.0.1:8787; loopback only)")
    p.add_argument("--full", action="store_true", help="read every file again (default: only new and changed files)")
    p.add_argument("--hash", action="store_true",
                   help="store content hashes and re-read files whose content changed even if size and mtime did not")
    p.add_argument("--retry-errors", action="store_true", help="read files again whose committed row is an error")
    p.add_argument("--file-timeout", type=float, metavar="SECONDS",
                   help="seconds one file may take before it becomes a 'timeout' row (default 300)")
    p.add_argument("--retries", type=int, metavar="N", help="retries after transient I/O errors (default 2)")
    p.add_argument("--performance-report", metavar="FILE.html", help="write Dask's performance report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true", help="profile every array's content after the scan")
    _profile_options(p)

    p = sub.add_parser("profile", help="profile the content of every array of a catalog (stats table)")
    p.add_argument("catalog", metavar="CATALOG_DIR")
    p.add_argument("--scheduler", metavar="ADDRESS", help="existing dask scheduler (as for scan)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the embedded cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _profile_options(p)

    p = sub.add_parser("info", help="summarise a catalog")
    p.add_argument("catalog", metavar="CATALOG_DIR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", choices=["full", "sample"], default="full",
                   help="read every chunk, or a deterministic sample of chunks")
    p.add_argument("--sample-fraction", type=float, default=0.1, metavar="F", help="share of chunks for --strategy sample")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="cupy on the workers' GPUs (gpu), numpy (cpu), or GPU when every worker has one (auto)")
    p.add_argument("--bins", type=int, default=64, metavar="N", help="histogram bins (default 64)")


def _run_profile(catalog: Any, args: argparse.Namespace, client: Any = None) -> int:
    from metaextract_dask.profiler import profile

    try:
        stats = profile(catalog, strategy=args.strategy, sample_fraction=args.sample_fraction, device=args.device,
                        bins=args.bins, client=client, scheduler=getattr(args, "scheduler", None), n_workers=args.workers,
                        progress=not args.no_progress)
    except (RuntimeError, ValueError) as exc:
        return _error(str(exc))
    counts = stats["status"].value_counts().to_dict()
    device = stats["device"].iloc[0] if len(stats) else args.device
    print(f"profiled {len(stats)} arrays on {device}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from metaextract_dask.catalog import open_catalog

    try:
        catalog = open_catalog(args.catalog)
    except FileNotFoundError as exc:
        return _error(str(exc))
    return _run_profile(catalog, args)


def _error(message: str) -> int:
    print(f"metaextract-dask: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from metaextract_dask.sample import generate

    manifest = generate(args.directory, preset=args.preset, seed=args.seed)
    counts: dict[str, int] = {}
    for entry in manifest["files"]:
        counts[entry["format"]] = counts.get(entry["format"], 0) + 1
    print(f"wrote {len(manifest['files'])} sample files to {args.directory}: "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from metaextract_dask.scan import ScanSummary, scan
    from metaextract_dask.sinks import CatalogError

    def announce(client: Any) -> None:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)

    import dask.config

    overrides = {"metaextract.scan.retries": args.retries} if args.retries is not None else {}
    with ExitStack() as stack:
        client = None
        if args.profile:  # scan and profile share one cluster
            from metaextract_dask.cluster import connect

            client = stack.enter_context(connect(args.scheduler, n_workers=args.workers,
                                                 dashboard_address=args.dashboard_address))
        try:
            with dask.config.set(overrides):
                catalog = scan(args.paths, args.output, client=client, scheduler=args.scheduler,
                               n_workers=args.workers, dashboard_address=args.dashboard_address, full=args.full,
                               hash=args.hash or None, retry_errors=args.retry_errors,
                               file_timeout=args.file_timeout, performance_report=args.performance_report,
                               progress=not args.no_progress, on_client=announce)
        except (FileNotFoundError, CatalogError) as exc:
            return _error(str(exc))
        print(ScanSummary(catalog.scan_summary or {}).format())
        print(f"catalog: {catalog.path}")
        if args.profile:
            if client is not None and catalog.scan_summary and not catalog.scan_summary.get("read"):
                announce(client)  # scan had nothing to read and never showed the link
            return _run_profile(catalog, args, client)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from metaextract_dask.catalog import open_catalog

    try:
        catalog = open_catalog(args.catalog)
    except FileNotFoundError as exc:
        return _error(str(exc))
    summary = catalog.summary()
    manifest = catalog.manifest
    summary["complete"] = bool(manifest.get("complete"))
    summary["batches"] = len(manifest.get("batches", []))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"catalog {catalog.path} ({'complete' if summary['complete'] else 'INCOMPLETE'}, "
          f"{summary['batches']} batches)")
    print(f"  {summary['files']} files, {summary['bytes'] / 1e6:,.1f} MB, {summary['arrays']} arrays")
    for fmt, n in summary["by_format"].items():
        print(f"  {fmt:<8} {n:>8}")
    print(f"  errors   {summary['errors']:>8}")
    for etype, n in summary["error_types"].items():
        print(f"    {etype}: {n}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    from metaextract_dask import config

    for path in args.config:
        try:
            config.load_yaml(path)
        except OSError as exc:
            return _error(f"cannot read config {path}: {exc.strerror or exc}")
    handlers = {"sample-data": _cmd_sample_data, "scan": _cmd_scan, "profile": _cmd_profile, "info": _cmd_info}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
