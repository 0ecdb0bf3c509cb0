"""The leak check: does any value that the profile removes or replaces still appear in the outputs?

For every original DICOM file the profile is run (with a throw-away key: the values removed do not depend on
it) to collect each removed or replaced value, in sequences and private tags included. Then:

- each de-identified copy (same relative path in OUT_DIR) is searched byte for byte for its original's values;
- every other file in OUT_DIR, and every Parquet table (decoded: every cell as text, row by row for tables
  with a ``path`` / ``rel_path`` column, whose rows are searched for their own file's values) is searched for
  the strong identifiers of all originals (UIDs, patient IDs and names, accession numbers);
- catalogs given with ``catalogs`` are checked the same way (their ``path`` is the original's path).

Values shorter than ``min_length`` characters, plain numbers shorter than 6 digits, and values the profile
keeps elsewhere in the same object are not searched (they say nothing by themselves and would match by
chance).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaextract_dask.deid.keys import SecretKey
from metaextract_dask.deid.profile import Profile
from metaextract_dask.deid.run import STATE_DIR, mirror_paths
from metaextract_dask.discover import discover

__all__ = ["Leak", "VerifyReport", "collect_values", "verify"]

# Tags whose removed values identify across files: searched in every output, not only the copy's own.
_STRONG_TAGS = frozenset({"00100020", "00100010", "00080050", "00101000", "00101001", "00101005", "00100021"})
_NAME_TAGS = frozenset({"00100010", "00101001", "00101005"})
_OURS = ("ANONYMIZED", "ANONYMOUS", "ANON^", "19000101000000", "000000", "000Y", "YES",
         "HTTP://EXAMPLE.INVALID/")
_TOKEN = re.compile(r"[0-9.]+")
_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class Leak:
    """One original value found in an output."""

    output: str       # the output file (or catalog part) it was found in
    original: str     # the original file it comes from
    tag: str          # where it was in the original (ggggeeee)
    value: str        # masked for display: first and last character only

    def __str__(self) -> str:
        return f"{self.output}: value of ({self.tag[:4]},{self.tag[4:]}) from {self.original} ({self.value})"


@dataclass
class VerifyReport:
    """What :func:`verify` searched and found."""

    originals: int = 0
    outputs: int = 0
    values: int = 0
    leaks: list[Leak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing leaked."""
        return not self.leaks

    def format(self) -> str:
        """Human-readable result."""
        head = (f"searched {self.outputs:,} outputs for {self.values:,} removed values of "
                f"{self.originals:,} original DICOM files: ")
        if self.ok:
            return head + "no leak"
        shown = "\n".join(f"  LEAK {leak}" for leak in self.leaks[:50])
        more = f"\n  ... and {len(self.leaks) - 50:,} more" if len(self.leaks) > 50 else ""
        return head + f"{len(self.leaks):,} leaks\n{shown}{more}"


def _mask(value: str) -> str:
    return value[0] + "*" * (len(value) - 2) + value[-1] if len(value) > 2 else "**"


def _searchable(value: str, min_length: int, kept: set[str]) -> bool:
    if len(value) < min_length or not any(c.isalnum() for c in value) or len(set(value)) < 3:
        return False  # '^^^^', '00000000': no identity in them
    if any(value.upper() in ours for ours in _OURS):  # 'ANON' is in every pseudonymised name we write
        return False
    if _NUMBER.fullmatch(value) and len(value) < 6:
        return False
    # Text the profile keeps in the same object (a removed 'TOSHIBA' inside a kept 'TOSHIBA_MEC') is no leak.
    return not any(value in k for k in kept)


def collect_values(path: str, profile: Profile, min_length: int = 4
                   ) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(value -> tag) of every searchable value that `profile` removes or replaces in the file at `path`, the
    strong subset (searched everywhere), and the values the profile keeps."""
    import pydicom

    ds = pydicom.dcmread(path, force=False)
    outcome = profile.apply(ds, collect=True)
    values: dict[str, str] = {}
    strong: dict[str, str] = {}
    for tag, _code, text in outcome.removed:
        if _searchable(text, min_length, outcome.kept):
            values.setdefault(text, tag)
            # Whole names, not their components: 'First' of 'Last^First' is everywhere ('First-Order').
            if (tag in _STRONG_TAGS and (tag not in _NAME_TAGS or "^" in text)) \
                    or re.fullmatch(r"[0-9]+(\.[0-9]+){3,}", text):
                strong[text] = tag  # an identifier wherever else it also appears
    return values, strong, outcome.kept


def _find(data: bytes, values: dict[str, str]) -> list[tuple[str, str]]:
    """The values found in `data`. A word or a number counts only whole: 'Sample' of 'Sample^Referrer' is no
    leak in 'SamplesPerPixel', a time '120000' none in a size 91200000 (in DICOM bytes a value is delimited by
    its length field and padding, so whole values are still found)."""
    hits = []
    for value, tag in values.items():
        encoded = value.encode("utf-8", "surrogateescape")
        if encoded not in data:
            continue
        edge = rb"A-Za-z0-9" if value.isalpha() else rb"A-Za-z0-9." if _TOKEN.fullmatch(value) else None
        if edge is not None and not re.search(rb"(?<![" + edge + rb"])" + re.escape(encoded) + rb"(?![" + edge
                                              + rb"])", data):
            continue
        hits.append((value, tag))
    return hits


def _parquet_rows(path: Path) -> Iterable[tuple[str | None, str]]:
    """(row's path, the row's text) of every row of a Parquet file, decoded. Numeric cells are the catalog's own
    measurements (sizes, shapes: a size of 120000 is no StudyTime); dates are searched in DICOM form too."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    key = next((c for c in ("path", "rel_path") if c in table.column_names), None)
    columns = [table.column(n).to_pylist() for n, t in zip(table.column_names, table.schema.types)
               if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))]
    keys = table.column(key).to_pylist() if key else [None] * table.num_rows

    def text(value: Any) -> str:
        if isinstance(value, dt.date):
            return f"{value.isoformat()} {value.strftime('%Y%m%d')}"
        return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)

    for i in range(table.num_rows):
        yield keys[i], "\n".join(text(c[i]) for c in columns)


def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def verify(output: str | os.PathLike[str], originals: Sequence[str | os.PathLike[str]], *,
           catalogs: Iterable[str | os.PathLike[str]] = (), options: Iterable[str] | None = None,
           min_length: int = 4) -> VerifyReport:
    """Search every byte of OUT_DIR (and of `catalogs`) for values of `originals` that the profile removes.

    Parameters
    ----------
    output : path
        OUT_DIR of a ``deid`` run (its profile options are read from its state folder), or any folder.
    originals : sequence of path
        The inputs given to ``deid`` (same paths: copies are matched by relative path).
    catalogs : iterable of path
        Catalogs (``scan --deidentify`` output) to check too; their rows name the original paths.
    options : iterable of str, optional
        Profile options, when OUT_DIR has no settings (a catalog-only check).
    min_length : int
        Shortest value searched.
    """
    out = Path(output)
    settings_file = out / STATE_DIR / "settings.json"
    if options is None:
        options = json.loads(settings_file.read_text())["options"] if settings_file.exists() else ()
        safe = json.loads(settings_file.read_text()).get("safe_private", []) if settings_file.exists() else []
    else:
        safe = []
    profile = Profile(SecretKey(secrets.token_bytes(32)), options, safe)
    report = VerifyReport()
    entries = [e for e in discover([os.fspath(p) for p in originals]) if not e.special and not e.is_dir]
    per_file: dict[str, dict[str, str]] = {}  # original path -> values
    by_rel: dict[str, str] = {}
    strong: dict[str, tuple[str, str]] = {}  # value -> (tag, original)
    kept_anywhere: set[str] = set()
    for src, rel in mirror_paths([os.fspath(p) for p in originals], entries):
        try:
            with open(src, "rb") as f:
                if f.read(132)[128:132] != b"DICM":
                    continue
            values, strong_values, kept = collect_values(src, profile, min_length)
        except Exception:  # an unparsable original: deid did not copy it either
            continue
        report.originals += 1
        per_file[src] = values
        by_rel[rel] = src
        kept_anywhere.update(kept)
        for v, t in strong_values.items():
            strong.setdefault(v, (t, src))
    report.values = sum(len(v) for v in per_file.values())
    # A value that one original keeps (an implementation UID, say) is no leak in another's output.
    strong_values = {v: t for v, (t, _) in strong.items() if v not in kept_anywhere}

    def check(data: bytes, where: str, own: str | None) -> None:
        hits = _find(data, per_file.get(own, {})) if own else []
        seen = {v for v, _ in hits}
        for value, tag in hits:
            report.leaks.append(Leak(where, own or "?", tag, _mask(value)))
        for value, tag in _find(data, strong_values):
            if value not in seen:
                report.leaks.append(Leak(where, strong[value][1], tag, _mask(value)))

    targets = [p for p in sorted(out.rglob("*")) if p.is_file()] if out.exists() else []
    for cat in catalogs:
        targets += [p for p in sorted(Path(cat).rglob("*")) if p.is_file()]
    for path in targets:
        report.outputs += 1
        if _is_parquet(path):
            for key, text in _parquet_rows(path):
                own = by_rel.get(key) if key in by_rel else key if key in per_file else None
                check(text.encode("utf-8", "surrogateescape"), f"{path} (row of {key})", own)
            continue
        try:
            rel = os.path.relpath(path, out)
        except ValueError:
            rel = None
        check(path.read_bytes(), str(path), by_rel.get(rel) if rel else None)
    return report
