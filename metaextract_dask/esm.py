"""Export a catalog as an ESM collection (the intake-esm catalog format: a JSON description plus a CSV/Parquet
table), so ``intake_esm.esm_datastore("cat.json")`` searches and opens the catalogued files.

One row per (file, data variable): the asset column ``path``, the ESM ``format`` (``netcdf`` for netCDF-3/4 and
HDF5, ``zarr2``/``zarr3`` for Zarr stores), the ``variable`` column intake-esm aggregates on, our ``files``
columns (``catalog_format``, ``format_version``, ``size_bytes``, ``mtime``) and ``arrays`` columns (``array_name``,
``dims``, ``shape``, ``dtype``, ``chunks``, ``units``, ``long_name``), plus file-level attributes as columns
(by default those that at least half the files share: ``experiment_id``, ``source_id``, ...). Error rows, FITS,
DICOM and dimension coordinates are left out (intake-esm opens files with xarray's own engines).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from metaextract_dask.catalog import Catalog

__all__ = ["ESM_FORMATS", "esm_table", "to_intake_esm"]

#: ``files.format`` -> the ESM collection's data format.
ESM_FORMATS = {"netcdf3": "netcdf", "netcdf4": "netcdf", "hdf5": "netcdf", "zarr": "zarr"}


def _joined(value: Any) -> str | None:
    return None if value is None or not len(value) else ",".join(str(v) for v in value)


def _attr_columns(attrs: pd.Series, columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    counts: Counter[str] = Counter()
    for a in attrs:
        counts.update(k for k, v in a.items() if isinstance(v, (str, int, float, bool)))
    return sorted(k for k, n in counts.items() if n >= max(1, len(attrs) / 2))


def esm_table(cat: Catalog, attr_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The collection's rows (see the module docstring); `attr_columns`: file attributes to add as columns
    (default: the scalar ones at least half the files have)."""
    from metaextract_dask.combine import _loads
    from metaextract_dask.discover import decode_path

    files = cat.to_pandas("files")
    files = files[(files["status"] == "ok") & files["format"].isin(ESM_FORMATS)]
    arrays = cat.to_pandas("arrays")
    arrays = arrays[arrays["path"].isin(set(files["path"])) & arrays["error"].isna()]
    fattrs = files.set_index("path")["attrs"].map(_loads)
    columns = _attr_columns(fattrs, attr_columns)
    info = files.set_index("path")
    rows = []
    for row in arrays.to_dict("records"):
        name, dims = row["name"], list(row["dims"]) if row["dims"] is not None else []
        short = name.lstrip("/")
        if len(dims) == 1 and dims[0] == short.rsplit("/", 1)[-1]:
            continue  # a dimension coordinate: part of every variable's dataset, not a variable of its own
        f = info.loc[row["path"]]
        fmt = ESM_FORMATS[f["format"]]
        if fmt == "zarr" and f["format_version"] in ("2", "3"):
            fmt = f"zarr{f['format_version']}"
        attrs = _loads(row["attrs"])
        out = {"path": os.fspath(decode_path(row["path"])), "format": fmt, "variable": short,
               "catalog_format": f["format"], "format_version": f["format_version"],
               "size_bytes": int(f["size_bytes"]), "mtime": f["mtime"], "array_name": name,
               "dims": _joined(dims), "shape": _joined(row["shape"]), "dtype": row["dtype"],
               "chunks": _joined(row["chunks"]), "units": row["units"], "long_name": attrs.get("long_name")}
        for c in columns:
            value = fattrs.loc[row["path"]].get(c)
            out[c] = value if isinstance(value, (str, int, float, bool)) else None
        rows.append(out)
    base = ["path", "format", "variable", "catalog_format", "format_version", "size_bytes", "mtime",
            "array_name", "dims", "shape", "dtype", "chunks", "units", "long_name"]
    return pd.DataFrame(rows, columns=base + [c for c in columns if c not in base])


def to_intake_esm(cat: Catalog, path: str | os.PathLike[str], *, groupby_attrs: Sequence[str] | None = None,
                  attr_columns: Sequence[str] | None = None, concat_dim: str | None = None,
                  table_format: str = "csv", description: str | None = None) -> str:
    """Write the ESM collection ``<path>.json`` and its table ``<path>.csv`` (or ``.parquet``).

    Parameters
    ----------
    cat : Catalog
        The catalog or a :meth:`~metaextract_dask.catalog.Catalog.search` result.
    path : str or path-like
        Where to write, with or without the ``.json`` suffix.
    groupby_attrs : list of str, optional
        Columns whose equal values form one dataset in intake-esm (default: the attribute columns, else
        ``catalog_format``).
    attr_columns : list of str, optional
        File attributes to add as columns (default: the scalar ones at least half the files have).
    concat_dim : str, optional
        Also join each group's files along this dimension (intake-esm ``join_existing``, in path order).
    table_format : {"csv", "parquet"}
    description : str, optional

    Returns
    -------
    str
        The path of the JSON file.
    """
    if table_format not in ("csv", "parquet"):
        raise ValueError(f"table_format must be 'csv' or 'parquet', not {table_format!r}")
    base = os.fspath(path)
    base = base[:-5] if base.endswith(".json") else base
    table = esm_table(cat, attr_columns)
    table_path = f"{base}.{table_format}"
    if table_format == "csv":
        table.to_csv(table_path, index=False)
    else:
        table.to_parquet(table_path, index=False)
    known = {"path", "format", "variable", "catalog_format", "format_version", "size_bytes", "mtime",
             "array_name", "dims", "shape", "dtype", "chunks", "units", "long_name"}
    attrs_cols = [c for c in table.columns if c not in known]
    groupby = list(groupby_attrs) if groupby_attrs is not None else (attrs_cols or ["catalog_format"])
    aggregations: list[dict[str, Any]] = [{"type": "union", "attribute_name": "variable"}]
    if concat_dim:
        aggregations.append({"type": "join_existing", "attribute_name": "path", "options": {"dim": concat_dim}})
    collection = {
        "esmcat_version": "0.1.0",
        "id": os.path.basename(base),
        "description": description or f"metaextract catalog {cat.path}",
        "catalog_file": os.path.basename(table_path),
        "attributes": [{"column_name": c, "vocabulary": ""} for c in table.columns if c != "path"],
        "assets": {"column_name": "path", "format_column_name": "format"},
        "aggregation_control": {"variable_column_name": "variable", "groupby_attrs": groupby,
                                "aggregations": aggregations},
    }
    json_path = f"{base}.json"
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(collection, f, indent=2)
    return json_path
