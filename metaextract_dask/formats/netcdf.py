"""netCDF backend (netCDF4-python): classic netCDF-3 and HDF5-based netCDF-4, with groups and CF attributes.

One backend, two catalog formats: ``netcdf3`` and ``netcdf4``. A netCDF-4 variable is also an HDF5 dataset,
so its plain stored bytes take the HDF5 backend's memory-map path when profiled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from metaextract_dask.formats.base import ArraySpec, FormatBackend, MemberProxy, Records, as_text, \
    attr_json_limit, missing_array, truncation, unique_dims
from metaextract_dask.formats.handles import HDF5_LOCK, HandleCache
from metaextract_dask.formats.hdf5 import NETCDF4_MARKERS, HDF5Array, has_hdf5_magic, mapped_region, \
    netcdf4_check_deferred, netcdf4_marked
from metaextract_dask.jsonutil import capped_attrs, dumps

__all__ = ["NetCDFBackend", "NetCDFArray", "NetCDF4HDF5Array", "is_netcdf4"]

_NC3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_NC_COMPRESSORS = ("zlib", "szip", "zstd", "bzip2", "blosc")
_HEAD_MARKERS = tuple(m.encode() for m in NETCDF4_MARKERS)


def is_netcdf4(path: str) -> bool:
    """Tell netCDF4 from plain HDF5: netCDF-C marks the root group (``_NCProperties``) or dimensions."""
    import h5py

    try:
        with HDF5_LOCK, h5py.File(path, "r") as f:
            return netcdf4_marked(f)
    except Exception:  # unreadable HDF5 (or no h5py): let the HDF5 backend report the error
        return False


def _raw_attrs(obj: Any) -> dict[str, Any]:
    """Attribute values as netCDF4 gives them; an unreadable one is the exception reading it raised."""
    out: dict[str, Any] = {}
    for key in obj.ncattrs():
        try:
            out[key] = obj.getncattr(key)
        except Exception as exc:
            out[key] = exc
    return out


def _json_attrs(obj: Any, limit: int | None) -> dict[str, Any]:
    return capped_attrs(_raw_attrs(obj).items(), limit)


def _join(group_path: str, name: str) -> str:
    return f"/{name}" if group_path == "/" else f"{group_path}/{name}"


def _walk(ds: Any) -> Iterator[tuple[Any, str, Any]]:
    """(group, catalog name, variable) of every variable, groups depth first in file order."""
    for var in ds.variables.values():
        yield ds, _join(ds.path, var.name), var
    for sub in ds.groups.values():
        yield from _walk(sub)


def _groups(ds: Any) -> Iterator[Any]:
    yield ds
    for sub in ds.groups.values():
        yield from _groups(sub)


def _dtype(var: Any, nc3: bool) -> str:
    if var.dtype is str:
        return "vlen-str"
    dt = np.dtype(var.dtype)
    # netCDF4-python reports native order; netCDF3 is big-endian on disk, netCDF4 says so via endian().
    if dt.itemsize > 1 and (nc3 or var.endian() == "big"):
        dt = dt.newbyteorder(">")
    if type(var.datatype).__name__ == "VLType":
        return f"vlen-{dt.str}"
    if dt.names:
        return dumps([[n, dt.fields[n][0].str] for n in dt.names])
    return dt.str


def _chunks(var: Any, nc3: bool) -> tuple[int, ...] | None:
    if nc3:
        return None
    chunking = var.chunking()
    return tuple(int(c) for c in chunking) if isinstance(chunking, (list, tuple)) else None


def _variable_row(name: str, var: Any, nc3: bool, file_size: int, limit: int | None) -> dict[str, Any]:
    attrs = _json_attrs(var, limit)
    filters = {k: v for k, v in (var.filters() or {}).items() if v} if not nc3 else {}
    compression = next((c for c in _NC_COMPRESSORS if filters.get(c)), None)
    fill = attrs.get("_FillValue")
    dt = var.dtype
    itemsize = np.dtype(dt).itemsize if dt is not str else None
    chunks = _chunks(var, nc3)
    nbytes = int(np.prod(var.shape, dtype=np.int64)) * itemsize if itemsize else None
    # netCDF-3 stores every value (no compression, no sparse chunks): they must fit in the file
    problem = truncation(nbytes, file_size, "the variable's shape") if nc3 and nbytes else None
    return {
        "name": name,
        "kind": "variable",
        "shape": list(var.shape),
        "dtype": _dtype(var, nc3),
        "dims": list(var.dimensions),
        "chunks": list(chunks) if chunks else None,
        "compression": compression,
        "filters": dumps(filters) if filters else None,
        "fill_value": dumps(fill) if fill is not None else None,
        "units": attrs.get("units") if isinstance(attrs.get("units"), str) else None,
        "nbytes": nbytes,
        "attrs": dumps(attrs),
        "error": problem,
    }


def _open_nc(path: str) -> Any:
    import netCDF4

    return netCDF4.Dataset(path, "r")


#: Open netCDF4 datasets of this process (callers hold HDF5_LOCK: netCDF-C shares libhdf5).
NC_FILES = HandleCache(_open_nc, HDF5_LOCK)


class NetCDFArray(MemberProxy):
    """One netCDF variable, raw stored values (no auto mask/scale, no char-to-string)."""

    maps_regions: ClassVar[bool] = True  # netCDF-4: the HDF5 dataset of the same path

    def _read(self, key: tuple[slice, ...]) -> Any:
        with HDF5_LOCK:
            var = NC_FILES.get(self.path)[self.member]
            var.set_auto_maskandscale(False)
            var.set_auto_chartostring(False)
            return var[key] if key else var[...]

    def iter_region(self, region: tuple[slice, ...]) -> Iterator[np.ndarray] | None:
        """As :meth:`HDF5Array.iter_region`: a netCDF-4 file is an HDF5 file and the variable the HDF5 dataset
        of the same path (opened with h5py, read-only, beside netCDF-C's handle). None for netCDF-3."""
        return mapped_region(self.path, self.member, region, self.dtype)


class NetCDF4HDF5Array(HDF5Array):
    """A netCDF-4 variable read as the HDF5 dataset of the same path through h5py (an open costs a fraction of
    netCDF-C's, which reads the whole file's metadata); netCDF-C reads it where that dataset is not there
    (netCDF-C renames a variable that shares a dimension's name without being its coordinate)."""

    def _read(self, key: tuple[slice, ...]) -> Any:
        try:
            return super()._read(key)
        except KeyError:
            return NetCDFArray(self.path, self.member, self.shape, self.dtype)._read(key)


class NetCDFBackend(FormatBackend):
    """netCDF-3 (classic, 64-bit offset, CDF-5) and netCDF-4 files."""

    name = "netcdf"
    catalog_formats = ("netcdf3", "netcdf4")
    priority = 10  # before hdf5: a netCDF-4 file is also an HDF5 file
    supports_arrays = True
    suffixes = (".nc", ".nc4", ".cdf", ".netcdf")
    requires = ("netCDF4",)

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        if head[:4] in _NC3_MAGIC:
            return True
        if not has_hdf5_magic(head):
            return False
        # netCDF-C writes its marker attributes in the root object header, within the first KiBs: no open.
        if any(marker in head for marker in _HEAD_MARKERS):
            return True
        # In a scan the HDF5 backend's own open tells (see hdf5.netcdf4_check_in_read); elsewhere, open here.
        return not netcdf4_check_deferred() and is_netcdf4(path)

    def error_format(self, head: bytes) -> str:  # noqa: D102
        return "netcdf3" if head.startswith(b"CDF") else "netcdf4"

    def read(self, path: str) -> Records:  # noqa: D102
        import netCDF4

        with HDF5_LOCK, netCDF4.Dataset(path, "r") as ds:
            model = ds.data_model
            nc3 = model.startswith("NETCDF3")
            rec = Records(format="netcdf3" if nc3 else "netcdf4", format_version=model)
            limit = attr_json_limit()
            rec.attrs = _json_attrs(ds, limit)
            for group in _groups(ds):
                entry: dict[str, Any] = {} if group.path == "/" else {"attrs": _json_attrs(group, limit)}
                entry["dims"] = {name: len(dim) for name, dim in group.dimensions.items()}
                entry["unlimited"] = [name for name, dim in group.dimensions.items() if dim.isunlimited()]
                rec.groups[group.path] = entry  # the root's attributes are the file's (files.attrs): stored once
            size = os.path.getsize(path)
            for _group, name, var in _walk(ds):
                try:
                    rec.arrays.append(_variable_row(name, var, nc3, size, limit))
                except Exception as exc:
                    rec.arrays.append({"name": name, "kind": "variable", "error": f"{type(exc).__name__}: {exc}"})
        return rec

    def list_arrays(self, path: str) -> list[str]:  # noqa: D102
        import netCDF4

        with HDF5_LOCK, netCDF4.Dataset(path, "r") as ds:
            return [name for _, name, _ in _walk(ds)]

    def open_array(self, path: str, name: str) -> ArraySpec:  # noqa: D102
        with HDF5_LOCK:
            ds = NC_FILES.get(path)  # the handle reads will use too: one open per file and process
            group_path, _, var_name = name.rpartition("/")
            var = None
            if name.startswith("/") and var_name:
                try:
                    group = ds[group_path] if group_path else ds
                    var = group.variables.get(var_name)
                except (IndexError, KeyError):
                    var = None
            if var is None:
                raise missing_array("netCDF", path, name, [n for _, n, _ in _walk(ds)])
            attrs = {k: as_text(v) for k, v in _raw_attrs(var).items() if not isinstance(v, Exception)}
            dtype = np.dtype(object) if var.dtype is str else np.dtype(var.dtype)
            chunks = _chunks(var, ds.data_model.startswith("NETCDF3"))
            shape = tuple(int(s) for s in var.shape)
            dims = list(var.dimensions)
        return ArraySpec(NetCDFArray(path, name, shape, dtype), unique_dims(dims, len(shape)), attrs, chunks)

    def file_attrs(self, path: str) -> dict[str, Any]:  # noqa: D102
        with HDF5_LOCK:
            return _json_attrs(NC_FILES.get(path), attr_json_limit())

    def proxy_from_row(self, path: str, row: Any, format_version: str | None = None) -> NetCDFArray | None:  # noqa: D102
        dtype = row.get("dtype")
        if not dtype or dtype.startswith(("vlen", "[")) or row.get("shape") is None:
            return None
        dt = np.dtype(dtype)
        if str(format_version or "").startswith("NETCDF4") and dt.kind in "biuf":
            return NetCDF4HDF5Array(path, row["name"], row["shape"], dt)
        # netCDF4-python reads in native byte order
        return NetCDFArray(path, row["name"], row["shape"], dt.newbyteorder("="))

    def group_attrs(self, path: str, group: str) -> dict[str, Any]:  # noqa: D102
        with HDF5_LOCK:
            ds = NC_FILES.get(path)
            node = ds if group in ("", "/") else ds[group]
            return {k: as_text(v) for k, v in _raw_attrs(node).items() if not isinstance(v, Exception)}

    def list_groups(self, path: str) -> list[str]:  # noqa: D102
        with HDF5_LOCK:
            return [g.path for g in _groups(NC_FILES.get(path))]
