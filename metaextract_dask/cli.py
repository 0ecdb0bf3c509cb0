"""The metaextract-dask command line.

Adding a subcommand: one ``_subcommand(sub, NAME, help=..., description=..., example=...)`` block in
:func:`build_parser` (its arguments below it) and one ``NAME: _cmd_name`` entry in ``main``'s handlers; the
handler takes the parsed arguments and returns the exit status (``_error(message)`` for a one-line error,
status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from collections.abc import Sequence
from typing import Any

from metaextract_dask.deid import cli as deid_cli

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


DESCRIPTION = """\
Metadata catalogs of HDF5, NetCDF, Zarr, FITS and DICOM collections, extracted in parallel on dask.

A scan writes a catalog directory of Parquet tables (files, arrays, hdus, dicom, stats) that pandas, dask
and duckdb read directly; profile adds content statistics, report writes an HTML report."""

EPILOG = """\
examples:
  metaextract-dask sample-data demo-data
  metaextract-dask scan demo-data -o demo-catalog --profile
  metaextract-dask report demo-catalog -o report.html
  metaextract-dask --config conf/scan.yaml scan /data -o catalog

'metaextract-dask COMMAND --help' describes each command."""


def _subcommand(sub: Any, name: str, *, help: str, description: str, example: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help shows `description` and `example` as written (no re-wrapping)."""
    return sub.add_parser(name, help=help, description=description, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``metaextract-dask``."""
    from metaextract_dask import __version__

    parser = argparse.ArgumentParser(prog="metaextract-dask", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="merge a YAML config file (metaextract namespace) before running; repeatable")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _subcommand(sub, "sample-data", help="write a deterministic sample tree of all supported formats",
                    description="Write sample files of every supported format (and some broken ones) with the\n"
                                "format libraries, plus manifest.json describing what was written (scans leave\n"
                                "the manifest out: the directory's .metaextract-ignore names it).",
                    example="metaextract-dask sample-data demo-data --preset small")
    p.add_argument("directory")
    p.add_argument("--preset", choices=["small", "medium"], default="small",
                   help="small: a few hundred kB; medium: plus a ~400 MB HDF5 cube and a ~300 MB Zarr array")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")

    p = _subcommand(sub, "scan", help="scan files and directories into a Parquet catalog or a database",
                    description="Scan files, directories and Zarr stores into a catalog directory (or a database URL,\n"
                                "e.g. sqlite:///catalog.db), incrementally:\n"
                                "running it again reads only new and changed files and drops vanished ones.\n"
                                "Prints the dashboard link, progress and a summary; unreadable files become\n"
                                "error rows (exit status 0).",
                    example="metaextract-dask scan /data/run42 -o catalog --exclude '*.tmp' --profile")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="files, directories, Zarr stores, or fsspec URLs (https://host/data/, s3://bucket/prefix/, "
                        "'https://host/files/*.nc'); gzip/bz2/xz/zstd files are read through decompression")
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
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="scan only files matching this pattern (a name, or a path relative to the scanned "
                        "directory if it has a '/'); repeatable (default metaextract.scan.include)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out files and directories matching this pattern; repeatable "
                        "(default metaextract.scan.exclude)")
    p.add_argument("--full", action="store_true", help="read every file again (default: only new and changed files)")
    p.add_argument("--hash", action="store_true",
                   help="store content hashes and re-read files whose content changed even if size and mtime did not")
    p.add_argument("--retry-errors", action="store_true", help="read files again whose committed row is an error")
    p.add_argument("--file-timeout", type=_SECONDS, metavar="SECONDS",
                   help="seconds one file may take before it becomes a 'timeout' row (default 300)")
    p.add_argument("--retries", type=_COUNT, metavar="N", help="retries after transient I/O errors (default 2)")
    p.add_argument("--performance-report", metavar="FILE.html", help="write Dask's performance report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (or log lines, when not a terminal)")
    p.add_argument("--profile", action="store_true", help="profile every array's content after the scan")
    _profile_options(p)
    deid_cli.add_scan_options(p)

    p = _subcommand(sub, "profile", help="profile the content of every array of a catalog (stats table)",
                    description="Read every numeric array of a catalog once and store its statistics (counts,\n"
                                "min/max/mean/std, histogram) in the catalog's stats table. A profile that is\n"
                                "interrupted resumes where it stopped.",
                    example="metaextract-dask profile catalog --strategy sample --sample-fraction 0.05")
    p.add_argument("catalog", metavar="CATALOG", help="catalog directory or database URL")
    p.add_argument("--scheduler", metavar="ADDRESS", help="existing dask scheduler (as for scan)")
    p.add_argument("--workers", type=_POSITIVE_INT, metavar="N", help="worker processes of the embedded cluster")
    p.add_argument("--connect-timeout", type=_SECONDS, metavar="SECONDS",
                   help="seconds to wait for --scheduler to answer (default 10)")
    p.add_argument("--performance-report", metavar="FILE.html", help="write Dask's performance report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (or log lines, when not a terminal)")
    _profile_options(p)

    p = _subcommand(sub, "info", help="summarise a catalog",
                    description="Print what a catalog holds: files by format, bytes, arrays, errors by type.",
                    example="metaextract-dask info catalog --json")
    p.add_argument("catalog", metavar="CATALOG", help="catalog directory or database URL")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = _subcommand(sub, "report", help="write a self-contained HTML report of a catalog",
                    description="Write one HTML file (bokeh figures, scripts inlined: it opens without a network)\n"
                                "with files and bytes by format and directory, sizes, errors with examples,\n"
                                "per-array histograms and quantiles (profiled catalogs), DICOM studies and\n"
                                "series, and FITS sky footprints.",
                    example="metaextract-dask report catalog -o report.html")
    p.add_argument("catalog", metavar="CATALOG_DIR")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html")
    p.add_argument("--title", help="page title (default: the catalog's path)")

    p = _subcommand(sub, "export", help="copy a catalog into a database, or a database's catalog into a directory",
                    description="Copy every table of a catalog, chunk by chunk: a directory into a database\n"
                                "(rows are upserted by key) or a database into a new catalog directory.",
                    example="metaextract-dask export catalog sqlite:///catalog.db")
    p.add_argument("catalog", metavar="CATALOG", help="catalog directory or database URL to read")
    p.add_argument("destination", metavar="DESTINATION",
                   help="database URL (rows are upserted) or a new catalog directory")
    p.add_argument("--chunk-rows", type=_POSITIVE_INT, metavar="N",
                   help="rows per transaction / Parquet part (default 20000, metaextract.sql.chunk-rows)")
    deid_cli.add_parsers(sub)
    p = _subcommand(sub, "drift", help="where files that should share structure differ (schema drift)",
                    description="List, for files that should share structure (grouped by --group-by), where "
                                "variables, dtype, shape, chunks,\nunits or attributes differ from the group's "
                                "majority, and predict which combine would fail and why.",
                    example="metaextract-dask drift catalog/ --group-by experiment_id --concat-dim time")
    p.add_argument("catalog", metavar="CATALOG_DIR")
    p.add_argument("--group-by", default="format", metavar="COLS",
                   help="comma-separated files columns, 'dir' or file attribute names (default: format)")
    p.add_argument("--concat-dim", default=None, metavar="DIM",
                   help="dimension files would be combined along (default: the one whose length varies)")
    p.add_argument("--group", default="/", help="group of hierarchical files to compare (default /)")
    p.add_argument("--no-attrs", action="store_true", help="do not compare variable attributes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", choices=["full", "sample"], default="full",
                   help="read every chunk, or a deterministic sample of chunks")
    p.add_argument("--sample-fraction", type=_number(float, lo=0, strict=True, hi=1), default=0.1, metavar="F",
                   help="share of chunks for --strategy sample")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="cupy on the workers' GPUs (gpu), numpy (cpu), or GPU when every worker has one (auto)")
    p.add_argument("--bins", type=int, default=64, metavar="N", help="histogram bins (default 64)")
    p.add_argument("--exact-histogram", action="store_true",
                   help="bin float data without a valid range exactly, in a second pass over the data (default: "
                        "from the one-pass sketch, hist_exact false; setting metaextract.profile.histogram)")


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
                            histogram="exact" if getattr(args, "exact_histogram", False) else None,
                            scheduler=getattr(args, "scheduler", None), n_workers=args.workers,
                            progress=not args.no_progress, on_client=None if client is not None else _announce,
                            performance_report=args.performance_report if client is None else None)
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


def _announce(client: Any) -> None:
    """Print the dashboard link of the client a command runs on."""
    print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)


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

    announce = _announce
    import dask.config

    from metaextract_dask.cluster import ClusterError, connect

    overrides = _cluster_overrides(args)
    if args.retries is not None:
        overrides["metaextract.scan.retries"] = args.retries
    with ExitStack() as stack:
        client = None
        try:
            stack.enter_context(dask.config.set(overrides))
            deidentify = deid_cli.scan_profile(args)
            if args.profile:  # scan and profile share one cluster
                client = stack.enter_context(connect(args.scheduler, n_workers=args.workers,
                                                     dashboard_address=args.dashboard_address))
            catalog = scan(args.paths, args.output, client=client, scheduler=args.scheduler,
                           n_workers=args.workers, dashboard_address=args.dashboard_address, full=args.full,
                           hash=args.hash or None, retry_errors=args.retry_errors,
                           file_timeout=args.file_timeout, performance_report=args.performance_report,
                           progress=not args.no_progress, on_client=announce, include=args.include,
                           exclude=args.exclude, deidentify=deidentify)
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


def _cmd_report(args: argparse.Namespace) -> int:
    from metaextract_dask.catalog import open_catalog

    try:
        catalog = open_catalog(args.catalog)
        out = catalog.report(args.output, title=args.title)
    except OSError as exc:  # not a catalog, not readable, the report cannot be written
        return _error(str(exc))
    print(f"report: {os.path.abspath(out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)  # --help and usage errors end here, before any heavy import
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
                "report": _cmd_report, "export": _cmd_export, **deid_cli.COMMANDS}
    if args.command == "drift":
        from metaextract_dask.drift import run_drift

        return run_drift(args)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
