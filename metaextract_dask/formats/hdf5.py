"""HDF5 reader (h5py): groups, datasets, attributes, chunking and filters, without reading data."""

from __future__ import annotations

from typing import Any

import numpy as np

from metaextract_dask.formats.base import HDF5_LOCK, FormatReader, Records
from metaextract_dask.jsonutil import dumps, to_jsonable

__all__ = ["HDF5Reader", "HDF5_MAGIC", "has_hdf5_magic", "dtype_string"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# HDF5 filter names as libhdf5 reports them -> the short names h5py uses.
_FILTER_NAMES = {"deflate": "gzip", "szip": "szip", "lzf": "lzf", "shuffle": "shuffle", "fletcher32": "fletcher32",
                 "scaleoffset": "scaleoffset", "nbit": "nbit"}
_NOT_COMPRESSION = {"shuffle", "fletcher32", "nbit", "scaleoffset"}
# Registered third-party filter ids (https://github.com/HDFGroup/hdf5_plugins/blob/master/docs/RegisteredFilterPlugins.md)
_PLUGIN_IDS = {32000: "lzf", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32013: "zfp", 32015: "zstd",
               32017: "sz", 32026: "blosc2"}


def has_hdf5_magic(head: bytes) -> bool:
    """HDF5's signature sits at offset 0 or after a user block of 512, 1024, ... bytes."""
    offset = 0
    while offset + 8 <= len(head):
        if head[offset:offset + 8] == HDF5_MAGIC:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


def dtype_string(dt: np.dtype) -> str:
    """Catalog spelling of a dtype: ``<f4``; compound as JSON of its fields; ``vlen-str`` for strings."""
    import h5py

    if h5py.check_string_dtype(dt) is not None and dt.kind == "O":
        return "vlen-str"
    base = h5py.check_vlen_dtype(dt)
    if base is not None:
        return f"vlen-{dtype_string(base)}"
    if dt.names and dt.fields is not None:
        return dumps([[name, dtype_string(dt.fields[name][0])] for name in dt.names])
    if dt.kind == "O" or dt.subdtype is not None:
        return str(dt)
    return dt.str


def _filters(dset: Any) -> list[dict[str, Any]]:
    plist = dset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        label = name.decode(errors="replace").split()[0].lower() if name else ""
        label = _FILTER_NAMES.get(label) or _PLUGIN_IDS.get(code) or label or f"filter-{code}"
        entry: dict[str, Any] = {"id": int(code), "name": label}
        if values:
            entry["options"] = [int(v) for v in values]
        out.append(entry)
    return out


# Dimension-scale bookkeeping holds object references, meaningless outside the file; `dims` carries it.
_HIDDEN_ATTRS = {"DIMENSION_LIST", "REFERENCE_LIST"}


def _attrs(obj: Any) -> dict[str, Any]:
    out = {}
    for key in obj.attrs:
        if key in _HIDDEN_ATTRS:
            continue
        try:
            out[key] = to_jsonable(obj.attrs[key])
        except Exception as exc:  # unreadable attribute types must not cost the whole file
            out[key] = f"<unreadable: {type(exc).__name__}: {exc}>"
    return out


def _dims(dset: Any) -> list[str] | None:
    import h5py

    if dset.ndim == 1 and h5py.h5ds.is_scale(dset.id):  # a dimension scale is its own dimension
        return [dset.name.rsplit("/", 1)[-1]]
    names: list[str] = []
    found = False
    for dim in dset.dims:
        label = dim.label
        if not label and len(dim):
            label = dim[0].name.rsplit("/", 1)[-1]
        found = found or bool(label)
        names.append(label or "")
    return names if found else None


def _units(attrs: dict[str, Any]) -> str | None:
    units = attrs.get("units", attrs.get("UNITS"))
    return units if isinstance(units, str) else None


def dataset_row(name: str, dset: Any) -> dict[str, Any]:
    """One ``arrays`` row for an h5py Dataset."""
    attrs = _attrs(dset)
    filters = _filters(dset)
    compression = next((f["name"] for f in filters if f["name"] not in _NOT_COMPRESSION), None)
    import h5py

    fill = None
    # Only a fill value the writer set; the library default (0) marks nothing as missing.
    if dset.id.get_create_plist().fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED:
        try:
            fill = to_jsonable(dset.fillvalue)
        except Exception:  # vlen fill values can't always be read back
            fill = None
    dt = dset.dtype
    return {
        "name": name,
        "kind": "dataset",
        "shape": list(dset.shape) if dset.shape is not None else None,
        "dtype": dtype_string(dt),
        "dims": _dims(dset),
        "chunks": list(dset.chunks) if dset.chunks else None,
        "compression": compression,
        "filters": dumps(filters) if filters else None,
        "fill_value": dumps(fill) if fill is not None else None,
        "units": _units(attrs),
        "nbytes": int(dset.size or 0) * dt.itemsize if dt.kind != "O" else None,
        "attrs": dumps(attrs),
    }


class HDF5Reader(FormatReader):
    """Plain HDF5 files; netCDF4 files (also HDF5) are claimed first by the netCDF reader."""

    name = "hdf5"
    priority = 50

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return has_hdf5_magic(head)

    def read(self, path: str) -> Records:  # noqa: D102
        import h5py

        rec = Records(format="hdf5")
        with HDF5_LOCK, h5py.File(path, "r") as f:
            rec.attrs = _attrs(f)
            rec.groups["/"] = {"attrs": rec.attrs}
            rec.format_version = f"superblock {f.id.get_create_plist().get_version()[0]}"

            def visit(name: str, obj: Any) -> None:
                full = "/" + name
                if isinstance(obj, h5py.Dataset):
                    try:
                        rec.arrays.append(dataset_row(full, obj))
                    except Exception as exc:  # one odd dataset must not hide the others
                        rec.arrays.append({"name": full, "kind": "dataset",
                                           "error": f"{type(exc).__name__}: {exc}"})
                elif isinstance(obj, h5py.Group):
                    rec.groups[full] = {"attrs": _attrs(obj)}

            f.visititems(visit)
        return rec
