"""Catalog -> combined xarray datasets: search, fault-tolerant multi-file combine, dataset dictionaries.

>>> sub = cat.search(format="netcdf", name="tas", attrs={"frequency": "mon"}, path="*/run1/*.nc")
>>> ds, skipped = sub.open_mfdataset(concat_dim="time")          # files that do not fit: rows of `skipped`
>>> dsets, skipped = cat.to_dataset_dict(groupby=["source_id", "experiment_id"])

The combined dataset is built from the catalog's ``files`` and ``arrays`` rows: every array is a recipe
(:meth:`~metaextract_dask.formats.base.FormatBackend.proxy_from_row`) made from its row without opening the
file; only 1-D dimension coordinates are read (an index needs their values), one open per file. A file whose
rows do not fit the majority of the files being combined (an error row, a missing variable, another dtype, other
dims, another shape beyond the concatenation dimension, other on-disk chunks, other units, coordinate values
that differ, a coordinate that cannot be read) is left out and listed with the reason, never raised (unless
``errors="raise"``): the failure that sinks a whole ``xarray.open_mfdataset`` costs one row here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from metaextract_dask.catalog import Catalog

if TYPE_CHECKING:  # pragma: no cover
    import xarray

__all__ = ["CombineResult", "CoordCache", "SubCatalog", "file_signatures", "group_keys", "open_mfdataset", "search",
           "to_dataset_dict", "SKIPPED_COLUMNS"]

#: Columns of the table of files left out of a combine.
SKIPPED_COLUMNS = ["path", "reason"]


class CombineResult(NamedTuple):
    """What :func:`open_mfdataset` returns: ``ds, skipped = ...``."""

    dataset: Any
    """The combined lazy :class:`xarray.Dataset` (None when no file fits)."""
    skipped: pd.DataFrame
    """Files left out: ``path`` and ``reason``."""


# --------------------------------------------------------------------------- #
# search: a sub-catalog
# --------------------------------------------------------------------------- #
class SubCatalog(Catalog):
    """A filtered view of a catalog (the rows :func:`search` kept), with the :class:`Catalog` interface.

    Its tables are held in memory as pandas; nothing is written.
    """

    def __init__(self, parent: Catalog, frames: Mapping[str, pd.DataFrame], query: Mapping[str, Any]) -> None:
        self.path = parent.path
        self.parent = parent
        self.query = dict(query)
        self._frames = dict(frames)

    @property
    def manifest(self) -> dict[str, Any]:  # noqa: D102
        return self.parent.manifest

    def to_pandas(self, name: str) -> pd.DataFrame:  # noqa: D102
        self.table_path(name)
        return self._frames[name].copy()

    def to_arrow(self, name: str) -> Any:  # noqa: D102
        import pyarrow as pa

        from metaextract_dask.schema import SCHEMAS

        return pa.Table.from_pandas(self._frames[name], schema=SCHEMAS[name], preserve_index=False)

    def table(self, name: str) -> Any:  # noqa: D102
        import dask.dataframe as dd

        return dd.from_pandas(self.to_pandas(name), npartitions=1)

    def __repr__(self) -> str:
        return f"<SubCatalog of {self.path} {self.query}: {len(self._frames['files'])} files>"


def _patterns(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _loads(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _value_matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple, set)):
        return any(_value_matches(actual, w) for w in wanted)
    if isinstance(wanted, str) and isinstance(actual, str):
        return fnmatch.fnmatchcase(actual, wanted)
    return bool(actual == wanted)


def _attrs_match(attrs: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(k in attrs and _value_matches(attrs[k], v) for k, v in wanted.items())


def _name_matches(name: str, patterns: list[str]) -> bool:
    bare = name.lstrip("/")
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(bare, p.lstrip("/")) for p in patterns)


def _formats(value: str | Iterable[str]) -> set[str]:
    """Catalog ``files.format`` values of `value` (format values or backend names: ``netcdf`` -> both)."""
    from metaextract_dask.formats import get_backends

    out: set[str] = set()
    for v in _patterns(value):
        out.add(v)
        for backend in get_backends():
            if backend.name == v:
                out.update(backend.formats())
    return out


def search(cat: Catalog, *, format: str | Iterable[str] | None = None,  # noqa: A002
           name: str | Iterable[str] | None = None, attrs: Mapping[str, Any] | None = None,
           path: str | Iterable[str] | None = None, **columns: Any) -> SubCatalog:
    """The files (and their arrays) that match every criterion given, as a sub-catalog.

    Parameters
    ----------
    cat : Catalog
        The catalog (or sub-catalog) to search.
    format : str or list of str, optional
        ``files.format`` values or backend names (``"netcdf"`` matches ``netcdf3`` and ``netcdf4``).
    name : str or list of str, optional
        Array names or glob patterns, with or without the leading ``/`` (``"tas"``, ``"/forecast/*"``). Files
        keep only their matching arrays.
    attrs : dict, optional
        Attribute values (glob patterns for strings, a list for alternatives). A file matches by its file-level
        attributes, or through those of its arrays (then only those arrays are kept).
    path : str or list of str, optional
        Glob patterns on the path (a pattern without ``/`` matches the file name).
    **columns
        Other ``files`` columns by value (``status="ok"``, ``format_version="2"``).

    Returns
    -------
    SubCatalog
    """
    files = cat.to_pandas("files")
    arrays = cat.to_pandas("arrays")
    keep = pd.Series(True, index=files.index)
    if format is not None:
        keep &= files["format"].isin(_formats(format))
    if path is not None:
        pats = _patterns(path)
        keep &= files["path"].map(lambda p: any(
            fnmatch.fnmatchcase(p, pat) if "/" in pat else fnmatch.fnmatchcase(posixpath.basename(p), pat)
            for pat in pats))
    for column, value in columns.items():
        if column not in files.columns:
            raise KeyError(f"no files column {column!r}; columns: {', '.join(files.columns)}")
        keep &= files[column].map(lambda v, value=value: _value_matches(v, value))
    arr_keep = pd.Series(True, index=arrays.index)
    if name is not None:
        pats = _patterns(name)
        arr_keep &= arrays["name"].map(lambda n: _name_matches(n, pats))
    if attrs:
        file_hit = files["attrs"].map(lambda a: _attrs_match(_loads(a), attrs))
        array_hit = arrays["attrs"].map(lambda a: _attrs_match(_loads(a), attrs))
        by_array = set(arrays.loc[arr_keep & array_hit, "path"])
        keep &= file_hit | files["path"].isin(by_array)
        hit_files = set(files.loc[file_hit, "path"])
        arr_keep &= arrays["path"].isin(hit_files) | array_hit
    if name is not None:
        keep &= files["path"].isin(set(arrays.loc[arr_keep, "path"]))
    kept = set(files.loc[keep, "path"])
    frames = {"files": files[keep].reset_index(drop=True),
              "arrays": arrays[arr_keep & arrays["path"].isin(kept)].reset_index(drop=True)}
    for table in cat.tables:
        if table not in frames:
            df = cat.to_pandas(table)
            frames[table] = df[df["path"].isin(kept)].reset_index(drop=True)
    query = {k: v for k, v in dict(format=format, name=name, attrs=attrs, path=path, **columns).items()
             if v is not None}
    return SubCatalog(cat if not isinstance(cat, SubCatalog) else cat.parent, frames, query)


# --------------------------------------------------------------------------- #
# signatures of files, from their catalog rows
# --------------------------------------------------------------------------- #
def _tuple(value: Any) -> tuple[Any, ...] | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else tuple(
        int(v) if isinstance(v, (int, np.integer)) else v for v in value)


def _short(name: str, group: str) -> str:
    return name[len(group):].lstrip("/") if group != "/" else name.lstrip("/")


def file_signatures(files: pd.DataFrame, arrays: pd.DataFrame, group: str = "/") -> dict[str, dict[str, dict]]:
    """``{path: {variable: row}}`` of the arrays in `group` (direct members, names as in the group), each row
    a dict with ``dims``/``shape``/``chunks`` as tuples and ``attrs`` parsed."""
    from metaextract_dask.datasets import group_of

    group = "/" + group.strip("/") if group not in ("", "/") else "/"
    out: dict[str, dict[str, dict]] = {p: {} for p in files["path"]}
    for row in arrays.to_dict("records"):
        name = row["name"]
        if row["path"] not in out or not (name.startswith("/") or group == "/"):
            continue
        if name.startswith("/") and group_of(name) != group and not (name == "/" and group == "/"):
            continue
        short = _short(name, group) if name.startswith("/") else name
        row = dict(row)
        row["dims"] = _tuple(row.get("dims"))
        row["shape"] = _tuple(row.get("shape"))
        row["chunks"] = _tuple(row.get("chunks"))
        row["attrs"] = _loads(row.get("attrs"))
        for key in ("error", "units", "dtype", "fill_value"):  # pandas gives missing strings as NaN
            if not isinstance(row.get(key), str):
                row[key] = None
        out[row["path"]][short or "data"] = row
    return out


def _is_time_units(units: Any) -> bool:
    return isinstance(units, str) and " since " in units


def _majority(values: Iterable[Any]) -> Any:
    counts = Counter(values)
    return max(counts.items(), key=lambda kv: kv[1])[0] if counts else None


def _without(shape: tuple[Any, ...] | None, axis: int | None) -> tuple[Any, ...] | None:
    if shape is None or axis is None or axis >= len(shape):
        return shape
    return shape[:axis] + shape[axis + 1:]


def _aspects(row: Mapping[str, Any], concat_dim: str | None, name: str) -> dict[str, Any]:
    """What must agree between files for `name` to combine: dims, dtype, shape and chunks beyond the
    concatenation axis, units (CF time units of the concatenation coordinate excepted: decoded per file)."""
    dims = row["dims"]
    axis = dims.index(concat_dim) if dims and concat_dim in dims else None
    units = row.get("units")
    if name == concat_dim and _is_time_units(units):
        units = "<CF time>"
    return {"error": row.get("error") or None, "dims": dims, "dtype": row.get("dtype"),
            "shape": _without(row["shape"], axis), "chunks": _without(row["chunks"], axis), "units": units}


def _describe(aspect: str, value: Any) -> str:
    if aspect == "shape" or aspect == "chunks":
        return "contiguous" if value is None and aspect == "chunks" else str(tuple(value) if value else value)
    return repr(value)


def check_files(sigs: Mapping[str, Mapping[str, dict]], variables: Sequence[str] | None, concat_dim: str | None
                ) -> tuple[list[str], dict[str, dict[str, Any]], dict[str, list[str]]]:
    """The variables to combine, the majority's aspects of each, and per path the reasons it does not fit
    (empty lists for files that fit)."""
    if variables is None:
        counts = Counter(v for sig in sigs.values() for v in sig)
        half = len(sigs) / 2
        variables = [v for v, n in counts.items() if n > half]
    else:
        variables = list(variables)
    reference: dict[str, dict[str, Any]] = {}
    for v in variables:
        present = [_aspects(sig[v], concat_dim, v) for sig in sigs.values() if v in sig and not sig[v].get("error")]
        reference[v] = {a: _majority(_freeze(p[a]) for p in present) for a in ("dims", "dtype", "shape", "chunks",
                                                                                "units")} if present else {}
    reasons: dict[str, list[str]] = {}
    for path, sig in sigs.items():
        why: list[str] = []
        for v in variables:
            if v not in sig:
                why.append(f"missing variable {v!r}")
                continue
            got = _aspects(sig[v], concat_dim, v)
            if got["error"]:
                why.append(f"{v}: unreadable ({got['error']})")
                continue
            for aspect, expected in reference[v].items():
                if _freeze(got[aspect]) != expected:
                    beyond = f" beyond {concat_dim!r}" if aspect in ("shape", "chunks") and concat_dim else ""
                    why.append(f"{v}: {aspect}{beyond} {_describe(aspect, got[aspect])}, the others' "
                               f"{_describe(aspect, expected)}")
        reasons[path] = why
    return variables, reference, reasons


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- #
# open_mfdataset
# --------------------------------------------------------------------------- #
def _decode_attrs(row: Mapping[str, Any], fmt: str, format_version: str | None, dtype: np.dtype) -> dict[str, Any]:
    """The row's attributes as xarray's coders want them: fill values in the stored dtype (JSON gives floats
    and ints), the format's own fill value where the backend maps it (HDF5 creation property, Zarr v2)."""
    attrs = dict(row["attrs"])
    attrs.pop("_ARRAY_DIMENSIONS", None)
    fill = row.get("fill_value")
    if "_FillValue" not in attrs and isinstance(fill, str) and dtype.kind in "biufc" and (
            fmt == "hdf5" or (fmt == "zarr" and str(format_version) == "2")):
        attrs["_FillValue"] = json.loads(fill)
    for key in ("_FillValue", "missing_value"):
        if key in attrs and dtype.kind in "biuf":
            try:
                attrs[key] = np.array(attrs[key], dtype=dtype)[()] if np.ndim(attrs[key]) == 0 else \
                    np.array(attrs[key], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                pass  # left as it is: xarray's coder says what is wrong with it
    return attrs


class _File:
    """One file being combined: its row, its backend and the recipes of its arrays."""

    def __init__(self, row: Mapping[str, Any], sig: Mapping[str, dict]) -> None:
        from metaextract_dask.discover import decode_path
        from metaextract_dask.formats import backend_for_format

        self.path = row["path"]
        self.local = decode_path(row["path"])
        self.format_version = row.get("format_version")
        self.backend = backend_for_format(row["format"])
        self.sig = sig
        self._proxies: dict[str, Any] = {}

    def proxy(self, name: str) -> Any:
        if name not in self._proxies:
            row = self.sig[name]
            proxy = self.backend.proxy_from_row(self.local, row, self.format_version)
            if proxy is None:  # the row does not say enough: the backend opens the file
                proxy = self.backend.open_array(self.local, row["name"]).proxy
            self._proxies[name] = proxy
        return self._proxies[name]

    def attrs(self, name: str) -> dict[str, Any]:
        """The array's attributes as xarray's coders want them."""
        dtype = self.proxy(name).dtype
        return _decode_attrs(self.sig[name], self.backend.name, self.format_version, dtype.newbyteorder("="))

    def raw(self, name: str) -> np.ndarray:
        """The stored values of a (small, 1-D) array, read now, in native byte order."""
        values = np.asarray(self.proxy(name)[...])
        if values.dtype.kind in "biuf" and not values.dtype.isnative:
            values = values.astype(values.dtype.newbyteorder("="))
        return values


#: Attributes that change what xarray's coders make of the stored values.
_CODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "units", "calendar",
                 "dtype")


def _coding_key(attrs: Mapping[str, Any], dtype: np.dtype) -> str:
    return json.dumps([dtype.str] + [attrs.get(k) for k in _CODING_ATTRS], default=str)


def _runs(files: Sequence[_File], key: Any) -> list[list[_File]]:
    """Consecutive files with equal ``key(file)``."""
    runs: list[list[_File]] = []
    last = object()
    for h in files:
        k = key(h)
        if not runs or k != last:
            runs.append([])
        runs[-1].append(h)
        last = k
    return runs


def _read_block(proxy: Any, key: tuple[slice, ...]) -> np.ndarray:
    return proxy[key]


def _stacked(files: Sequence[_File], name: str, axis: int | None, chunks: Any, memory_limit: int | None) -> Any:
    """The stored values of `name` of `files`, concatenated along `axis` (None: the first file's only), as one
    dask array whose graph is written here: one task per block of each file, nothing tokenized per file."""
    import itertools

    import dask.array as da
    from dask.base import tokenize

    from metaextract_dask.chunking import adaptive_chunks

    def file_chunks(h: _File) -> tuple[tuple[int, ...], ...]:
        proxy, row = h.proxy(name), h.sig[name]
        if chunks is None:
            return adaptive_chunks(proxy.shape, proxy.dtype, row["chunks"], memory_limit=memory_limit)
        from dask.array.core import normalize_chunks

        wanted = tuple(chunks.get(d, -1) for d in (row["dims"] or ())) if isinstance(chunks, Mapping) else chunks
        return normalize_chunks(wanted, proxy.shape, dtype=proxy.dtype)

    files = list(files) if axis is not None else list(files[:1])
    ref = file_chunks(files[0])
    per_file = [ref if i == 0 else file_chunks(h) for i, h in enumerate(files)]
    if axis is None:
        axis, along = 0, list(ref[0]) if ref else []
    else:
        along = [c for fc in per_file for c in fc[axis]]
    out_chunks = tuple(tuple(along) if i == axis else ref[i] for i in range(len(ref)))
    proxies = [h.proxy(name) for h in files]
    dtype = proxies[0].dtype
    out_name = "open-mf-" + tokenize(name, [p.__dask_tokenize__() for p in proxies], out_chunks)
    others = [list(zip(np.cumsum((0,) + c[:-1]), c)) for c in out_chunks]
    graph: dict[Any, Any] = {}
    block = 0
    for proxy, fc in zip(proxies, per_file):
        start = 0
        for size in (fc[axis] if out_chunks else ()):
            pieces = list(others)
            pieces[axis] = [(start, size)]
            for idx in itertools.product(*[range(len(p)) for p in pieces]):
                key = tuple(slice(int(pieces[i][j][0]), int(pieces[i][j][0] + pieces[i][j][1]))
                            for i, j in enumerate(idx))
                block_idx = tuple(block if i == axis else j for i, j in enumerate(idx))
                graph[(out_name, *block_idx)] = (_read_block, proxy, key)
            start += size
            block += 1
    if not out_chunks:  # a scalar
        graph[(out_name,)] = (_read_block, proxies[0], ())
    arr = da.Array(graph, out_name, out_chunks, meta=np.empty((0,) * len(out_chunks), dtype=dtype))
    if dtype.kind in "biuf" and not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def _decoded(name: str, dims: tuple[str, ...], data: Any, attrs: dict[str, Any], dec: Mapping[str, Any] | None,
             encoding: dict[str, Any]) -> xarray.Variable:
    import xarray as xr

    var = xr.Variable(dims, data, attrs=attrs, encoding=encoding)
    if dec is not None and var.dtype.kind != "V":
        var = xr.conventions.decode_cf_variable(name, var, **_single(dec))
    return var


def _single(dec: Mapping[str, Any]) -> dict[str, Any]:
    """decode_cf_variable's keywords from the decoder switches (decode_coords is a dataset matter)."""
    return {k: v for k, v in dec.items() if k != "decode_coords"}


def _skip_table(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


class CoordCache:
    """1-D coordinate values read from a catalog's files, kept in the catalog (``<catalog>/_coords/*.parquet``)
    so that the next combine of the same files opens none of them (``metaextract.combine.cache-coords``).

    An entry is used only while the file's catalog row still has the size and mtime it was read at; a file
    a re-scan found changed is read again. The cache is private like the catalog (its file and directory
    modes); a catalog this user may not write to is simply not cached into.
    """

    DIR = "_coords"

    def __init__(self, cat: Catalog) -> None:
        self.dir = os.path.join(cat.path, self.DIR)
        self.entries: dict[tuple[str, str], tuple[Any, Any, np.ndarray]] = {}
        self.new: list[dict[str, Any]] = []
        try:
            parts = sorted(f for f in os.listdir(self.dir) if f.endswith(".parquet"))
        except OSError:
            parts = []
        if parts:
            import pyarrow.parquet as pq

            for part in parts:
                try:
                    table = pq.read_table(os.path.join(self.dir, part))
                except Exception:  # a damaged cache part: those values are read from the files again
                    continue
                for r in table.to_pylist():
                    values = np.frombuffer(r["values"], dtype=np.dtype(r["dtype"]))
                    self.entries[(r["path"], r["name"])] = (r["size_bytes"], r["mtime"], values)

    def get(self, h: _File, name: str, row: Mapping[str, Any]) -> np.ndarray:
        """The values of `name` of `h`: cached if the file is unchanged, else read (and remembered)."""
        hit = self.entries.get((h.path, name))
        if hit is not None and hit[0] == row["size_bytes"] and hit[1] == row["mtime"]:
            return hit[2]
        values = h.raw(name)
        if values.dtype.kind in "biufcmM":
            self.new.append({"path": h.path, "name": name, "size_bytes": row["size_bytes"], "mtime": row["mtime"],
                             "dtype": values.dtype.str, "values": np.ascontiguousarray(values).tobytes()})
        return values

    def save(self) -> None:
        """Write what was read as one new part (nothing when all came from the cache)."""
        if not self.new:
            return
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq

        from metaextract_dask.sinks import _write_file, catalog_modes

        file_mode, dir_mode = catalog_modes()
        try:
            os.makedirs(self.dir, mode=dir_mode, exist_ok=True)
            table = pa.Table.from_pylist(self.new)
            _write_file(os.path.join(self.dir, f"part-{uuid.uuid4().hex}.parquet"), file_mode,
                        lambda p: pq.write_table(table, p))
        except OSError:  # a read-only catalog: no cache, the combine itself is unaffected
            return
        self.new = []


def open_mfdataset(cat: Catalog, variables: str | Sequence[str] | None = None, *, concat_dim: str = "time",
                   group: str = "/", errors: str = "skip", decode: bool | Mapping[str, Any] = True,
                   chunks: Any = None, memory_limit: int | None = None, cache_coords: bool | None = None
                   ) -> CombineResult:
    """Combine the catalog's files into one lazy Dataset along `concat_dim`, leaving out files that do not fit.

    Parameters
    ----------
    cat : Catalog
        The files to combine (usually a :func:`search` result).
    variables : str or list of str, optional
        Data variables to combine (names in `group`, ``"tas"`` or ``"/tas"``); their dimension coordinates
        come along. Default: the variables that most files have.
    concat_dim : str, default "time"
        The dimension to concatenate along. Variables without it are taken from the first file that fits.
        Files are ordered by their first `concat_dim` coordinate value (by path without that coordinate).
    group : str, default "/"
        The group of hierarchical files.
    errors : {"skip", "raise"}
        "skip": files that do not fit are left out and listed in ``skipped``; "raise": ValueError listing them.
    decode : bool or dict
        As for :func:`metaextract_dask.arrays.open_array` (xarray's coders, per file with its own attributes).
    chunks : dict, optional
        Dask chunks per dimension for each file's piece; default adaptive (whole on-disk chunks).
    memory_limit : int, optional
        Caps the adaptive chunk size.
    cache_coords : bool, optional
        Keep the 1-D coordinate values read in the catalog (:class:`CoordCache`), so the next combine of the
        same files opens none; default ``metaextract.combine.cache-coords``.

    Returns
    -------
    CombineResult
        ``(dataset, skipped)``: the Dataset (None when no file fits) and a DataFrame of ``path``/``reason``.
    """
    import dask.array as da
    import xarray as xr

    from metaextract_dask.datasets import decoders

    if errors not in ("skip", "raise"):
        raise ValueError(f"errors must be 'skip' or 'raise', not {errors!r}")
    if isinstance(variables, str):
        variables = [variables]
    dec = decoders(decode)
    if cache_coords is None:
        from metaextract_dask import config

        cache_coords = bool(config.get("combine.cache-coords", True))
    files = cat.to_pandas("files")
    arrays = cat.to_pandas("arrays")
    skipped: list[tuple[str, str]] = []
    bad = files["status"] != "ok"
    for row in files[bad].to_dict("records"):
        skipped.append((row["path"], f"error row: {row.get('error_type')}: {row.get('error_message')}"))
    files = files[~bad]
    from metaextract_dask.formats import get_backends

    readable = {f for b in get_backends() if b.supports_arrays for f in b.formats()}
    no_arrays = ~files["format"].isin(readable)
    for row in files[no_arrays].to_dict("records"):
        skipped.append((row["path"], f"format {row['format']!r}: no arrays"))
    files = files[~no_arrays]
    unopened = {k for b in get_backends() for k in b.not_profiled}  # FITS tables: listed, not arrays
    sigs = file_signatures(files, arrays[~arrays["kind"].isin(unopened)], group)
    wanted = None
    if variables is not None:
        wanted = [v.lstrip("/") if group in ("", "/") else v.rsplit("/", 1)[-1] for v in variables]
        counts = Counter(v for sig in sigs.values() for v in sig)
        # a variable's dimension coordinates come along (as most files have them)
        dims = {d for sig in sigs.values() for v in wanted if v in sig for d in (sig[v]["dims"] or ())}
        wanted += sorted(d for d in dims if counts[d] > len(sigs) / 2 and d not in wanted)
    names, _, reasons = check_files(sigs, wanted, concat_dim)
    for path, why in reasons.items():
        if why:
            skipped.append((path, "; ".join(why)))
    fitting = [r for r in files.to_dict("records") if not reasons.get(r["path"])]
    handles = [_File(r, sigs[r["path"]]) for r in fitting]
    if len(handles) > 1 and not any(concat_dim in (handles[0].sig[v]["dims"] or ()) for v in names):
        # the files would shrink to the first one's variables
        dims = sorted({d for v in names for d in (handles[0].sig[v]["dims"] or ())})
        raise ValueError(f"no variable of these files has the dimension {concat_dim!r} to combine along; "
                         f"their dimensions: {', '.join(dims) or 'none'} (concat_dim=...)")
    # 1-D dimension coordinates: read (one open per file); the others' values must agree with the majority's
    coord_names = [v for v in names if handles and handles[0].sig[v]["dims"] == (v,)]
    raw: dict[str, dict[str, np.ndarray]] = {}
    ok: list[_File] = []
    cache = CoordCache(cat) if cache_coords else None
    by_path = files.set_index("path")[["size_bytes", "mtime"]].to_dict("index")
    for h in handles:
        try:
            for v in names:  # every recipe now: a file whose arrays cannot be had is left out here
                h.proxy(v)
            raw[h.path] = {c: cache.get(h, c, by_path[h.path]) if cache else h.raw(c) for c in coord_names}
        except Exception as exc:  # a file that cannot give its coordinates is left out, not the batch
            skipped.append((h.path, f"opening its arrays: {type(exc).__name__}: {exc}"))
            continue
        ok.append(h)
    if cache is not None:
        cache.save()
    for c in (c for c in coord_names if c != concat_dim):
        digest = {h.path: (raw[h.path][c].tobytes(), _coding_key(h.attrs(c), raw[h.path][c].dtype)) for h in ok}
        common = _majority(digest.values())
        for h in [h for h in ok if digest[h.path] != common]:
            skipped.append((h.path, f"{c}: coordinate values differ from the other files'"))
            ok.remove(h)
    skipped_df = _skip_table(skipped)
    if errors == "raise" and skipped:
        raise ValueError("files that do not combine:\n" + "\n".join(f"{p}: {r}" for p, r in skipped))
    if not ok:
        return CombineResult(None, skipped_df)
    out_vars: dict[str, Any] = {}
    if concat_dim in coord_names:  # decoded per run of files with the same units/calendar, then ordered
        parts = []
        for run in _runs(ok, lambda h: _coding_key(h.attrs(concat_dim), raw[h.path][concat_dim].dtype)):
            values = np.concatenate([raw[h.path][concat_dim] for h in run])
            var = _decoded(concat_dim, (concat_dim,), values, run[0].attrs(concat_dim), dec, {}).load()
            bounds = np.cumsum([0] + [len(raw[h.path][concat_dim]) for h in run])
            parts.extend((var[int(a):int(b)], h) for a, b, h in zip(bounds[:-1], bounds[1:], run))
        parts.sort(key=lambda vh: (_first(vh[0]), vh[1].path))
        ok = [h for _, h in parts]
        out_vars[concat_dim] = xr.Variable.concat([v for v, _ in parts], dim=concat_dim)
        out_vars[concat_dim].attrs, out_vars[concat_dim].encoding = dict(parts[0][0].attrs), dict(parts[0][0].encoding)
    else:
        ok.sort(key=lambda h: h.path)
    first = ok[0]
    for c in coord_names:
        if c != concat_dim:
            out_vars[c] = _decoded(c, (c,), raw[first.path][c], first.attrs(c), dec, {}).load()
    for v in names:
        if v in coord_names:
            continue
        dims = first.sig[v]["dims"] or tuple(f"dim_{i}" for i in range(len(first.sig[v]["shape"] or ())))
        axis = dims.index(concat_dim) if concat_dim in dims else None
        encoding = {"source": first.local, "format": first.backend.name, "variable": first.sig[v]["name"],
                    "chunks": first.sig[v]["chunks"], "dtype": first.proxy(v).dtype}
        members = ok if axis is not None else ok[:1]
        pieces = []
        for run in _runs(members, lambda h: _coding_key(h.attrs(v), h.proxy(v).dtype)):
            data = _stacked(run, v, axis, chunks, memory_limit)
            pieces.append(_decoded(v, dims, data, run[0].attrs(v), dec, dict(encoding)))
        if len(pieces) == 1:
            out_vars[v] = pieces[0]
        else:  # packing or fill values change between files: each run decoded with its own
            data = da.concatenate([p.data for p in pieces], axis=axis)
            out_vars[v] = xr.Variable(dims, data, attrs=dict(pieces[0].attrs), encoding=dict(pieces[0].encoding))
    first_row = files.set_index("path").loc[first.path]
    if group in ("", "/"):
        attrs = _loads(first_row["attrs"])
    else:  # a group's attributes are in files.groups
        attrs = dict(_loads(first_row["groups"]).get("/" + group.strip("/"), {}).get("attrs", {}))
    coord_set = set(coord_names)
    for v, var in list(out_vars.items()):  # CF "coordinates" attributes name non-index coordinates
        named = str(var.attrs.get("coordinates", "")).split() if dec is not None else []
        if named and all(n in out_vars for n in named):
            coord_set.update(named)
            var.encoding["coordinates"] = var.attrs.pop("coordinates")
    ds = xr.Dataset({k: v for k, v in out_vars.items() if k not in coord_set},
                    coords={k: v for k, v in out_vars.items() if k in coord_set}, attrs=attrs)
    ds.encoding["source_files"] = [h.local for h in ok]
    return CombineResult(ds, skipped_df)


def _first(var: xarray.Variable) -> Any:
    values = var.values
    return values.ravel()[0] if values.size else np.inf


# --------------------------------------------------------------------------- #
# to_dataset_dict
# --------------------------------------------------------------------------- #
def group_keys(files: pd.DataFrame, groupby: Sequence[str]) -> pd.Series:
    """The group key of each file: its values of the `groupby` columns (``files`` columns, ``dir`` for the
    parent directory, else file-level attribute names) joined with ``.``."""
    parts = []
    attrs = None
    for col in groupby:
        if col in files.columns:
            parts.append(files[col].astype(str))
        elif col == "dir":
            parts.append(files["path"].map(posixpath.dirname))
        else:
            if attrs is None:
                attrs = files["attrs"].map(_loads)
            parts.append(attrs.map(lambda a, col=col: str(a.get(col))))
    if not parts:
        return pd.Series("all", index=files.index)
    key = parts[0]
    for p in parts[1:]:
        key = key + "." + p
    return key


def to_dataset_dict(cat: Catalog, groupby: Sequence[str] | str = ("format",), **kwargs: Any
                    ) -> tuple[dict[str, xarray.Dataset], pd.DataFrame]:
    """One combined Dataset per group of files (see :func:`open_mfdataset` for `kwargs`).

    Parameters
    ----------
    cat : Catalog
    groupby : str or list of str
        ``files`` columns, ``dir``, or file-level attribute names; files with equal values form one group.
    **kwargs
        :func:`open_mfdataset`'s options (``variables``, ``concat_dim``, ``group``, ``errors``, ...).

    Returns
    -------
    (dict, pandas.DataFrame)
        ``{key: Dataset}`` (groups where no file fits are left out) and the skipped files of all groups, with
        a ``key`` column.
    """
    if isinstance(groupby, str):
        groupby = [groupby]
    files = cat.to_pandas("files")
    keys = group_keys(files, list(groupby))
    out: dict[str, xarray.Dataset] = {}
    skipped = []
    parent = cat.parent if isinstance(cat, SubCatalog) else cat
    arrays = cat.to_pandas("arrays")
    for key in sorted(set(keys)):
        paths = set(files.loc[keys == key, "path"])
        frames = {"files": files[files["path"].isin(paths)].reset_index(drop=True),
                  "arrays": arrays[arrays["path"].isin(paths)].reset_index(drop=True)}
        for table in cat.tables:
            frames.setdefault(table, cat.to_pandas(table).iloc[0:0])
        try:
            ds, sk = open_mfdataset(SubCatalog(parent, frames, {"groupby": key}), **kwargs)
        except ValueError as exc:  # a group that cannot combine at all costs its own rows, not the others
            if kwargs.get("errors") == "raise":
                raise
            ds, sk = None, _skip_table([(p, f"group {key!r}: {exc}") for p in sorted(paths)])
        if ds is not None:
            out[key] = ds
        skipped.append(sk.assign(key=key))
    table = pd.concat(skipped, ignore_index=True) if skipped else _skip_table([]).assign(key=[])
    return out, table
