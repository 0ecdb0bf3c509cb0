"""netCDF reader (netCDF4-python): classic netCDF3 and HDF5-based netCDF4, with groups and CF attributes."""

from __future__ import annotations

from typing import Any

import numpy as np

from metaextract_dask.formats.base import HDF5_LOCK, FormatReader, Records
from metaextract_dask.formats.hdf5 import has_hdf5_magic
from metaextract_dask.jsonutil import dumps, to_jsonable

__all__ = ["NetCDFReader", "is_netcdf4"]

_NC3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_NC_COMPRESSORS = ("zlib", "szip", "zstd", "bzip2", "blosc")


def is_netcdf4(path: str) -> bool:
    """Tell netCDF4 from plain HDF5: netCDF-C marks the root group (``_NCProperties``) or dimensions."""
    import h5py

    try:
        with HDF5_LOCK, h5py.File(path, "r") as f:
            if "_NCProperties" in f.attrs:
                return True
            # Files from netCDF-C < 4.4 or other writers: netCDF dimension bookkeeping on root objects.
            for obj in f.values():
                keys = obj.attrs.keys()
                if "_Netcdf4Dimid" in keys or "_Netcdf4Coordinates" in keys:
                    return True
    except Exception:  # unreadable HDF5: let the HDF5 reader report the error
        return False
    return False


def _attrs(obj: Any) -> dict[str, Any]:
    return {k: to_jsonable(obj.getncattr(k)) for k in obj.ncattrs()}


def _join(group_path: str, name: str) -> str:
    return f"/{name}" if group_path == "/" else f"{group_path}/{name}"


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


def _variable_row(group_path: str, var: Any, nc3: bool) -> dict[str, Any]:
    attrs = _attrs(var)
    chunks = None
    filters: dict[str, Any] = {}
    if not nc3:
        chunking = var.chunking()
        chunks = list(chunking) if isinstance(chunking, (list, tuple)) else None
        filters = {k: v for k, v in (var.filters() or {}).items() if v}
    compression = next((c for c in _NC_COMPRESSORS if filters.get(c)), None)
    fill = attrs.get("_FillValue")
    dt = var.dtype
    itemsize = np.dtype(dt).itemsize if dt is not str else None
    return {
        "name": _join(group_path, var.name),
        "kind": "variable",
        "shape": list(var.shape),
        "dtype": _dtype(var, nc3),
        "dims": list(var.dimensions),
        "chunks": chunks,
        "compression": compression,
        "filters": dumps(filters) if filters else None,
        "fill_value": dumps(fill) if fill is not None else None,
        "units": attrs.get("units") if isinstance(attrs.get("units"), str) else None,
        "nbytes": int(np.prod(var.shape, dtype=np.int64)) * itemsize if itemsize else None,
        "attrs": dumps(attrs),
    }


class NetCDFReader(FormatReader):
    """netCDF3 (classic, 64-bit offset, CDF-5) and netCDF4 files."""

    name = "netcdf"
    priority = 10  # before hdf5: a netCDF4 file is also an HDF5 file

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        if head[:4] in _NC3_MAGIC:
            return True
        return has_hdf5_magic(head) and is_netcdf4(path)

    def read(self, path: str) -> Records:  # noqa: D102
        import netCDF4

        with HDF5_LOCK, netCDF4.Dataset(path, "r") as ds:
            model = ds.data_model
            nc3 = model.startswith("NETCDF3")
            rec = Records(format="netcdf3" if nc3 else "netcdf4", format_version=model)
            rec.attrs = _attrs(ds)

            def walk(group: Any) -> None:
                gpath = group.path
                rec.groups[gpath] = {
                    "attrs": rec.attrs if gpath == "/" else _attrs(group),
                    "dims": {name: len(dim) for name, dim in group.dimensions.items()},
                    "unlimited": [name for name, dim in group.dimensions.items() if dim.isunlimited()],
                }
                for var in group.variables.values():
                    try:
                        rec.arrays.append(_variable_row(gpath, var, nc3))
                    except Exception as exc:
                        rec.arrays.append({"name": _join(gpath, var.name), "kind": "variable",
                                           "error": f"{type(exc).__name__}: {exc}"})
                for sub in group.groups.values():
                    walk(sub)

            walk(ds)
        return rec
