"""HDF5 backend (h5py): groups, datasets, attributes, chunking and filters; lazy datasets with a memory-map
fast path for plain stored bytes.

netCDF-4 files are HDF5 files too; the netCDF backend (tried first) claims them.

A file's catalog records are read through h5py's low-level API (:func:`_records_fast`: the same libhdf5 calls
as h5py's high-level objects, without their per-object Python); what it cannot reproduce exactly goes through
the high-level path (:func:`_records_slow`), per file or per dataset.
"""

from __future__ import annotations

import contextvars
import itertools
import math
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from metaextract_dask.formats.base import ArrayProxy, ArraySpec, FormatBackend, MemberProxy, Records, as_text, \
    attr_json_limit, fast_readers, missing_array, unique_dims
from metaextract_dask.formats.handles import HDF5_LOCK, HandleCache, stamp
from metaextract_dask.jsonutil import capped_attrs, dumps, to_jsonable

__all__ = ["HDF5Backend", "HDF5Array", "HDF5_MAGIC", "has_hdf5_magic", "dtype_string", "mapped_region",
           "H5_FILES", "NETCDF4_MARKERS", "netcdf4_marked", "netcdf4_check_in_read", "netcdf4_check_deferred"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# HDF5 filter names as libhdf5 reports them -> the short names h5py uses.
_FILTER_NAMES = {"deflate": "gzip", "szip": "szip", "lzf": "lzf", "shuffle": "shuffle", "fletcher32": "fletcher32",
                 "scaleoffset": "scaleoffset", "nbit": "nbit"}
_NOT_COMPRESSION = {"shuffle", "fletcher32", "nbit", "scaleoffset"}
# Registered third-party filter ids (https://github.com/HDFGroup/hdf5_plugins/blob/master/docs/RegisteredFilterPlugins.md)
_PLUGIN_IDS = {32000: "lzf", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32013: "zfp", 32015: "zstd",
               32017: "sz", 32026: "blosc2"}
# Dimension-scale bookkeeping holds object references, meaningless outside the file; `dims` carries it.
_HIDDEN_ATTRS = frozenset({"DIMENSION_LIST", "REFERENCE_LIST"})
# A dimension scale's own markers: catalogued, but not attributes of the xarray variable (as h5netcdf does).
_SCALE_ATTRS = frozenset({"CLASS", "NAME"})


#: Attribute names netCDF-C writes: ``_NCProperties`` on the root group (netCDF-C >= 4.4, h5netcdf), the
#: dimension bookkeeping on root objects (older writers). In a netCDF-4 file's first KiBs as plain bytes.
NETCDF4_MARKERS = ("_NCProperties", "_Netcdf4Dimid", "_Netcdf4Coordinates")

_MARKER_BYTES = tuple(m.encode() for m in NETCDF4_MARKERS)

#: Read a file's metadata with h5py's low-level API (see :func:`_records_fast`). False: the high-level path
#: only (:func:`_records_slow`), the reference the fast path is tested against.
_FAST = True

_CHECK_IN_READ: contextvars.ContextVar[bool] = contextvars.ContextVar("metaextract_netcdf4_check_in_read",
                                                                      default=False)


class _Opened:
    """Low-level objects of one open file that the netCDF-4 check opened, for the catalog walk to use rather
    than open again: the root group, its creation property list, root members by link name."""

    __slots__ = ("root", "root_cpl", "members")

    def __init__(self) -> None:
        self.root: Any = None
        self.root_cpl: Any = None
        self.members: dict[bytes, Any] = {}

    def clear(self) -> None:
        """Let go of them (before the file closes: File.close closes whatever is still open, one by one)."""
        self.root = self.root_cpl = None
        self.members.clear()


def netcdf4_marked(f: Any, opened: _Opened | None = None) -> bool:
    """Whether an open h5py File is a netCDF-4 file: netCDF-C marks the root group or the root objects.

    `opened` (fast path only) collects the low-level objects opened on the way, for :func:`_records_fast`.
    """
    if _FAST and fast_readers():
        try:
            return _netcdf4_marked_fast(f.id, _Opened() if opened is None else opened)
        except Exception:  # whatever went wrong, the high-level check decides (and raises what it raises)
            pass
    return _netcdf4_marked_slow(f)


def _netcdf4_marked_slow(f: Any) -> bool:
    if NETCDF4_MARKERS[0] in f.attrs:
        return True
    for name in f:
        try:
            keys = f[name].attrs
            if NETCDF4_MARKERS[1] in keys or NETCDF4_MARKERS[2] in keys:
                return True
        except Exception:  # an object libhdf5 cannot open says nothing either way
            continue
    return False


def _netcdf4_marked_fast(fid: Any, opened: _Opened) -> bool:
    """:func:`_netcdf4_marked_slow` in low-level calls: the same libhdf5 calls in the same order (the root
    group's attribute, then each root link's object opened through the link and asked for the two names)."""
    import h5py

    h5a, h5o = h5py.h5a, h5py.h5o
    root = opened.root = h5o.open(fid, b"/")
    if h5a.exists(root, _MARKER_BYTES[0]):
        return True
    for raw in _root_links(root, opened):  # every link of the root group, soft and external ones too
        try:
            oid = opened.members[raw] = h5o.open(fid, raw)
            if h5a.exists(oid, _MARKER_BYTES[1]) or h5a.exists(oid, _MARKER_BYTES[2]):
                return True
        except Exception:  # an object libhdf5 cannot open says nothing either way
            continue
    return False


def _root_links(root: Any, opened: _Opened) -> list[bytes]:
    """The names iterating the File gives: h5py's FileID iterates the root group (`root`) with a GroupIter,
    the member count, then the links in name or creation order as the group's creation property list says
    (kept for the walk, which reads the root's attribute order from it)."""
    import h5py

    count = root.get_num_objs()
    if not count:
        return []
    opened.root_cpl = cpl = root.get_create_plist()
    names: list[bytes] = []
    by_creation = cpl.get_link_creation_order() & h5py.h5p.CRT_ORDER_TRACKED
    root.links.iterate(names.append, idx_type=h5py.h5.INDEX_CRT_ORDER if by_creation else h5py.h5.INDEX_NAME)
    if len(names) != count:  # GroupIter would stop short or fail: the high-level check decides
        raise RuntimeError("root group member count and links disagree")
    return names


@contextmanager
def netcdf4_check_in_read() -> Iterator[None]:
    """Within this block (a scan's extraction), an HDF5 file whose head bytes carry no netCDF-4 marker goes to
    the HDF5 backend unopened, and :meth:`HDF5Backend.read` tells netCDF-4 from plain HDF5 inside its own open
    (handing a netCDF-4 file to the netCDF backend): one open per plain HDF5 file instead of two."""
    token = _CHECK_IN_READ.set(True)
    try:
        yield
    finally:
        _CHECK_IN_READ.reset(token)


def netcdf4_check_deferred() -> bool:
    """True inside :func:`netcdf4_check_in_read`."""
    return _CHECK_IN_READ.get()


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
    if isinstance(dt, np.dtype) and dt.metadata is None and dt.kind != "O" and dt.names is None \
            and dt.subdtype is None:
        return dt.str  # plain numbers, bytes, bool: what the checks below come to, without them
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


def _filters(dset: Any, plist: Any = None) -> list[dict[str, Any]]:
    plist = plist if plist is not None else dset.id.get_create_plist()
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


def _raw_attrs(obj: Any, hidden: set[str] | None = None) -> dict[str, Any]:
    """Attribute values as h5py gives them, the hidden ones left out (their names added to `hidden`); an
    unreadable one is the exception that reading it raised (one odd attribute type must not cost the object)."""
    out: dict[str, Any] = {}
    attrs = obj.attrs  # h5py builds a new AttributeManager on every `.attrs`: once per object
    for key in attrs:
        if key in _HIDDEN_ATTRS:
            if hidden is not None:
                hidden.add(key)
            continue
        try:
            out[key] = attrs[key]
        except Exception as exc:
            out[key] = exc
    return out


def _json_attrs(obj: Any, limit: int | None) -> dict[str, Any]:
    """Attributes as catalog JSON values (an unreadable one, or one over `limit` bytes, as a marker)."""
    return capped_attrs(_raw_attrs(obj).items(), limit)


def _is_scale(dset: Any) -> bool:
    import h5py

    return dset.ndim == 1 and h5py.h5ds.is_scale(dset.id)


def _dim_names(dset: Any, raw: dict[str, Any] | None = None, hidden: set[str] | None = None
               ) -> list[str | None]:
    """Per axis: the dimension label, else the name of the first attached scale, else None. A dimension
    scale is its own dimension.

    With the dataset's attributes at hand (`raw`, and the `hidden` names :func:`_raw_attrs` left out), a
    dataset without dimension-scale attributes (``CLASS``, ``DIMENSION_LIST``, ``DIMENSION_LABELS``) costs no
    libhdf5 dimension-scale call.
    """
    if raw is not None and hidden is not None and "DIMENSION_LIST" not in hidden and \
            "DIMENSION_LABELS" not in raw and "CLASS" not in raw:
        return [None] * dset.ndim
    if _is_scale(dset):
        return [dset.name.rsplit("/", 1)[-1]]
    names: list[str | None] = []
    for dim in dset.dims:
        label = dim.label
        if not label and len(dim):
            label = dim[0].name.rsplit("/", 1)[-1]
        names.append(label or None)
    return names


def _user_fill(dset: Any, plist: Any = None) -> Any:
    """The fill value the writer set (creation property), or None: the library default (0) marks nothing as
    missing."""
    import h5py

    plist = plist if plist is not None else dset.id.get_create_plist()
    if plist.fill_value_defined() != h5py.h5d.FILL_VALUE_USER_DEFINED:
        return None
    return dset.fillvalue


def _walk(f: Any) -> list[tuple[str, Any]]:
    """(catalog name, object) of every group and dataset below the root, in h5py's visit order; an object
    libhdf5 cannot open (a corrupt header, storage past the end of the file) is the exception it raised, so
    that it costs its own row, not the file."""
    found: list[tuple[str, Any]] = []
    try:  # libhdf5 opens the objects during its own traversal: the cheap way, when every object opens
        f.visititems(lambda name, obj: found.append(("/" + name, obj)))
        return found
    except Exception:
        pass
    names: list[str] = []
    f.visit(names.append)  # names only, then one object at a time
    found = []
    for name in names:
        try:
            found.append(("/" + name, f[name]))
        except Exception as exc:
            found.append(("/" + name, exc))
    return found


def _dataset_names(f: Any) -> list[str]:
    import h5py

    return [name for name, obj in _walk(f) if isinstance(obj, (h5py.Dataset, Exception))]


def _units(attrs: dict[str, Any]) -> str | None:
    units = attrs.get("units", attrs.get("UNITS"))
    return units if isinstance(units, str) else None


def dataset_row(name: str, dset: Any, limit: int | None = None) -> dict[str, Any]:
    """One ``arrays`` row for an h5py Dataset (`limit`: the attribute JSON cap). libhdf5 itself refuses to open
    a dataset whose contiguous storage runs past the end of the file."""
    hidden: set[str] = set()
    raw = _raw_attrs(dset, hidden)
    attrs = capped_attrs(raw.items(), limit)
    plist = dset.id.get_create_plist()
    filters = _filters(dset, plist)
    compression = next((f["name"] for f in filters if f["name"] not in _NOT_COMPRESSION), None)
    try:
        fill = to_jsonable(_user_fill(dset, plist))
    except Exception:  # vlen fill values can't always be read back
        fill = None
    dims = _dim_names(dset, raw, hidden)
    dt = dset.dtype
    nbytes = int(dset.size or 0) * dt.itemsize if dt.kind != "O" else None
    return {
        "name": name,
        "kind": "dataset",
        "shape": list(dset.shape) if dset.shape is not None else None,
        "dtype": dtype_string(dt),
        "dims": [d or "" for d in dims] if any(dims) else None,
        "chunks": list(dset.chunks) if dset.chunks else None,
        "compression": compression,
        "filters": dumps(filters) if filters else None,
        "fill_value": dumps(fill) if fill is not None else None,
        "units": _units(attrs),
        "nbytes": nbytes,
        "attrs": dumps(attrs),
    }


def _records_slow(f: Any, limit: int | None) -> Records:
    """The catalog records of an open h5py File through h5py's high-level objects (the reference
    :func:`_records_fast` matches, and its fallback)."""
    import h5py

    rec = Records(format="hdf5")
    rec.attrs = _json_attrs(f, limit)
    rec.groups["/"] = {}  # its attributes are the file's (files.attrs): stored once
    rec.format_version = f"superblock {f.id.get_create_plist().get_version()[0]}"
    for full, obj in _walk(f):
        if isinstance(obj, h5py.Dataset):
            try:
                rec.arrays.append(dataset_row(full, obj, limit))
            except Exception as exc:  # one odd dataset must not hide the others
                rec.arrays.append({"name": full, "kind": "dataset", "error": f"{type(exc).__name__}: {exc}"})
        elif isinstance(obj, Exception):
            rec.arrays.append({"name": full, "kind": "dataset", "error": f"{type(obj).__name__}: {obj}"})
        elif isinstance(obj, h5py.Group):
            rec.groups[full] = {"attrs": _json_attrs(obj, limit)}
    return rec


# --------------------------------------------------------------------------- #
# the same records through h5py's low-level API
# --------------------------------------------------------------------------- #
# h5py's high-level objects cost more Python per object and attribute (locks, wrappers, per-call property
# lists) than libhdf5 spends reading a small file's metadata. The functions below make the same libhdf5 calls
# in the same order as the high-level path (h5py 3.x AttributeManager.__getitem__, Group.visititems,
# Dataset properties), so values and error messages are the same; anything out of the ordinary goes back to
# the high-level code: the whole file when the walk or a group's attributes fail, one dataset when its row
# fails, the dimension names of a dataset with dimension-scale attributes.

#: numpy dtype (with its h5py metadata) -> h5py.h5t.py_create of it: a pure translation, the same every time.
_MTYPES: dict[Any, Any] = {}


def _mtype(dt: np.dtype) -> Any:
    """``h5t.py_create(dt)``, cached for dtypes without fields or subarrays (numpy's dtype equality ignores
    the metadata h5py keeps string, vlen, enum and reference details in: it is part of the key)."""
    import h5py

    h5t = h5py.h5t
    if dt.names is not None or dt.subdtype is not None:
        return h5t.py_create(dt)
    meta = dt.metadata
    try:
        key = (dt, None if meta is None else frozenset(meta.items()))
        found = _MTYPES.get(key)
    except TypeError:  # unhashable metadata (an enum's mapping)
        return h5t.py_create(dt)
    if found is None:
        found = h5t.py_create(dt)
        if len(_MTYPES) >= 256:
            _MTYPES.clear()
        _MTYPES[key] = found
    return found


def _read_attr(oid: Any, raw: bytes) -> Any:
    """The value h5py's ``AttributeManager.__getitem__`` returns for attribute `raw` of object `oid`."""
    import h5py

    attr = h5py.h5a.open(oid, raw)
    shape = attr.shape
    if shape is None:  # null dataspace
        return h5py.Empty(attr.dtype)
    dtype = attr.dtype
    htype = _mtype(dtype)  # before the subarray split below: the memory type keeps the array type
    if dtype.subdtype is not None:  # numpy has no top-level array type: '(3,)f4' of shape (5,) is (5, 3) f4
        subdtype, subshape = dtype.subdtype
        shape = shape + subshape
        dtype = subdtype
    arr = np.zeros(shape, dtype=dtype, order="C")
    attr.read(arr, mtype=htype)
    if dtype.kind == "O":
        info = h5py.h5t.check_string_dtype(dtype)
        if info and info.length is None:  # vlen strings come back as bytes: h5py makes them str
            arr = np.array([b.decode("utf-8", "surrogateescape") for b in arr.flat], dtype=dtype).reshape(arr.shape)
    return arr[()] if arr.ndim == 0 else arr


def _decode(raw: bytes) -> str | bytes:
    """h5py's name decoding: UTF-8, else the bytes as they are."""
    try:
        return raw.decode("utf8")
    except UnicodeDecodeError:
        return raw


def _attrs_fast(oid: Any, hidden: set[str] | None = None, cpl: Any = None) -> dict[str, Any]:
    """:func:`_raw_attrs` of the object `oid` (`cpl`: its creation property list, when at hand)."""
    import h5py

    out: dict[str, Any] = {}
    h5a = h5py.h5a
    if not h5a.get_num_attrs(oid):
        return out
    if cpl is None:
        cpl = oid.get_create_plist()
    tracked = cpl.get_attr_creation_order() & h5py.h5p.CRT_ORDER_TRACKED
    names: list[bytes] = []
    h5a.iterate(oid, names.append, index_type=h5py.h5.INDEX_CRT_ORDER if tracked else h5py.h5.INDEX_NAME)
    for raw in names:
        key = _decode(raw)
        if key in _HIDDEN_ATTRS:
            if hidden is not None:
                hidden.add(key)  # type: ignore[arg-type]  # a member of _HIDDEN_ATTRS is a str
            continue
        try:
            out[key] = _read_attr(oid, raw)  # type: ignore[index]  # bytes keys as h5py gives them
        except Exception as exc:
            out[key] = exc  # type: ignore[index]
    return out


def _dataset_row_fast(name: str, did: Any, limit: int | None) -> dict[str, Any]:
    """:func:`dataset_row` of the low-level dataset `did`."""
    import h5py

    h5d = h5py.h5d
    hidden: set[str] = set()
    plist = did.get_create_plist()  # one for attributes, filters, fill value and layout
    raw = _attrs_fast(did, hidden, plist)
    attrs = capped_attrs(raw.items(), limit)
    filters = _filters(None, plist)
    compression = next((f["name"] for f in filters if f["name"] not in _NOT_COMPRESSION), None)
    dt = did.dtype
    try:
        if plist.fill_value_defined() != h5d.FILL_VALUE_USER_DEFINED:
            fill = None
        else:  # Dataset.fillvalue
            buf = np.zeros((1,), dtype=dt)
            plist.get_fill_value(buf)
            fill = to_jsonable(buf[0])
    except Exception:  # vlen fill values can't always be read back
        fill = None
    shape = did.shape  # None for a null dataspace
    if "DIMENSION_LIST" not in hidden and "DIMENSION_LABELS" not in raw and "CLASS" not in raw:
        dims: list[str | None] = [None] * (len(shape) if shape is not None else did.rank)
    else:  # dimension scales: h5py's DimensionManager
        dims = _dim_names(h5py.Dataset(did, readonly=True), raw, hidden)
    size = None if shape is None else math.prod(shape)
    chunks = plist.get_chunk() if plist.get_layout() == h5d.CHUNKED else None
    return {
        "name": name,
        "kind": "dataset",
        "shape": list(shape) if shape is not None else None,
        "dtype": dtype_string(dt),
        "dims": [d or "" for d in dims] if any(dims) else None,
        "chunks": list(chunks) if chunks else None,
        "compression": compression,
        "filters": dumps(filters) if filters else None,
        "fill_value": dumps(fill) if fill is not None else None,
        "units": _units(attrs),
        "nbytes": int(size or 0) * dt.itemsize if dt.kind != "O" else None,
        "attrs": dumps(attrs),
    }


def _records_fast(f: Any, limit: int | None, opened: _Opened | None = None) -> Records | None:
    """:func:`_records_slow` of an open h5py File through the low-level API, or None when the file needs the
    high-level path: an object libhdf5 cannot open, a name that is not UTF-8, a group whose attributes
    cannot be listed (the high-level path then makes the error rows, or raises, exactly as before).
    `opened`: what :func:`netcdf4_marked` opened already."""
    import h5py

    h5o, DatasetID, GroupID = h5py.h5o, h5py.h5d.DatasetID, h5py.h5g.GroupID
    opened = _Opened() if opened is None else opened
    members = opened.members
    fid = f.id
    try:
        rec = Records(format="hdf5")
        root = opened.root if opened.root is not None else h5o.open(fid, b"/")
        rec.attrs = capped_attrs(_attrs_fast(root, cpl=opened.root_cpl).items(), limit)
        rec.groups["/"] = {}
        rec.format_version = f"superblock {fid.get_create_plist().get_version()[0]}"
        names: list[bytes] = []
        h5o.visit(fid, names.append)  # what visititems walks: every object once, by its first name
        for raw in names:
            full = "/" + raw.decode("utf8")
            oid = members.get(raw)  # the marker check opened the root's members: the same name, the same object
            if oid is None:
                oid = h5o.open(fid, raw)
            if isinstance(oid, DatasetID):
                try:
                    row = _dataset_row_fast(full, oid, limit)
                except Exception:  # the high-level row: the same values, or the same error row
                    row = _dataset_row_slow(full, h5py.Dataset(oid, readonly=True), limit)
                rec.arrays.append(row)
            elif isinstance(oid, GroupID):
                rec.groups[full] = {"attrs": capped_attrs(_attrs_fast(oid).items(), limit)}
            # a committed datatype: not catalogued
        return rec
    except Exception:
        return None


def _dataset_row_slow(full: str, dset: Any, limit: int | None) -> dict[str, Any]:
    try:
        return dataset_row(full, dset, limit)
    except Exception as exc:  # one odd dataset must not hide the others
        return {"name": full, "kind": "dataset", "error": f"{type(exc).__name__}: {exc}"}


# --------------------------------------------------------------------------- #
# lazy datasets
# --------------------------------------------------------------------------- #
def _open_h5(path: str) -> Any:
    import h5py

    return h5py.File(path, "r")


class _FileMap:
    """A read-only memory map of a whole file (pages are mapped only as they are read)."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self.map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.map.close()  # BufferError while a view is alive: the cache ignores it, the GC unmaps later


#: Open h5py files of this process (the handle array reads use; callers hold HDF5_LOCK).
H5_FILES = HandleCache(_open_h5, HDF5_LOCK)
_MAPS = HandleCache(_FileMap, threading.Lock(), maxsize=16)
# Per (path, name, stamp): how an HDF5 dataset is stored, if its bytes can be used as they are (see _layout).
_LAYOUTS: OrderedDict[tuple[str, str, tuple[int, int]], Any] = OrderedDict()
_LAYOUTS_LOCK = threading.Lock()
_MIN_MAPPED_PIECE = 1 << 18  # below this a piece costs more per call than the copy it saves
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # POSIX; elsewhere pages leave when the map is closed


class HDF5Array(MemberProxy):
    """One HDF5 dataset (or the HDF5 dataset behind a netCDF-4 variable), read under :data:`HDF5_LOCK`."""

    reads_in_place: ClassVar[bool] = True  # read_region fills the caller's buffer (h5py read_direct)
    maps_regions: ClassVar[bool] = True

    def __init__(self, path: str, name: str, shape: Sequence[int], dtype: Any, *, strings: bool = False) -> None:
        super().__init__(path, name, shape, dtype)
        self.strings = strings

    def _read(self, key: tuple[slice, ...]) -> Any:
        with HDF5_LOCK:
            dset = H5_FILES.get(self.path)[self.member]
            if self.strings:
                dset = dset.asstr()
            return dset[key] if key else dset[()]

    def read_region(self, region: tuple[slice, ...], out: np.ndarray | None = None) -> np.ndarray:  # noqa: D102
        if out is None or self.strings or not region or 0 in out.shape:
            return self[region]
        self.count_read()
        with HDF5_LOCK:
            H5_FILES.get(self.path)[self.member].read_direct(out, region)  # HDF5 converts byte order if needed
        return out

    def iter_region(self, region: tuple[slice, ...]) -> Iterator[np.ndarray] | None:
        """The values of `region` as pieces in file order (each element once; the order of elements within
        the region is lost), straight from the page cache through a read-only memory map: no copy.

        Only for datasets whose bytes are the values (no filters, native byte order, a plain file) and
        regions made of whole allocated chunks (or one contiguous range) of at least ~256 KiB per piece;
        None otherwise, and the caller reads with :meth:`read_region`. Each piece's pages are dropped from
        this process's mapping once the caller asks for the next one, so resident memory stays one piece.
        """
        return None if self.strings else mapped_region(self.path, self.member, region, self.dtype)


def mapped_region(path: str, name: str, region: tuple[slice, ...], dtype: np.dtype) -> Iterator[np.ndarray] | None:
    """Pieces of `region` of HDF5 dataset `name` straight from a memory map of the file, or None."""
    if not region or (layout := _layout(path, name)) is None or layout[2] != dtype:
        return None
    spans = _spans(path, name, region, layout)
    if spans is None:
        return None
    ArrayProxy.count_read()
    return _mapped_pieces(_MAPS.get(path).map, spans, dtype)


def _layout(path: str, name: str) -> Any:
    """("contiguous", byte offset, dtype) or ("chunked", chunk shape, dtype) when the stored bytes are the values
    as numpy would read them, else None (also when h5py cannot open the file or find `name`: netCDF-3 files).
    Cached per process and file version."""
    key = (path, name, stamp(path))
    with _LAYOUTS_LOCK:
        if key in _LAYOUTS:
            return _LAYOUTS[key]
    try:
        layout = _inspect(path, name)
    except (OSError, KeyError, ValueError, TypeError):
        layout = None
    with _LAYOUTS_LOCK:
        _LAYOUTS[key] = layout
        while len(_LAYOUTS) > 256:
            _LAYOUTS.popitem(last=False)
    return layout


def _inspect(path: str, name: str) -> tuple[str, Any, np.dtype] | None:
    import h5py

    with HDF5_LOCK:
        dset = H5_FILES.get(path)[name]
        dcpl = dset.id.get_create_plist()
        layout: tuple[str, Any, np.dtype] | None = None
        plain = (dset.file.driver == "sec2" and dcpl.get_nfilters() == 0 and dcpl.get_external_count() == 0
                 and dset.dtype.isnative and dset.dtype.kind in "biuf" and dset.dtype.fields is None)
        if plain and dcpl.get_layout() == h5py.h5d.CHUNKED:
            layout = ("chunked", tuple(dset.chunks), dset.dtype)
        elif plain and dcpl.get_layout() == h5py.h5d.CONTIGUOUS and dset.id.get_offset() is not None:
            layout = ("contiguous", int(dset.id.get_offset()), dset.dtype)
    return layout


def _spans(path: str, name: str, region: tuple[slice, ...], layout: tuple[str, Any, np.dtype]
           ) -> list[tuple[int, int]] | None:
    """(byte offset, bytes) ranges of the file holding exactly the values of `region` (dataset stored as
    `layout`, from :func:`_layout`), adjacent ranges merged, or None when the region is not made of whole
    allocated chunks / one contiguous range."""
    with HDF5_LOCK:
        dset = H5_FILES.get(path)[name]
        shape, itemsize = dset.shape, dset.dtype.itemsize
        if layout[0] == "contiguous":
            inner = region[1:]
            if any(r.start != 0 or r.stop != n for r, n in zip(inner, shape[1:])):
                return None  # not one contiguous run of bytes
            row = math.prod(shape[1:]) * itemsize
            spans = [(layout[1] + region[0].start * row, (region[0].stop - region[0].start) * row)]
        else:
            chunks = layout[1]
            if any(r.start % c or r.stop % c for r, c in zip(region, chunks)):
                return None  # off the chunk grid, or an edge chunk (stored whole: not only the values)
            nbytes = math.prod(chunks) * itemsize
            spans = []
            for corner in itertools.product(*(range(r.start, r.stop, c) for r, c in zip(region, chunks))):
                info = dset.id.get_chunk_info_by_coord(corner)
                if info.byte_offset is None or info.filter_mask or info.size != nbytes:
                    return None  # never written (fill value) or stored otherwise
                spans.append((int(info.byte_offset), nbytes))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for off, size in spans:
        if merged and merged[-1][0] + merged[-1][1] == off:
            merged[-1] = (merged[-1][0], merged[-1][1] + size)
        else:
            merged.append((off, size))
    if sum(size for _, size in merged) / len(merged) < _MIN_MAPPED_PIECE:
        return None
    return merged


def _mapped_pieces(mm: mmap.mmap, spans: list[tuple[int, int]], dtype: np.dtype) -> Iterator[np.ndarray]:
    for off, size in spans:
        try:
            yield np.frombuffer(mm, dtype=dtype, count=size // dtype.itemsize, offset=off)
        finally:  # the caller is done with this piece: unmap its pages here (the page cache keeps them)
            if _DONTNEED is not None:
                start = off - off % mmap.PAGESIZE
                mm.madvise(_DONTNEED, start, off + size - start)


def dataset_spec(path: str, dset: Any) -> ArraySpec:
    """The :class:`ArraySpec` of an open h5py Dataset (caller holds :data:`HDF5_LOCK`)."""
    import h5py

    is_scale = _is_scale(dset)
    attrs = {k: as_text(v) for k, v in _raw_attrs(dset).items()
             if not isinstance(v, Exception) and not (is_scale and k in _SCALE_ATTRS)}
    dt = dset.dtype
    strings = h5py.check_string_dtype(dt) is not None and dt.kind == "O"
    if "_FillValue" not in attrs and dt.kind in "biufc":
        fill = _user_fill(dset)
        if fill is not None:
            attrs["_FillValue"] = np.array(fill, dtype=dt)[()]
    shape = dset.shape if dset.shape is not None else ()
    proxy = HDF5Array(path, dset.name, shape, np.dtype(object) if strings else dt, strings=strings)
    chunks = tuple(dset.chunks) if dset.chunks else None
    return ArraySpec(proxy, unique_dims(_dim_names(dset), len(shape)), attrs, chunks)


class HDF5Backend(FormatBackend):
    """Plain HDF5 files; netCDF-4 files (also HDF5) are claimed first by the netCDF backend."""

    name = "hdf5"
    priority = 50
    supports_arrays = True
    suffixes = (".h5", ".hdf5", ".he5", ".hdf")
    requires = ("h5py",)

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return has_hdf5_magic(head)

    def read(self, path: str) -> Records:  # noqa: D102
        import h5py

        limit = attr_json_limit()
        with HDF5_LOCK, h5py.File(path, "r") as f:
            opened = _Opened()  # the marker check's open objects, for the walk
            try:
                if not (_CHECK_IN_READ.get() and netcdf4_marked(f, opened)):
                    return self._records(f, limit, opened)
            finally:
                opened.clear()  # released before the file closes (File.close closes what is still open)
        # netCDF-4 without a marker in its head bytes: h5py's handle is closed first, netCDF-C opens it now.
        from metaextract_dask.formats import get_backend

        try:
            netcdf = get_backend("netcdf")
            netcdf.require()
        except (KeyError, ImportError):  # no netCDF backend here: its HDF5 view is still a catalog entry
            with HDF5_LOCK, h5py.File(path, "r") as f:
                return self._records(f, limit)
        return netcdf.read(path)

    @staticmethod
    def _records(f: Any, limit: int | None, opened: _Opened | None = None) -> Records:
        if _FAST and fast_readers():
            rec = _records_fast(f, limit, opened)
            if rec is not None:
                return rec
        return _records_slow(f, limit)

    def list_arrays(self, path: str) -> list[str]:  # noqa: D102
        import h5py

        with HDF5_LOCK, h5py.File(path, "r") as f:
            return _dataset_names(f)

    def open_array(self, path: str, name: str) -> ArraySpec:  # noqa: D102
        import h5py

        with HDF5_LOCK:
            f = H5_FILES.get(path)  # the handle reads will use too: one open per file and process, not per array
            obj = f.get(name) if name.startswith("/") else None
            if not isinstance(obj, h5py.Dataset):
                raise missing_array("HDF5", path, name, _dataset_names(f))
            return dataset_spec(path, obj)

    def file_attrs(self, path: str) -> dict[str, Any]:  # noqa: D102
        with HDF5_LOCK:
            return _json_attrs(H5_FILES.get(path), attr_json_limit())

    def proxy_from_row(self, path: str, row: Any, format_version: str | None = None) -> HDF5Array | None:  # noqa: D102
        dtype = row.get("dtype")
        if not dtype or dtype.startswith(("vlen", "[")) or row.get("shape") is None:
            return None
        dt = np.dtype(dtype)
        return HDF5Array(path, row["name"], row["shape"], dt) if dt.kind in "biufcmM" else None

    def group_attrs(self, path: str, group: str) -> dict[str, Any]:  # noqa: D102
        with HDF5_LOCK:
            node = H5_FILES.get(path)[group or "/"]
            return {k: as_text(v) for k, v in _raw_attrs(node).items() if not isinstance(v, Exception)}

    def list_groups(self, path: str) -> list[str]:  # noqa: D102
        import h5py

        with HDF5_LOCK:
            return ["/", *(name for name, obj in _walk(H5_FILES.get(path)) if isinstance(obj, h5py.Group))]
