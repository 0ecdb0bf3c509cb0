"""netCDF backend (netCDF4-python): classic netCDF-3 and HDF5-based netCDF-4, with groups and CF attributes.

One backend, two catalog formats: ``netcdf3`` and ``netcdf4``. A netCDF-4 variable is also an HDF5 dataset,
so its plain stored bytes take the HDF5 backend's memory-map path when profiled.
"""

from __future__ import annotations

import os
import re
import struct
import unicodedata
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
    dt = var.dtype
    itemsize = np.dtype(dt).itemsize if dt is not str else None
    chunks = _chunks(var, nc3)
    return _row(name, attrs, filters, var.shape, _dtype(var, nc3), itemsize, list(var.dimensions), chunks, nc3,
                file_size)


def _row(name: str, attrs: dict[str, Any], filters: dict[str, Any], shape: tuple[int, ...], dtype: str,
         itemsize: int | None, dims: list[str], chunks: tuple[int, ...] | None, nc3: bool,
         file_size: int) -> dict[str, Any]:
    """One ``arrays`` row from a variable's catalog values (netCDF4-python's or the fast readers')."""
    compression = next((c for c in _NC_COMPRESSORS if filters.get(c)), None)
    fill = attrs.get("_FillValue")
    nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize if itemsize else None
    # netCDF-3 stores every value (no compression, no sparse chunks): they must fit in the file
    problem = truncation(nbytes, file_size, "the variable's shape") if nc3 and nbytes else None
    units = attrs.get("units")
    return {
        "name": name,
        "kind": "variable",
        "shape": list(shape),
        "dtype": dtype,
        "dims": dims,
        "chunks": list(chunks) if chunks else None,
        "compression": compression,
        "filters": dumps(filters) if filters else None,
        "fill_value": dumps(fill) if fill is not None else None,
        "units": units if isinstance(units, str) else None,
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


#: The catalog reads netCDF-3 headers and netCDF-4 metadata itself where it can prove netCDF4-python would give
#: the same records (and leaves everything else to netCDF4-python); False reads every file with netCDF4-python.
FAST_READ = True


class _Decline(Exception):
    """The fast reader leaves this file to netCDF4-python (anything it cannot prove it reads identically)."""


class _Short(Exception):
    """The netCDF-3 header runs past the bytes read so far."""


def _read_fast(path: str) -> Records | None:
    """The records of a netCDF file read without netCDF-C, or None where netCDF4-python must read it (an
    unusual, damaged or unreadable file: its records, errors included, stay netCDF4-python's)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, min(size, _NC3_HEAD), 0)
        if head[:4] in _NC3_MAGIC:
            while True:
                try:
                    return _nc3_records(head, size)
                except _Short:
                    if len(head) >= min(size, _NC3_HEAD_MAX):
                        return None
                    head = os.pread(fd, min(size, _NC3_HEAD_MAX, 16 * len(head)), 0)
        if head[:8] == b"\x89HDF\r\n\x1a\n":
            return _nc4_records(path, size)
        return None
    except (_Decline, OSError, ValueError, OverflowError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


# --- netCDF-3 (classic, 64-bit offset, 64-bit data): the header, read as the format specification spells it --

_NC3_HEAD = 65536  # first read; a longer header is read again whole (up to _NC3_HEAD_MAX)
_NC3_HEAD_MAX = 1 << 24
_NC3_MODELS = {1: "NETCDF3_CLASSIC", 2: "NETCDF3_64BIT_OFFSET", 5: "NETCDF3_64BIT_DATA"}
# nc_type -> numpy type as netCDF4-python maps it (big-endian on disk); CDF-1/2 know types 1-6 only
_NC3_TYPES = {1: "i1", 2: "S1", 3: "i2", 4: "i4", 5: "f4", 6: "f8", 7: "u1", 8: "u2", 9: "u4", 10: "i8", 11: "u8"}
_NC3_DISK = {t: np.dtype(">" + code) for t, code in _NC3_TYPES.items()}
_NC3_NATIVE = {t: dt.newbyteorder("=") for t, dt in _NC3_DISK.items()}
_NC3_DTYPE = {t: dt.str for t, dt in _NC3_DISK.items()}  # what _dtype(var, nc3=True) says
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_NC_DIMENSION, _NC_VARIABLE, _NC_ATTRIBUTE = 10, 11, 12
# A name netCDF-C reads as it is (no normalisation can change it) and netCDF4-python decodes: printable,
# no '/', no leading or trailing blank; anything else is declined.
_NC3_ASCII_NAME = re.compile(rb"[\x21-\x2e\x30-\x7e](?:[\x20-\x2e\x30-\x7e]*[\x21-\x2e\x30-\x7e])?")
_NC3_NAME = re.compile(r"[^\x00-\x20\x7f/](?:[^\x00-\x1f\x7f/]*[^\x00-\x20\x7f/])?")


class _NC3Header:
    """A cursor over netCDF-3 header bytes; every count is checked against the bytes there are."""

    __slots__ = ("buf", "pos", "version", "count")

    def __init__(self, buf: bytes, version: int) -> None:
        self.buf = buf
        self.pos = 4
        self.version = version
        self.count = self.u64 if version == 5 else self.i32  # NON_NEG: 64 bits in CDF-5

    def u32(self) -> int:
        pos = self.pos
        if pos + 4 > len(self.buf):
            raise _Short
        self.pos = pos + 4
        return _U32.unpack_from(self.buf, pos)[0]  # type: ignore[no-any-return]

    def i32(self) -> int:
        value = self.u32()
        if value >= 1 << 31:  # a negative count (or STREAMING): netCDF-C's business
            raise _Decline
        return value

    def u64(self) -> int:
        pos = self.pos
        if pos + 8 > len(self.buf):
            raise _Short
        self.pos = pos + 8
        value: int = _U64.unpack_from(self.buf, pos)[0]
        if value >= 1 << 62:
            raise _Decline
        return value

    def take(self, nbytes: int) -> int:
        """Skip `nbytes` (padded to 4) and return where they start."""
        pos = self.pos
        end = pos + ((nbytes + 3) & ~3)
        if end > len(self.buf):
            raise _Short
        self.pos = end
        return pos

    def name(self) -> str:
        n = self.count()
        if n == 0 or n > 256:  # NC_MAX_NAME
            raise _Decline
        pos = self.take(n)
        raw = self.buf[pos:pos + n]
        if _NC3_ASCII_NAME.fullmatch(raw):
            return raw.decode("ascii")
        text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError: declined
        if not _NC3_NAME.fullmatch(text) or not unicodedata.is_normalized("NFC", text):
            raise _Decline
        return text

    def list_head(self, tag: int) -> int:
        """The element count of a dim/att/var list (ABSENT is a zero tag and count)."""
        found = self.u32()
        n = self.count()
        if found != tag and (found != 0 or n != 0):
            raise _Decline
        return n

    def attrs(self) -> dict[str, Any]:
        """An attribute list, each value as netCDF4-python's ``getncattr`` returns it."""
        out: dict[str, Any] = {}
        for _ in range(self.list_head(_NC_ATTRIBUTE)):
            name = self.name()
            nc_type = self.u32()
            n = self.count()
            if nc_type not in _NC3_TYPES or (nc_type > 6 and self.version != 5) or name in out:
                raise _Decline
            disk = _NC3_DISK[nc_type]
            pos = self.take(n * disk.itemsize)
            if nc_type == 2:  # NC_CHAR: netCDF4-python decodes (but keeps a _FillValue's bytes) and drops NULs
                raw = self.buf[pos:pos + n]
                out[name] = raw if name == "_FillValue" else raw.decode("utf-8", "replace").replace("\x00", "")
            elif n == 1:
                out[name] = np.frombuffer(self.buf, disk, 1, pos)[0]  # a numpy scalar (native order)
            else:
                out[name] = np.frombuffer(self.buf, disk, n, pos).astype(_NC3_NATIVE[nc_type])
        return out


def _nc3_records(buf: bytes, file_size: int) -> Records:
    """The records netCDF4-python gives for a netCDF-3 file, from its header bytes `buf`.

    Raises
    ------
    _Short
        The header runs past `buf`.
    _Decline
        Anything this reader does not prove netCDF-C reads as written: an unknown type, a name netCDF-C might
        treat otherwise, STREAMING record counts, sizes that do not match the shapes, variables out of order,
        overlapping or past the end of the file (netCDF-C may refuse those, or say so its own way).
    """
    version, numrecs, dims, record_dim, gattrs, variables, header_end = _nc3_parse(buf)
    names = [d[0] for d in dims]
    limit = attr_json_limit()
    rec = Records(format="netcdf3", format_version=_NC3_MODELS[version])
    rec.attrs = capped_attrs(gattrs.items(), limit)
    rec.groups["/"] = {"dims": {name: numrecs if i == record_dim else length for i, (name, length) in
                                enumerate(dims)},
                       "unlimited": [names[record_dim]] if record_dim >= 0 else []}
    _nc3_check_offsets(variables, numrecs, header_end, file_size)
    for name, dimids, attrs, nc_type, _r, _b, _v, _begin, shape in variables:
        rec.arrays.append(_row(f"/{name}", capped_attrs(attrs.items(), limit), {}, shape, _NC3_DTYPE[nc_type],
                               _NC3_DISK[nc_type].itemsize, [names[d] for d in dimids], None, True, file_size))
    return rec


def _nc3_header_end(buf: bytes) -> int:
    """Where the header in `buf` ends (for tests)."""
    return _nc3_parse(buf)[-1]


def _nc3_parse(buf: bytes) -> tuple[int, int, list[tuple[str, int]], int, dict[str, Any], list[tuple[Any, ...]], int]:
    """The header's version, record count, dimensions, record dimension index (-1: none), global attributes,
    variables ``(name, dimids, attrs, nc_type, is_record, value_bytes, vsize, begin, shape)`` and end."""
    version = buf[3]
    h = _NC3Header(buf, version)
    numrecs = h.count()
    dims: list[tuple[str, int]] = []
    record_dim = -1
    for i in range(h.list_head(_NC_DIMENSION)):
        name = h.name()
        length = h.count()
        if length == 0:
            if record_dim >= 0:
                raise _Decline
            record_dim = i
        dims.append((name, length))
    names = [d[0] for d in dims]
    if len(set(names)) != len(names):
        raise _Decline
    gattrs = h.attrs()
    variables = []
    seen: set[str] = set()
    for _ in range(h.list_head(_NC_VARIABLE)):
        name = h.name()
        dimids = [h.count() for _ in range(h.count())]
        attrs = h.attrs()
        nc_type = h.u32()
        vsize = h.count() if version == 5 else h.u32()
        begin = h.u64() if version != 1 else h.u32()
        if nc_type not in _NC3_TYPES or (nc_type > 6 and version != 5) or name in seen:
            raise _Decline
        seen.add(name)
        if any(d >= len(dims) for d in dimids) or record_dim in dimids[1:]:
            raise _Decline
        is_rec = bool(dimids) and dimids[0] == record_dim
        value_bytes = _NC3_DISK[nc_type].itemsize
        for d in dimids[1:] if is_rec else dimids:
            value_bytes *= dims[d][1]
        if vsize != (value_bytes + 3) & ~3:  # netCDF-C recomputes it (large variables write 2**32 - 1)
            raise _Decline
        shape = tuple(numrecs if d == record_dim else dims[d][1] for d in dimids)
        variables.append((name, dimids, attrs, nc_type, is_rec, value_bytes, vsize, begin, shape))
    return version, numrecs, dims, record_dim, gattrs, variables, h.pos


def _nc3_check_offsets(variables: list[tuple[Any, ...]], numrecs: int, header_end: int, file_size: int) -> None:
    """Decline where netCDF-C's own offset checks (NC_check_voffs) could refuse the file, or its data is not
    all there: variables in order, fixed-size ones first, none overlapping, all inside the file."""
    end = data_end = header_end
    for _n, _d, _a, _t, is_rec, value_bytes, vsize, begin, _s in variables:
        if not is_rec:
            if begin < end:
                raise _Decline
            end = begin + vsize
            data_end = max(data_end, begin + value_bytes)
    rec_vars = [v for v in variables if v[4]]
    recsize = sum(v[6] for v in rec_vars)
    if len(rec_vars) == 1:  # one record variable: records are not padded
        recsize = rec_vars[0][5]
    for _n, _d, _a, _t, _r, value_bytes, vsize, begin, _s in rec_vars:
        if begin < end:
            raise _Decline
        end = begin + vsize
        if numrecs:
            data_end = max(data_end, begin + (numrecs - 1) * recsize + value_bytes)
    if data_end > file_size:
        raise _Decline


# --- netCDF-4: the HDF5 file through h5py's low-level API, read the way netCDF-C's libhdf5 reads it --------------

# Attributes netCDF-C hides (nc4internal.c NC_reserved; _nc3_strict marks the classic model)
_NC4_HIDDEN = frozenset({
    "CLASS", "DIMENSION_LIST", "NAME", "REFERENCE_LIST", "_ARRAY_DIMENSIONS", "_Codecs", "_Format", "_IsNetcdf4",
    "_NCProperties", "_Netcdf4Coordinates", "_Netcdf4Dimid", "_SuperblockVersion", "_nc3_strict", "_nczarr_attr",
    "_nczarr_group", "_nczarr_array", "_nczarr_superblock"})
_NC4_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable."
_NC4_NON_COORD = "_nc4_non_coord_"
_NC4_NUMERIC = frozenset({"i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"})
# netCDF4-python's Variable.filters() keys, in its order (the catalog keeps the true ones, in that order)
_NC4_FILTER_KEYS = ("zlib", "szip", "zstd", "bzip2", "blosc", "shuffle", "complevel", "fletcher32")


class _NC4Var:
    """One netCDF-4 variable as netCDF-C sees it."""

    __slots__ = ("name", "dimids", "extent", "dtype", "itemsize", "filters", "chunks", "attrs")

    def __init__(self, name: str, dimids: list[int], extent: tuple[int, ...], dtype: str, itemsize: int | None,
                 filters: dict[str, Any], chunks: tuple[int, ...] | None, attrs: dict[str, Any]) -> None:
        self.name, self.dimids, self.extent, self.dtype = name, dimids, extent, dtype
        self.itemsize, self.filters, self.chunks, self.attrs = itemsize, filters, chunks, attrs


class _NC4Group:
    """One netCDF-4 group: attributes, dimensions ``(dimid, name, scale length, unlimited)`` in file order,
    variables and child groups in netCDF-C's order."""

    __slots__ = ("path", "parent", "attrs", "dims", "vars", "children")

    def __init__(self, path: str, parent: _NC4Group | None) -> None:
        self.path, self.parent = path, parent
        self.attrs: dict[str, Any] = {}
        self.dims: list[tuple[int, str, int, bool]] = []
        self.vars: list[_NC4Var] = []
        self.children: list[_NC4Group] = []


def _nc4_attr_value(attr: Any, name: str) -> Any:
    """An HDF5 attribute's value as netCDF-C reads it (read_hdf5_att) and netCDF4-python returns it."""
    from h5py import h5s, h5t

    tid = attr.get_type()
    space = attr.get_space()
    kind = space.get_simple_extent_type()
    shape = space.get_simple_extent_dims() if kind == h5s.SIMPLE else ()
    if kind not in (h5s.SCALAR, h5s.SIMPLE) or len(shape) > 1:
        raise _Decline
    cls = tid.get_class()
    if cls == h5t.STRING:
        if tid.is_variable_str():  # NC_STRING: str, or a list of them
            if kind != h5s.SCALAR and not shape[0]:
                raise _Decline
            arr = np.empty(shape, dtype=object)
            attr.read(arr, mtype=tid)
            values = [(v if isinstance(v, bytes) else str(v).encode()).decode("utf-8", "replace").replace("\x00", "")
                      for v in arr.reshape(-1).tolist()]
            return values[0] if len(values) == 1 else values
        if kind != h5s.SCALAR:  # an array of fixed-length strings: NC_STRING from fixed strings
            raise _Decline
        size = tid.get_size()
        arr = np.empty((), dtype=f"S{size}")
        attr.read(arr, mtype=tid)  # the stored bytes, padding and all, as netCDF-C's native-type read
        raw = arr.tobytes()
        return raw if name == "_FillValue" else raw.decode("utf-8", "replace").replace("\x00", "")
    if cls not in (h5t.INTEGER, h5t.FLOAT):
        raise _Decline
    disk = tid.dtype
    code = f"{disk.kind}{disk.itemsize}"
    if code not in _NC4_NUMERIC or tid.get_order() not in (h5t.ORDER_LE, h5t.ORDER_BE):
        raise _Decline
    arr = np.empty(shape, dtype=np.dtype(code))
    if arr.size:
        attr.read(arr)
    if kind == h5s.SCALAR:
        return arr.reshape(1)[0]
    return arr[0] if shape[0] == 1 else arr


def _nc4_attrs(obj: Any, plist: Any) -> tuple[dict[str, Any], set[str]]:
    """The attributes netCDF-C shows, in creation order, and the names of all (hidden ones included)."""
    from h5py import h5, h5a, h5p

    names: list[bytes] = []
    if h5a.get_num_attrs(obj):
        if not plist.get_attr_creation_order() & h5p.CRT_ORDER_TRACKED:
            raise _Decline  # netCDF-C iterates in creation order: without it, an order HDF5 leaves open
        h5a.iterate(obj, names.append, index_type=h5.INDEX_CRT_ORDER)
    out: dict[str, Any] = {}
    every: set[str] = set()
    for raw in names:
        name = raw.decode("utf-8")
        every.add(name)
        if name in _NC4_HIDDEN:
            continue
        out[name] = _nc4_attr_value(h5a.open(obj, raw), name)
    return out, every


def _nc4_int_attr(obj: Any, name: bytes) -> list[int]:
    """A hidden integer attribute (``_Netcdf4Dimid``, ``_Netcdf4Coordinates``) as netCDF-C reads it."""
    from h5py import h5a, h5s, h5t

    attr = h5a.open(obj, name)
    tid = attr.get_type()
    space = attr.get_space()
    kind = space.get_simple_extent_type()
    if tid.get_class() != h5t.INTEGER or kind not in (h5s.SCALAR, h5s.SIMPLE):
        raise _Decline
    shape = space.get_simple_extent_dims() if kind == h5s.SIMPLE else ()
    arr = np.empty(shape, dtype="i4")
    if arr.size:
        attr.read(arr)
    if tid.dtype.kind not in "iu" or tid.get_size() > 4:
        raise _Decline
    return [int(v) for v in arr.reshape(-1)]


def _nc4_string_attr(obj: Any, name: bytes) -> bytes:
    """A fixed-length string attribute's bytes up to the first NUL (``CLASS``, ``NAME``)."""
    from h5py import h5a, h5s, h5t

    attr = h5a.open(obj, name)
    tid = attr.get_type()
    if tid.get_class() != h5t.STRING or tid.is_variable_str() or \
            attr.get_space().get_simple_extent_type() != h5s.SCALAR:
        raise _Decline
    arr = np.empty((), dtype=f"S{tid.get_size()}")
    attr.read(arr, mtype=tid)
    return arr.tobytes().split(b"\x00", 1)[0]


def _nc4_dataset(group: _NC4Group, name: str, dsid: Any, alldims: dict[int, tuple[_NC4Group, str, int, bool]]) -> None:
    """Add one HDF5 dataset to `group`: a dimension, a variable or both (netCDF-C's read_dataset)."""
    from h5py import h5d, h5s, h5t

    space = dsid.get_space()
    kind = space.get_simple_extent_type()
    if kind == h5s.SCALAR:
        extent: tuple[int, ...] = ()
        maxshape: tuple[int, ...] = ()
    elif kind == h5s.SIMPLE:
        extent = space.get_simple_extent_dims()
        maxshape = space.get_simple_extent_dims(True)
    else:
        raise _Decline
    dcpl = dsid.get_create_plist()
    attrs, every = _nc4_attrs(dsid, dcpl)
    ndims = len(extent)
    dimids: list[int] | None = None
    if "_Netcdf4Coordinates" in every:
        dimids = _nc4_int_attr(dsid, b"_Netcdf4Coordinates")
        if len(dimids) != ndims:  # netCDF-C refuses the file
            raise _Decline
    if "CLASS" in every:
        if _nc4_string_attr(dsid, b"CLASS") != b"DIMENSION_SCALE" or ndims != 1 or "_Netcdf4Dimid" not in every:
            raise _Decline
        ids = _nc4_int_attr(dsid, b"_Netcdf4Dimid")
        if len(ids) != 1 or ids[0] < 0 or ids[0] in alldims:
            raise _Decline
        dimid = ids[0]
        unlimited = maxshape[0] == h5s.UNLIMITED
        group.dims.append((dimid, name, extent[0], unlimited))
        alldims[dimid] = (group, name, extent[0], unlimited)
        if "NAME" in every and _nc4_string_attr(dsid, b"NAME").startswith(_NC4_DIM_ONLY):
            return  # a dimension without a variable
        dimids = [dimid]  # a coordinate variable
    elif name.startswith(_NC4_NON_COORD) and len(name) > len(_NC4_NON_COORD):
        name = name[len(_NC4_NON_COORD):]
    if dimids is None:
        if ndims:  # dimension scale matching or phony dimensions: netCDF-C's business
            raise _Decline
        dimids = []
    tid = dsid.get_type()
    cls = tid.get_class()
    itemsize: int | None
    if cls == h5t.STRING:
        if tid.is_variable_str():
            dtype, itemsize = "vlen-str", None
        elif tid.get_size() == 1:
            dtype, itemsize = "|S1", 1
        else:
            raise _Decline
    elif cls in (h5t.INTEGER, h5t.FLOAT):
        disk = tid.dtype
        code = f"{disk.kind}{disk.itemsize}"
        order = tid.get_order()
        if code not in _NC4_NUMERIC or order not in (h5t.ORDER_LE, h5t.ORDER_BE):
            raise _Decline
        # netCDF4-python reports native order, and big-endian storage through endian() (see _dtype)
        dt = np.dtype(code)
        dtype = dt.newbyteorder(">").str if dt.itemsize > 1 and order == h5t.ORDER_BE else dt.str
        itemsize = dt.itemsize
    else:
        raise _Decline
    flags = dict.fromkeys(_NC4_FILTER_KEYS, False)
    flags["complevel"] = 0
    for i in range(dcpl.get_nfilters()):
        code_, _flags, values, _name = dcpl.get_filter(i)
        if code_ == 1 and len(values) == 1 and values[0] <= 9:
            flags["zlib"], flags["complevel"] = True, int(values[0])
        elif code_ == 2:
            flags["shuffle"] = True
        elif code_ == 3:
            flags["fletcher32"] = True
        else:  # szip, zstd, blosc, plugins: as netCDF-C and this build of netCDF4-python report them
            raise _Decline
    chunks = tuple(int(c) for c in dcpl.get_chunk()) if dcpl.get_layout() == h5d.CHUNKED else None
    filters = {k: v for k, v in flags.items() if v}
    group.vars.append(_NC4Var(name, dimids, extent, dtype, itemsize, filters, chunks, attrs))


def _nc4_group(gid: Any, group: _NC4Group, alldims: dict[int, tuple[_NC4Group, str, int, bool]]) -> None:
    """Read a group and, after its own links, its child groups (netCDF-C's rec_read_metadata)."""
    from h5py import h5, h5d, h5g, h5l, h5o, h5p

    gcpl = gid.get_create_plist()
    group.attrs, _every = _nc4_attrs(gid, gcpl)
    index = h5.INDEX_CRT_ORDER if gcpl.get_link_creation_order() & h5p.CRT_ORDER_TRACKED else h5.INDEX_NAME
    links: list[bytes] = []
    gid.links.iterate(links.append, idx_type=index)
    children = []
    for raw in links:
        if gid.links.get_info(raw).type != h5l.TYPE_HARD:
            raise _Decline
        name = raw.decode("utf-8")
        oid = h5o.open(gid, raw)
        if isinstance(oid, h5g.GroupID):
            children.append((name, oid))
        elif isinstance(oid, h5d.DatasetID):
            _nc4_dataset(group, name, oid, alldims)
        else:  # a named (user-defined) type
            raise _Decline
    for name, oid in children:
        child = _NC4Group(_join(group.path, name), group)
        group.children.append(child)
        _nc4_group(oid, child, alldims)


def _nc4_dim_len(group: _NC4Group, dimid: int) -> int:
    """An unlimited dimension's length: the most any variable of its group or below has (nc4_find_dim_len)."""
    best = 0
    for child in group.children:
        best = max(best, _nc4_dim_len(child, dimid))
    for var in group.vars:
        for d, n in zip(var.dimids, var.extent):
            if d == dimid:
                best = max(best, n)
    return best


def _nc4_records(path: str, file_size: int) -> Records:
    """The records netCDF4-python gives for a netCDF-4 file, read through h5py (one HDF5 open, no netCDF-C
    model); raises _Decline for anything it does not prove netCDF-C reads the same way."""
    from h5py import h5a, h5f, h5g, h5p

    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5f.CLOSE_STRONG)  # closing the file closes every object opened in it
    with HDF5_LOCK:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY, fapl=fapl)
        try:
            root_id = h5g.open(fid, b"/")
            classic = bool(h5a.exists(root_id, b"_nc3_strict"))
            root = _NC4Group("/", None)
            alldims: dict[int, tuple[_NC4Group, str, int, bool]] = {}
            _nc4_group(root_id, root, alldims)
        finally:
            fid.close()
    if classic and (root.children or sorted(d[0] for d in root.dims) != list(range(len(root.dims)))):
        raise _Decline
    lengths = {dimid: _nc4_dim_len(g, dimid) if unlimited else size
               for dimid, (g, _name, size, unlimited) in alldims.items()}
    limit = attr_json_limit()
    rec = Records(format="netcdf4", format_version="NETCDF4_CLASSIC" if classic else "NETCDF4")
    rec.attrs = capped_attrs(root.attrs.items(), limit)
    groups: list[_NC4Group] = []

    def walk(group: _NC4Group) -> None:
        groups.append(group)
        for child in group.children:
            walk(child)

    walk(root)
    for group in groups:
        entry: dict[str, Any] = {} if group.parent is None else {"attrs": capped_attrs(group.attrs.items(), limit)}
        dims = sorted(group.dims)  # netCDF-C lists a group's dimensions by id
        entry["dims"] = {name: lengths[dimid] for dimid, name, _size, _unlimited in dims}
        entry["unlimited"] = [name for _dimid, name, _size, unlimited in dims if unlimited]
        rec.groups[group.path] = entry
    for group in groups:
        for var in group.vars:
            names = []
            shape = []
            for dimid in var.dimids:
                # netCDF4-python names a dimension by its id in this group or the nearest ancestor holding it,
                # then sizes it by that name from the nearest group having one (the same one, or decline)
                owner = _nc4_dim_owner(group, dimid)
                name = alldims[dimid][1]
                by_name = _nc4_dim_by_name(group, name)
                if owner is None or by_name != dimid:
                    raise _Decline
                names.append(name)
                shape.append(lengths[dimid])
            rec.arrays.append(_row(_join(group.path, var.name), capped_attrs(var.attrs.items(), limit), var.filters,
                                   tuple(shape), var.dtype, var.itemsize, names, var.chunks, False, file_size))
    return rec


def _nc4_dim_owner(group: _NC4Group | None, dimid: int) -> _NC4Group | None:
    while group is not None:
        if any(d[0] == dimid for d in group.dims):
            return group
        group = group.parent
    return None


def _nc4_dim_by_name(group: _NC4Group | None, name: str) -> int | None:
    while group is not None:
        for d in group.dims:
            if d[1] == name:
                return d[0]
        group = group.parent
    return None


def _read_netcdf4python(path: str) -> Records:
    """The catalog records of any netCDF file through netCDF4-python (netCDF-C): the reference the fast readers
    match, and the reader of every file they decline."""
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
        rec = _read_fast(path) if FAST_READ else None
        return rec if rec is not None else _read_netcdf4python(path)

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
