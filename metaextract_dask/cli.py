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


def _number(kind: type, *, lo: float, strict: bool, hi: float | None = None) -> Any:
    """An argparse type: `kind` (int or float) within the bounds; a clear message (exit 2) otherwise."""
    bound = (f"{'>' if strict else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else ""))
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value != value or value < lo or (strict and value == lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {noun} {bound}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


_POSITIVE_INT = _number(int, lo=1, strict=False)
_COUNT = _number(int, lo=0, strict=False)
_SECONDS = _number(float, lo=0, strict=True)


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

    p = sub.add_parser("scan", help="scan files and directories into a Parquet catalog or a database")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-o", "--output", required=True, metavar="CATALOG",
                   help="catalog directory, or SQLAlchemy URL of a database (sqlite:///catalog.db, "
                        "postgresql://user@host:5432/db)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="existing dask scheduler, e.g. tcp://127.0.0.1:8786 (default: $DASK_SCHEDULER_ADDRESS, "
                        "else an embedded LocalCluster)")
    p.add_argument("--workers", type=_POSITIVE_INT, metavar="N", help="worker processes of the embedded cluster")
    p.add_argument("--connect-timeout", type=_SECONDS, metavar="SECONDS",
                   help="seconds to wait for --scheduler to answer (default 10, metaextract.cluster.connect-timeout)")
    p.add_argument("--dashboard-address", metavar="HOST:PORT",
                   help="dashboard of the embedded cluster (default 127.0.0.1:8787; loopback only)")
    p.add_argument("--full", action="store_true", help="read every file again (default: only new and changed files)")
    p.add_argument("--hash", action="store_true",
                   help="store content hashes and re-read files whose content changed even if size and mtime did not")
    p.add_argument("--retry-errors", action="store_true", help="read files again whose committed row is an error")
    p.add_argument("--file-timeout", type=_SECONDS, metavar="SECONDS",
                   help="seconds one file may take before it becomes a 'timeout' row (default 300)")
    p.add_argument("--retries", type=_COUNT, metavar="N", help="retries after transient I/O errors (default 2)")
    p.add_argument("--performance-report", metavar="FILE.html", help="write Dask's performance report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true", help="profile every array's content after the scan")
    _profile_options(p)

    p = sub.add_parser("profile", help="profile the content of every array of a catalog (stats table)")
    p.add_argument("catalog", metavar="CATALOG", help="catalog directory or database URL")
    p.add_argument("--scheduler", metavar="ADDRESS", help="existing dask scheduler (as for scan)")
    p.add_argument("--workers", type=_POSITIVE_INT, metavar="N", help="worker processes of the embedded cluster")
    p.add_argument("--connect-timeout", type=_SECONDS, metavar="SECONDS",
                   help="seconds to wait for --scheduler to answer (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _profile_options(p)

    p = sub.add_parser("info", help="summarise a catalog")
    p.add_argument("catalog", metavar="CATALOG", help="catalog directory or database URL")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("export", help="copy a catalog into a database, or a database's catalog into a directory")
    p.add_argument("catalog", metavar="CATALOG", help="catalog directory or database URL to read")
    p.add_argument("destination", metavar="DESTINATION",
                   help="database URL (rows are upserted) or a new catalog directory")
    p.add_argument("--chunk-rows", type=_POSITIVE_INT, metavar="N",
                   help="rows per transaction / Parquet part (default 20000, metaextract.sql.chunk-rows)")
    return parser


def _profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", choices=["full", "sample"], default="full",
                   help="read every chunk, or a deterministic sample of chunks")
    p.add_argument("--sample-fraction", type=_number(float, lo=0, strict=True, hi=1), default=0.1, metavar="F",
                   help="share of chunks for --strategy sample")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="cupy on the workers' GPUs (gpu), numpy (cpu), or GPU when every worker has one (auto)")
    p.add_argument("--bins", type=int, default=64, metavar="N", help="histogram bins (default 64)")


def _cluster_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings of the command's flags that the cluster reads from the configuration."""
    timeout = getattr(args, "connect_timeout", None)
    return {"metaextract.cluster.connect-timeout": timeout} if timeout is not None else {}


def _run_profile(catalog: Any, args: argparse.Namespace, client: Any = None) -> int:
    import dask.config

    from metaextract_dask.profiler import profile
    from metaextract_dask.sinks import CatalogError

    try:
        with dask.config.set(_cluster_overrides(args)):
            stats = profile(catalog, strategy=args.strategy, sample_fraction=args.sample_fraction,
                            device=args.device, bins=args.bins, client=client,
                            scheduler=getattr(args, "scheduler", None), n_workers=args.workers,
                            progress=not args.no_progress)
    except (RuntimeError, ValueError, CatalogError, PermissionError) as exc:  # ClusterError is a RuntimeError
        return _error(str(exc))
    counts = stats["status"].value_counts().to_dict()
    device = stats["device"].iloc[0] if len(stats) else args.device
    print(f"profiled {len(stats)} arrays on {device}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from metaextract_dask.catalog import open_catalog

    from metaextract_dask.sinks import CatalogError

    try:
        catalog = open_catalog(args.catalog)
    except (OSError, CatalogError, ValueError) as exc:  # not a catalog; not readable; a database refusing
        return _error(str(exc))
    return _run_profile(catalog, args)


def _cmd_export(args: argparse.Namespace) -> int:
    from metaextract_dask.transfer import export
    from metaextract_dask.sinks import CatalogError
    from metaextract_dask.sqldb import safe_url

    try:
        counts = export(args.catalog, args.destination, chunk_rows=args.chunk_rows)
    except (OSError, CatalogError, ValueError) as exc:
        return _error(str(exc))
    print(f"exported to {safe_url(args.destination) if '://' in args.destination else args.destination}: "
          + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return 0


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

    from metaextract_dask.cluster import ClusterError, connect

    overrides = _cluster_overrides(args)
    if args.retries is not None:
        overrides["metaextract.scan.retries"] = args.retries
    with ExitStack() as stack:
        client = None
        try:
            stack.enter_context(dask.config.set(overrides))
            if args.profile:  # scan and profile share one cluster
                client = stack.enter_context(connect(args.scheduler, n_workers=args.workers,
                                                     dashboard_address=args.dashboard_address))
            catalog = scan(args.paths, args.output, client=client, scheduler=args.scheduler,
                           n_workers=args.workers, dashboard_address=args.dashboard_address, full=args.full,
                           hash=args.hash or None, retry_errors=args.retry_errors,
                           file_timeout=args.file_timeout, performance_report=args.performance_report,
                           progress=not args.no_progress, on_client=announce)
        except (FileNotFoundError, CatalogError, ClusterError, ValueError) as exc:
            # CatalogError includes a full disk (CatalogFullError): what is committed stays, the scan resumes
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

    from metaextract_dask.sinks import CatalogError

    try:
        catalog = open_catalog(args.catalog)
        summary = catalog.summary()
        manifest = catalog.manifest
    except (OSError, CatalogError, ValueError) as exc:  # not a catalog; not readable; a database refusing
        return _error(str(exc))
    summary["complete"] = bool(manifest.get("complete"))
    if "batches" in manifest:  # a catalog directory (a database has rows, not batches)
        summary["batches"] = len(manifest["batches"])
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    batches = f", {summary['batches']} batches" if "batches" in summary else ", database"
    print(f"catalog {catalog.path} ({'complete' if summary['complete'] else 'INCOMPLETE'}{batches})")
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
    import yaml

    from metaextract_dask import config

    for path in args.config:
        try:
            config.load_yaml(path)
        except OSError as exc:
            return _error(f"cannot read config {path}: {exc.strerror or exc}")
        except yaml.YAMLError as exc:
            return _error(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}")
        except ValueError as exc:  # unknown keys, values out of range
            return _error(f"config {exc}")
    try:  # environment variables (DASK_METAEXTRACT__...) and dask's own config files too
        config.validate()
    except ValueError as exc:
        return _error(str(exc))
    handlers = {"sample-data": _cmd_sample_data, "scan": _cmd_scan, "profile": _cmd_profile, "info": _cmd_info,
                "export": _cmd_export}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
