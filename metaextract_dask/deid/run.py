"""De-identified copies of a DICOM collection, as a Dask graph of batches.

Each task reads its files one at a time (no collection in memory), applies the profile and writes the copy to
a temporary name inside the output's state folder, then renames it into place: a copy in OUT_DIR is always
complete. Each finished batch appends a report part; a re-run (after a crash or SIGKILL) skips files already
copied, flagged or skipped and retries the errors. The key travels to the workers inside the task (it pickles,
but never prints); the mapping table is written only where ``map_file`` says, never inside OUT_DIR.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metaextract_dask import config
from metaextract_dask.deid.keys import SecretKey, load_key
from metaextract_dask.deid.profile import Profile, burned_in_reasons, table_source
from metaextract_dask.discover import Batch, FileEntry, discover, plan_batches
from metaextract_dask.progress import Progress

__all__ = ["REPORT", "STATE_DIR", "DeidSummary", "deid_batch", "deidentify", "mirror_paths", "read_report"]

#: Folder inside OUT_DIR holding the run's settings, report parts and temporary files.
STATE_DIR = ".metaextract-deid"
#: The report table: one row per input file.
REPORT = pa.schema([
    ("rel_path", pa.string()),       # path of the copy, relative to OUT_DIR (the input's relative path)
    ("status", pa.string()),         # copied | exists | flagged | not_dicom | error
    ("reason", pa.string()),         # why flagged / skipped / failed
    ("modality", pa.string()),
    ("sop_class_uid", pa.string()),
    ("study_uid", pa.string()),      # the de-identified UIDs (structure without identity)
    ("series_uid", pa.string()),
    ("bytes_in", pa.int64()),
    ("bytes_out", pa.int64()),
])
_MAP = pa.schema([("kind", pa.string()), ("original", pa.string()), ("pseudonym", pa.string())])
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DONE = frozenset({"copied", "exists", "flagged", "not_dicom"})


class DeidSummary(dict):
    """Counts of a ``deid`` run (a dict, with a readable :meth:`format`)."""

    def format(self) -> str:
        """Human-readable summary."""
        s = self
        lines = [f"de-identified {s['copied']:,} of {s['files']:,} files into {s['output']} "
                 f"({s['files_per_second']:.0f} files/s)",
                 f"  already done: {s['resumed']:,}  flagged (burned-in text, not copied): {s['flagged']:,}  "
                 f"not DICOM: {s['not_dicom']:,}  errors: {s['errors']:,}",
                 f"  profile: {', '.join(s['profile'])}; key fingerprint {s['key_fingerprint']}"]
        if s.get("map_file"):
            lines.append(f"  mapping table: {s['map_file']}")
        return "\n".join(lines)


def mirror_paths(paths: Sequence[str | os.PathLike[str]], entries: Iterable[FileEntry]) -> list[tuple[str, str]]:
    """(source, relative output path) per entry: a single directory input is mirrored as it is; several
    inputs keep their paths below the inputs' common parent."""
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    if len(roots) == 1 and os.path.isdir(roots[0]):
        base = roots[0]
    else:
        base = os.path.commonpath([os.path.dirname(r.rstrip(os.sep)) or os.sep for r in roots])
    return [(e.path, os.path.relpath(e.path, base)) for e in entries if not e.is_dir]


def _write_atomic(table: pa.Table, path: Path, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _incomplete(ds: Any) -> str | None:
    """Why `ds` is not a DICOM object that can be de-identified and written (pydicom parses garbage leniently)."""
    ts = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "") or "")
    if not _UID.fullmatch(ts):
        return "not a complete DICOM object: no valid TransferSyntaxUID"
    if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
        return "not a complete DICOM object: no SOP Class UID / SOP Instance UID"
    if "PixelData" in ds:
        ds.PixelData  # noqa: B018 (a truncated pixel element fails here, not half-way through the write)
    return None


def _one(src: str, rel: str, out_dir: str, tmp_dir: str, profile: Profile, copy_flagged: bool,
         want_map: bool) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    import pydicom

    row: dict[str, Any] = {"rel_path": rel, "bytes_in": None}
    dest = os.path.join(out_dir, rel)
    try:
        row["bytes_in"] = os.path.getsize(src)
        if os.path.exists(dest):
            return {**row, "status": "exists", "bytes_out": os.path.getsize(dest)}, []
        with open(src, "rb") as f:
            head = f.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            return {**row, "status": "not_dicom", "reason": "not a DICOM Part 10 file (no DICM magic)"}, []
        ds = pydicom.dcmread(src)
        problem = _incomplete(ds)
    except Exception as exc:  # unreadable or unparsable: reported, never copied
        return {**row, "status": "error", "reason": f"{type(exc).__name__}: cannot read or parse"}, []
    if problem:
        return {**row, "status": "error", "reason": problem}, []
    try:
        reasons = burned_in_reasons(ds)
        row.update(modality=str(ds.get("Modality", "") or "") or None,
                   sop_class_uid=str(ds.get("SOPClassUID", "") or "") or None)
        if reasons and not copy_flagged:
            return {**row, "status": "flagged", "reason": "; ".join(reasons)}, []
        outcome = profile.apply(ds, mapping=want_map)
        row.update(study_uid=str(ds.get("StudyInstanceUID", "") or "") or None,
                   series_uid=str(ds.get("SeriesInstanceUID", "") or "") or None)
        tmp = os.path.join(tmp_dir, f"{uuid.uuid4().hex}.dcm")
        try:
            ds.save_as(tmp, enforce_file_format=False)  # as the original was encoded; pixel data untouched
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {**row, "status": "copied", "reason": "; ".join(reasons) or None,
                "bytes_out": os.path.getsize(dest)}, outcome.mapping
    except Exception as exc:  # the message may quote values: only the type leaves the worker
        return {**row, "status": "error", "reason": f"{type(exc).__name__} while de-identifying"}, []


def deid_batch(items: Sequence[tuple[str, str]], out_dir: str, profile: Profile, copy_flagged: bool = False,
               want_map: bool = False) -> tuple[pa.Table, pa.Table]:
    """De-identify a batch of (source, relative path) into `out_dir`; returns (report rows, map rows)."""
    tmp_dir = os.path.join(out_dir, STATE_DIR, "tmp")
    os.makedirs(tmp_dir, exist_ok=True)
    rows, mapping = [], []
    for src, rel in items:
        row, pairs = _one(src, rel, out_dir, tmp_dir, profile, copy_flagged, want_map)
        rows.append(row)
        mapping.extend(pairs)
    report = pa.Table.from_pylist(rows, schema=REPORT)
    mapped = pa.Table.from_pylist([dict(zip(_MAP.names, m)) for m in dict.fromkeys(mapping)], schema=_MAP)
    return report, mapped


def read_report(output: str | os.PathLike[str]) -> pa.Table:
    """Every report row of OUT_DIR, the latest per relative path."""
    parts = sorted((Path(output) / STATE_DIR / "report").glob("part-*.parquet"))
    if not parts:
        return REPORT.empty_table()
    table = pa.concat_tables([pq.read_table(p, schema=REPORT) for p in parts])
    latest: dict[str, int] = {}
    for i, rel in enumerate(table.column("rel_path").to_pylist()):
        latest[rel] = i
    return table.take(sorted(latest.values()))


def _settings(profile: Profile, copy_flagged: bool) -> dict[str, Any]:
    return {"options": list(profile.options), "key_fingerprint": profile.key.fingerprint,
            "safe_private": sorted(f"{c} ({g:04X},xx{e:02X})" for c, g, e in profile.safe_private),
            "copy_flagged": copy_flagged, "table": table_source()}


def _prepare(out: Path, profile: Profile, copy_flagged: bool) -> None:
    state = out / STATE_DIR
    (state / "report").mkdir(parents=True, exist_ok=True)
    settings_file = state / "settings.json"
    mine = _settings(profile, copy_flagged)
    if settings_file.exists():
        theirs = json.loads(settings_file.read_text())
        for k in ("options", "key_fingerprint", "safe_private"):
            if theirs.get(k) != mine[k]:
                raise ValueError(f"{out} holds copies de-identified with other settings ({k} differs): "
                                 "use a new output directory (mixing them would break consistency)")
    else:
        settings_file.write_text(json.dumps(mine, indent=1, sort_keys=True))


def deidentify(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    key: SecretKey | str | os.PathLike[str],
    options: Iterable[str] = (),
    safe_private: Iterable[str] = (),
    map_file: str | os.PathLike[str] | None = None,
    catalog: str | os.PathLike[str] | None = None,
    copy_flagged: bool = False,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    dashboard_address: str | None = None,
    progress: bool | Callable[[int, int], None] = False,
    on_client: Callable[[Any], None] | None = None,
) -> DeidSummary:
    """Write de-identified copies of the DICOM files under `paths` to `output`, mirroring the input tree.

    Parameters
    ----------
    paths : path or iterable of paths
        Files and directories (walked recursively).
    output : path
        OUT_DIR. Holds the copies and, in ``.metaextract-deid/``, the settings (never the key), the report
        and temporary files. A re-run continues: copies present are kept, errors are retried.
    key : SecretKey or path
        The key, or its key file (see :func:`metaextract_dask.deid.keygen`).
    options : iterable of str
        Profile options (:data:`metaextract_dask.deid.OPTIONS`).
    safe_private : iterable of str
        More safe private attributes (``"CREATOR (gggg,xxee)"``) for ``retain-safe-private``.
    map_file : path, optional
        Write the (kind, original, pseudonym) table here (Parquet, mode 0600). Refused inside OUT_DIR.
    catalog : path, optional
        Scan the copies into this catalog afterwards.
    copy_flagged : bool
        Copy files flagged for likely burned-in text too (they stay flagged in the report).
    client, scheduler, n_workers, dashboard_address, progress, on_client
        As for :func:`metaextract_dask.scan`.

    Raises
    ------
    metaextract_dask.deid.DeidKeyError
        A missing or weak key file.
    ValueError
        Unknown options; a map file inside OUT_DIR; OUT_DIR de-identified before with other settings.
    FileNotFoundError
        An input path does not exist.
    """
    from metaextract_dask.cluster import connect

    t0 = time.perf_counter()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not isinstance(key, SecretKey):
        key = load_key(key)
    profile = Profile(key, options, [*(config.get("deid.safe-private", None) or ()), *safe_private])
    out = Path(output).absolute()
    if map_file is not None:
        map_path = Path(map_file).absolute()
        if map_path.resolve().is_relative_to(out.resolve()) or map_path.is_relative_to(out):
            raise ValueError(f"the mapping table {map_file} must not be inside OUT_DIR {output}: it links "
                             "pseudonyms to identities")
    entries = discover(paths, exclude=[out])
    items = mirror_paths(paths, [e for e in entries if not e.special])
    out.mkdir(parents=True, exist_ok=True)
    _prepare(out, profile, copy_flagged)
    done = read_report(out)
    status_of = dict(zip(done.column("rel_path").to_pylist(), done.column("status").to_pylist()))
    # To do: new files, errors (retried), and copies that have gone missing from OUT_DIR since.
    todo = [(s, r) for s, r in items if status_of.get(r) not in _DONE
            or (status_of[r] in ("copied", "exists") and not (out / r).exists())]
    want_map = map_file is not None
    map_parts = Path(f"{map_file}.parts") if want_map else None
    if map_parts is not None:
        map_parts.mkdir(mode=0o700, parents=True, exist_ok=True)
    startup = 0.0
    if todo:
        t_connect = time.perf_counter()
        with connect(scheduler, client=client, n_workers=n_workers, dashboard_address=dashboard_address) as c:
            startup = time.perf_counter() - t_connect
            if on_client is not None:
                on_client(c)
            threads = sum(c.nthreads().values()) or 1
            _run(c, todo, out, profile, copy_flagged, map_parts, threads, progress)
    if map_parts is not None:
        parts = sorted(map_parts.glob("part-*.parquet"))
        table = (pa.concat_tables([pq.read_table(p, schema=_MAP) for p in parts]) if parts else _MAP.empty_table())
        rows = list(dict.fromkeys(zip(*(table.column(n).to_pylist() for n in _MAP.names))))
        _write_atomic(pa.Table.from_pylist([dict(zip(_MAP.names, r)) for r in rows], schema=_MAP),
                      Path(map_file))
    report = read_report(out)
    _write_atomic(report, out / STATE_DIR / "report.parquet", 0o644)
    status = Counter(report.column("status").to_pylist())
    seconds = time.perf_counter() - t0 - startup
    summary = DeidSummary(
        output=str(out), files=len(items), copied=status["copied"] + status["exists"], resumed=len(items) - len(todo),
        flagged=status["flagged"], not_dicom=status["not_dicom"], errors=status["error"],
        seconds=seconds, startup_seconds=startup,
        files_per_second=len(todo) / seconds if seconds and todo else 0.0,
        profile=["basic", *profile.options], key_fingerprint=key.fingerprint,
        map_file=os.fspath(map_file) if map_file is not None else None)
    if catalog is not None:
        from metaextract_dask.scan import scan

        tops = [str(p) for p in sorted(out.iterdir()) if p.name != STATE_DIR]
        if tops:
            scan(tops, catalog, client=client, scheduler=scheduler, n_workers=n_workers)
        summary["catalog"] = os.fspath(catalog)
    return summary


def _run(c: Any, todo: list[tuple[str, str]], out: Path, profile: Profile, copy_flagged: bool,
         map_parts: Path | None, threads: int, progress: bool | Callable[[int, int], None]) -> None:
    from distributed import as_completed

    sizes = {s: os.path.getsize(s) if os.path.exists(s) else 0 for s, _ in todo}
    fake = [FileEntry(s, sizes[s], 0, False, "") for s, _ in todo]  # batches sized as the scan's
    rel_of = dict(todo)
    batches = [[(e.path, rel_of[e.path]) for e in b] for b in plan_batches(fake, threads)]
    futures = c.map(deid_batch, [Batch(b) for b in batches], out_dir=str(out), profile=profile,
                    copy_flagged=copy_flagged, want_map=map_parts is not None, pure=False)
    stamp = f"{time.time_ns():020d}"
    with Progress(len(todo), progress) as bar:
        for i, future in enumerate(as_completed(futures, loop=c.loop)):
            report, mapping = future.result()
            future.release()
            name = f"part-{stamp}-{i:06d}.parquet"
            if map_parts is not None and mapping.num_rows:
                _write_atomic(mapping, map_parts / name)  # before the report: a reported file is mapped
            _write_atomic(report, out / STATE_DIR / "report" / name, 0o644)
            bar.update(report.num_rows)
