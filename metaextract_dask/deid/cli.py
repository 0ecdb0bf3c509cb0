"""The de-identification subcommands of ``metaextract-dask``: ``keygen``, ``deid`` and ``deid-verify``, and
the ``scan --deidentify`` options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["COMMANDS", "add_parsers", "add_scan_options", "scan_profile"]

_OPTION_HELP = ("profile option (repeatable): retain-safe-private, retain-uids, retain-device-identity, "
                "retain-institution-identity, retain-patient-characteristics, retain-long-full-dates, "
                "retain-long-modified-dates, clean-descriptors, clean-structured-content, clean-graphics")


def _error(message: str) -> int:
    print(f"metaextract-dask: error: {message}", file=sys.stderr)
    return 2


def add_scan_options(p: argparse.ArgumentParser) -> None:
    """``scan --deidentify --key-file K [--deid-option O ...]``."""
    p.add_argument("--deidentify", action="store_true",
                   help="de-identify DICOM headers (PS3.15 Basic Profile, keyed) before they reach the catalog")
    p.add_argument("--key-file", metavar="KEYFILE", help="de-identification key (metaextract-dask keygen)")
    p.add_argument("--deid-option", action="append", default=[], metavar="OPTION", help=_OPTION_HELP)


def scan_profile(args: argparse.Namespace) -> Any:
    """The profile asked for by ``scan``'s options (None without --deidentify).

    Raises
    ------
    ValueError
        --deidentify without --key-file, a bad key file or option.
    """
    if not getattr(args, "deidentify", False):
        if getattr(args, "key_file", None) or getattr(args, "deid_option", None):
            raise ValueError("--key-file and --deid-option need --deidentify")
        return None
    if not args.key_file:
        raise ValueError("--deidentify needs --key-file KEYFILE (create one with 'metaextract-dask keygen')")
    from metaextract_dask import config
    from metaextract_dask.deid import Profile, load_key

    return Profile(load_key(args.key_file), args.deid_option, config.get("deid.safe-private", None) or ())


def add_parsers(sub: Any) -> None:
    """Add ``keygen``, ``deid`` and ``deid-verify`` to the subcommands `sub`."""
    raw = argparse.RawDescriptionHelpFormatter  # description and example shown as written (cli._subcommand)
    p = sub.add_parser("keygen", help="write a new random de-identification key file (mode 0600)",
                       description="Write a new random 256-bit key for 'deid' and 'scan --deidentify'. Keep it\n"
                                   "secret and keep it: the same key gives the same pseudonyms in every run.",
                       epilog="example:\n  metaextract-dask keygen ~/.config/metaextract/deid.key", formatter_class=raw)
    p.add_argument("keyfile", metavar="KEYFILE")

    p = sub.add_parser("deid", help="write de-identified copies of DICOM files (PS3.15 Basic Profile)",
                       description="De-identify DICOM files into OUT_DIR, mirroring the input tree, per DICOM\n"
                                   "PS3.15 Table E.1-1 with the given options; UIDs and identifiers keyed on\n"
                                   "KEYFILE. Files likely to carry burned-in text are reported, not copied.",
                       epilog="example:\n  metaextract-dask deid /data/dicom -o deid-out --key-file deid.key "
                              "--option retain-long-full-dates", formatter_class=raw)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    p.add_argument("--key-file", required=True, metavar="KEYFILE")
    p.add_argument("--option", action="append", default=[], metavar="OPTION", help=_OPTION_HELP)
    p.add_argument("--safe-private", action="append", default=[], metavar="'CREATOR (gggg,xxee)'",
                   help="another private attribute kept by retain-safe-private (repeatable)")
    p.add_argument("--map-file", metavar="MAP.parquet",
                   help="write the original -> pseudonym table here (never inside OUT_DIR)")
    p.add_argument("--catalog", metavar="CATALOG_DIR", help="scan the de-identified copies into this catalog")
    p.add_argument("--copy-flagged", action="store_true",
                   help="copy files flagged for likely burned-in text too (still flagged in the report)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="existing dask scheduler (as for scan)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the embedded cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("deid-verify", help="search de-identified outputs for values of the originals (exit 1 "
                                           "on any leak)",
                       description="Collect every value of the originals that the profile removes or replaces\n"
                                   "(sequences and private tags included) and search every byte of OUT_DIR\n"
                                   "(and of --catalog catalogs, decoded) for it. Exit status 1 on any hit.",
                       epilog="example:\n  metaextract-dask deid-verify deid-out --original /data/dicom",
                       formatter_class=raw)
    p.add_argument("output", metavar="OUT_DIR")
    p.add_argument("--original", nargs="+", required=True, metavar="PATH",
                   help="the inputs given to deid (same paths)")
    p.add_argument("--catalog", action="append", default=[], metavar="CATALOG_DIR",
                   help="also check this catalog (e.g. written by scan --deidentify); repeatable")
    p.add_argument("--option", action="append", default=None, metavar="OPTION",
                   help="profile options, when OUT_DIR is not a deid output (catalog-only check)")
    p.add_argument("--min-length", type=int, default=4, metavar="N", help="shortest value searched (default 4)")


def _cmd_keygen(args: argparse.Namespace) -> int:
    from metaextract_dask.deid import keygen

    try:
        path = keygen(args.keyfile)
    except FileExistsError:
        return _error(f"{args.keyfile} exists: a key is never overwritten (every pseudonym depends on it)")
    except OSError as exc:
        return _error(f"cannot write {args.keyfile}: {exc.strerror or exc}")
    print(f"wrote a new key to {path} (mode 0600); keep it secret and back it up")
    return 0


def _cmd_deid(args: argparse.Namespace) -> int:
    from metaextract_dask.cluster import ClusterError
    from metaextract_dask.deid import DeidKeyError
    from metaextract_dask.deid.run import deidentify

    def announce(client: Any) -> None:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)

    try:
        summary = deidentify(args.paths, args.output, key=args.key_file, options=args.option,
                             safe_private=args.safe_private, map_file=args.map_file, catalog=args.catalog,
                             copy_flagged=args.copy_flagged, scheduler=args.scheduler, n_workers=args.workers,
                             progress=not args.no_progress, on_client=announce)
    except (DeidKeyError, FileNotFoundError, ValueError, ClusterError) as exc:
        return _error(str(exc))
    print(summary.format())
    return 0


def _cmd_deid_verify(args: argparse.Namespace) -> int:
    from metaextract_dask.deid.verify import verify

    try:
        report = verify(args.output, args.original, catalogs=args.catalog, options=args.option,
                        min_length=args.min_length)
    except (FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    print(report.format())
    return 0 if report.ok else 1


#: Subcommand -> handler.
COMMANDS = {"keygen": _cmd_keygen, "deid": _cmd_deid, "deid-verify": _cmd_deid_verify}
