"""Schema drift: where files that should share structure differ, and which combine that would break.

>>> report = cat.drift(group_by=["experiment_id"])       # or: metaextract-dask drift CATALOG --group-by experiment_id
>>> report.differences        # group, path, variable, aspect, value, majority
>>> report.predictions        # per group: what xarray.open_mfdataset and Catalog.open_mfdataset would do
>>> print(report)

Files are grouped by ``group_by`` (``files`` columns, ``dir``, or file-level attribute names, as
:meth:`~metaextract_dask.catalog.Catalog.to_dataset_dict` groups them). Within a group every variable's dims,
dtype, shape and on-disk chunks (both beyond the concatenation dimension), units and attributes are compared
with the majority of the files; variables that most files have but some lack, or that only a few have, are
listed too. Everything comes from the catalog's rows: no file is opened.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from metaextract_dask.combine import _aspects, _freeze, _majority, check_files, file_signatures, group_keys

if TYPE_CHECKING:  # pragma: no cover
    from metaextract_dask.catalog import Catalog

__all__ = ["DriftReport", "DIFFERENCE_COLUMNS", "PREDICTION_COLUMNS", "drift", "run_drift"]

DIFFERENCE_COLUMNS = ["group", "path", "variable", "aspect", "value", "majority"]
PREDICTION_COLUMNS = ["group", "concat_dim", "files", "differing_files", "xarray_open_mfdataset",
                      "catalog_open_mfdataset"]
# Attributes expected to differ from file to file: not drift.
_PER_FILE_ATTRS = frozenset({"history", "date_created", "creation_date", "date_modified", "tracking_id", "uuid"})


@dataclass
class DriftReport:
    """The result of :func:`drift`."""

    differences: pd.DataFrame
    """One row per (file, variable, aspect) that differs from its group's majority."""
    predictions: pd.DataFrame
    """One row per group: what a combine of its files along ``concat_dim`` would do."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (records of both tables)."""
        return {"differences": self.differences.astype(object).where(self.differences.notna(), None)
                .to_dict("records"),
                "predictions": self.predictions.to_dict("records")}

    def __str__(self) -> str:
        lines = []
        for pred in self.predictions.astype(object).where(self.predictions.notna(), None).to_dict("records"):
            diff = self.differences.astype(object).where(self.differences.notna(), None)
            diff = diff[diff["group"] == pred["group"]]
            lines.append(f"group {pred['group']!r}: {pred['files']} files, {pred['differing_files']} differ "
                         f"from the majority (concat dim {pred['concat_dim']!r})")
            for row in diff.to_dict("records"):
                what = f"{row['variable']}: " if row["variable"] else ""
                lines.append(f"  {row['path']}: {what}{row['aspect']} {row['value']} (majority: {row['majority']})")
            lines.append(f"  xarray.open_mfdataset: {pred['xarray_open_mfdataset']}")
            lines.append(f"  Catalog.open_mfdataset: {pred['catalog_open_mfdataset']}")
        return "\n".join(lines) if lines else "no files"


def _guess_concat_dim(files: pd.DataFrame, sigs: Mapping[str, Mapping[str, dict]], group: str) -> str | None:
    """The unlimited (record) dimension most files have; else ``time`` if the files have it; else the
    dimension whose length varies between files; else None."""
    from metaextract_dask.combine import _loads

    unlimited = Counter(d for g in files["groups"] for d in _loads(g).get(group, {}).get("unlimited", []) or [])
    if unlimited:
        return _majority(unlimited.elements())
    lengths: dict[str, set[int]] = {}
    for sig in sigs.values():
        for row in sig.values():
            for d, n in zip(row["dims"] or (), row["shape"] or ()):
                lengths.setdefault(d, set()).add(n)
    if "time" in lengths:
        return "time"
    varying = sorted(d for d, ns in lengths.items() if len(ns) > 1)
    return varying[0] if varying else None


def _text(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def _group_drift(key: str, files: pd.DataFrame, arrays: pd.DataFrame, concat_dim: str | None, group: str,
                 compare_attrs: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    bad = files[files["status"] != "ok"]
    for r in bad.to_dict("records"):
        rows.append({"group": key, "path": r["path"], "variable": None, "aspect": "error",
                     "value": f"{r.get('error_type')}: {r.get('error_message')}", "majority": "readable"})
    good = files[files["status"] == "ok"]
    sigs = file_signatures(good, arrays, group)
    dim = concat_dim if concat_dim is not None else _guess_concat_dim(good, sigs, group)
    n = len(sigs)
    counts = Counter(v for sig in sigs.values() for v in sig)
    for v, c in counts.items():
        if c <= n / 2:  # a minority variable: the files that have it are the odd ones
            for path, sig in sigs.items():
                if v in sig:
                    rows.append({"group": key, "path": path, "variable": v, "aspect": "extra variable",
                                 "value": "present", "majority": f"absent in {n - c} of {n} files"})
    names, reference, _ = check_files(sigs, None, dim)
    for v in names:
        for path, sig in sigs.items():
            if v not in sig:
                rows.append({"group": key, "path": path, "variable": v, "aspect": "missing variable",
                             "value": "absent", "majority": f"present in {counts[v]} of {n} files"})
                continue
            got = _aspects(sig[v], dim, v)
            if got["error"]:
                rows.append({"group": key, "path": path, "variable": v, "aspect": "unreadable",
                             "value": got["error"], "majority": "readable"})
                continue
            for aspect, expected in reference[v].items():
                if _freeze(got[aspect]) != expected:
                    rows.append({"group": key, "path": path, "variable": v, "aspect": aspect,
                                 "value": _text(got[aspect]), "majority": _text(expected)})
        if compare_attrs:
            rows.extend(_attr_drift(key, v, {p: s[v]["attrs"] for p, s in sigs.items() if v in s}))
    return rows, {"concat_dim": dim, "files": len(files), "names": names, "sigs": sigs}


def _attr_drift(key: str, variable: str, attrs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    n = len(attrs)
    keys = Counter(k for a in attrs.values() for k in a if k not in _PER_FILE_ATTRS and k != "units")
    for k, c in keys.items():
        values = {p: json.dumps(a[k], sort_keys=True, default=str) for p, a in attrs.items() if k in a}
        common = _majority(values.values())
        for path, a in attrs.items():
            if k not in a:
                if c > n / 2:
                    rows.append({"group": key, "path": path, "variable": variable, "aspect": f"attribute {k}",
                                 "value": "absent", "majority": common})
            elif values[path] != common or c <= n / 2:
                rows.append({"group": key, "path": path, "variable": variable, "aspect": f"attribute {k}",
                             "value": values[path], "majority": common if c > n / 2 else "absent"})
    return rows


def _predict(rows: list[dict[str, Any]], info: Mapping[str, Any]) -> tuple[str, str]:
    """(xarray.open_mfdataset, Catalog.open_mfdataset) predictions from a group's differences."""
    dim = info["concat_dim"]
    by_aspect: dict[str, set[str]] = {}
    for r in rows:
        by_aspect.setdefault(r["aspect"].split(" ")[0] if r["aspect"].startswith("attribute") else r["aspect"],
                             set()).add(f"{r['variable'] or r['path']}")
    fails, silent = [], []
    if "error" in by_aspect or "unreadable" in by_aspect:
        fails.append(f"{len(by_aspect.get('error', set()) | by_aspect.get('unreadable', set()))} file(s) or "
                     "array(s) cannot be read: the whole combine raises")
    if "missing variable" in by_aspect:
        fails.append(f"variables {sorted(by_aspect['missing variable'])} are missing in some files "
                     "(concat raises for variables present in some datasets but not others)")
    if "dims" in by_aspect:
        fails.append(f"dimensions of {sorted(by_aspect['dims'])} differ (cannot concatenate)")
    if "shape" in by_aspect:
        silent.append(f"{sorted(by_aspect['shape'])} differ in shape beyond {dim!r}: outer-joined on their "
                      "coordinates (NaN-padded) or an alignment error without an index")
    if "dtype" in by_aspect:
        silent.append(f"dtype of {sorted(by_aspect['dtype'])} differs: silently promoted")
    if "units" in by_aspect:
        silent.append(f"units of {sorted(by_aspect['units'])} differ: silently combined in mixed units")
    if "attribute" in by_aspect:
        silent.append("attributes differ: the first file's are kept")
    if fails:
        xr_text = "fails: " + "; ".join(fails) + ("; besides, " + "; ".join(silent) if silent else "")
    elif silent:
        xr_text = "combines with problems: " + "; ".join(silent)
    else:
        xr_text = "combines"
    structural = {"error", "unreadable", "missing variable", "dims", "shape", "dtype", "units", "chunks"}
    left = {r["path"] for r in rows if r["aspect"] in structural}
    ours = (f"combines all {info['files']} files" if not left else
            f"combines {info['files'] - len(left)} of {info['files']} files, leaves out {len(left)} "
            "(listed with reasons in `skipped`)")
    return xr_text, ours + "; files whose 1-D coordinate values differ are found when it reads them"


def drift(cat: Catalog, group_by: Sequence[str] | str = ("format",), *, concat_dim: str | None = None,
          group: str = "/", attrs: bool = True) -> DriftReport:
    """The schema-drift report of a catalog.

    Parameters
    ----------
    cat : Catalog
        A catalog or a :meth:`~metaextract_dask.catalog.Catalog.search` result.
    group_by : str or list of str
        What makes files "the same kind" (``files`` columns, ``dir``, file-level attribute names).
    concat_dim : str, optional
        The dimension files would be combined along; default the one whose length varies between files,
        else ``time``.
    group : str, default "/"
        The group of hierarchical files whose variables are compared.
    attrs : bool, default True
        Compare variable attributes too (``history``-like attributes excepted).

    Returns
    -------
    DriftReport
    """
    if isinstance(group_by, str):
        group_by = [group_by]
    files = cat.to_pandas("files")
    files = files[~files["format"].isin(["special", "directory"])]
    arrays = cat.to_pandas("arrays")
    keys = group_keys(files, list(group_by))
    differences: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    for key in sorted(set(keys)):
        members = files[keys == key]
        rows, info = _group_drift(key, members, arrays[arrays["path"].isin(set(members["path"]))], concat_dim,
                                  group, attrs)
        differences.extend(rows)
        xr_text, ours = _predict(rows, info)
        predictions.append({"group": key, "concat_dim": info["concat_dim"], "files": info["files"],
                            "differing_files": len({r["path"] for r in rows}),
                            "xarray_open_mfdataset": xr_text, "catalog_open_mfdataset": ours})
    return DriftReport(pd.DataFrame(differences, columns=DIFFERENCE_COLUMNS),
                       pd.DataFrame(predictions, columns=PREDICTION_COLUMNS))


# --------------------------------------------------------------------------- #
# command line: metaextract-dask drift CATALOG
# --------------------------------------------------------------------------- #
def run_drift(args: argparse.Namespace) -> int:
    """Run ``metaextract-dask drift``; 0, or 1 with a message for a catalog that cannot be read."""
    import sys

    from metaextract_dask.catalog import open_catalog

    try:
        report = drift(open_catalog(args.catalog), [c for c in args.group_by.split(",") if c],
                       concat_dim=args.concat_dim, group=args.group, attrs=not args.no_attrs)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=1, default=str) if args.json else report)
    return 0
