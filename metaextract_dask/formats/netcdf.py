"""netCDF backend (netCDF4-python): classic netCDF-3 and HDF5-based netCDF-4, with groups and CF attributes.

One backend, two catalog formats: ``netcdf3`` and ``netcdf4``. A netCDF-4 variable is also an HDF5 dataset,
so its plain stored bytes take the HDF5 backend's memory-map path when profiled.

Cataloguing (:meth:`NetCDFBackend.read`) first tries this module's own readers, which build the records
netCDF4-python would from the file's bytes without netCDF-C: the netCDF-3 header (CDF-1, CDF-2, CDF-5), and
for netCDF-4 the HDF5 structures netCDF-C writes (superblock 2/3, version-2 object headers, compact and dense
links and attributes), read the way netCDF-C's libhdf5 layer reads them. Opening a file through netCDF-C (or
any libhdf5 open) costs more than that whole parse. Anything a reader cannot prove netCDF-C reads the same way
(unusual structures and types, damaged or truncated files, ...) it declines, and netCDF4-python reads the file
as before, so that values, errors and their messages stay netCDF4-python's. ``FAST_READ = False`` turns the
readers off.
"""

from __future__ import annotations

import math
import os
import re
import struct
import unicodedata
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from metaextract_dask.formats.base import ArraySpec, FormatBackend, MemberProxy, Records, as_text, \
    attr_json_limit, fast_readers, missing_array, truncation, unique_dims
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
    count = math.prod(shape)  # as np.prod in int64 below 2**63 (shapes are never negative), and cheaper
    if count >= 1 << 63:
        count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * itemsize if itemsize else None
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
        if head[:8] == _H5_MAGIC:
            return _nc4_records(fd, head, size)
        return None
    except (_Decline, OSError, ValueError, OverflowError, IndexError, struct.error, UnicodeDecodeError):
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
        try:
            value: int = _U32.unpack_from(self.buf, pos)[0]
        except struct.error:
            raise _Short from None
        self.pos = pos + 4
        return value

    def i32(self) -> int:
        pos = self.pos
        try:
            value: int = _U32.unpack_from(self.buf, pos)[0]
        except struct.error:
            raise _Short from None
        if value >= 1 << 31:  # a negative count (or STREAMING): netCDF-C's business
            raise _Decline
        self.pos = pos + 4
        return value

    def u64(self) -> int:
        pos = self.pos
        try:
            value: int = _U64.unpack_from(self.buf, pos)[0]
        except struct.error:
            raise _Short from None
        if value >= 1 << 62:
            raise _Decline
        self.pos = pos + 8
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


# --- netCDF-4: the HDF5 metadata netCDF-C reads, parsed from the file's bytes -----------------------------------
#
# An HDF5 open (libhdf5's metadata cache, property lists, ...) costs more than netCDF-C's whole model of a small
# file, through h5py or not; so the fast reader parses the HDF5 structures netCDF-C writes itself: superblock
# version 2/3, version-2 object headers (checksums verified with libhdf5's own lookup3), compact links and
# attributes. Everything else (older or newer structures, dense storage, shared messages, user-defined types,
# external links, ...) is declined.

_UNDEF = (1 << 64) - 1
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Attributes netCDF-C hides (nc4internal.c NC_reserved; _nc3_strict marks the classic model)
_NC4_HIDDEN = frozenset({
    "CLASS", "DIMENSION_LIST", "NAME", "REFERENCE_LIST", "_ARRAY_DIMENSIONS", "_Codecs", "_Format", "_IsNetcdf4",
    "_NCProperties", "_Netcdf4Coordinates", "_Netcdf4Dimid", "_SuperblockVersion", "_nc3_strict", "_nczarr_attr",
    "_nczarr_group", "_nczarr_array", "_nczarr_superblock"})
_NC4_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable."
_NC4_NON_COORD = "_nc4_non_coord_"
# netCDF4-python's Variable.filters() keys, in its order (the catalog keeps the true ones, in that order)
_NC4_FILTER_KEYS = ("zlib", "szip", "zstd", "bzip2", "blosc", "shuffle", "complevel", "fletcher32")
# Object header messages the reader understands or may ignore (anything else: declined)
_H5_IGNORED = frozenset({0x00, 0x04, 0x0A, 0x0D, 0x0E, 0x12, 0x16})
_IEEE = {4: (32, 23, 8, 0, 23, 127, 31), 8: (64, 52, 11, 0, 52, 1023, 63)}
_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_H = struct.Struct("<H")
_MSG = struct.Struct("<BHB")  # an object header message: type, size, flags
_MSG_CRT = struct.Struct("<BHBH")  # ... and its creation order (attribute creation order tracked)


def _lookup3() -> Any:
    """libhdf5's metadata checksum (Jenkins lookup3), from the library h5py links; None where not found."""
    global _LOOKUP3
    if _LOOKUP3 is False:
        try:
            import ctypes

            import h5py.h5

            fn = ctypes.CDLL(h5py.h5.__file__).H5_checksum_lookup3
            fn.restype = ctypes.c_uint32
            fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32]
            _LOOKUP3 = fn if fn(b"Four score and seven years ago", 30, 0) == 0x17770551 else None
        except Exception:  # no h5py, or a libhdf5 without the symbol: netCDF-4 stays netCDF4-python's
            _LOOKUP3 = None
    return _LOOKUP3


_LOOKUP3: Any = False


class _H5Type:
    """An HDF5 datatype message, as far as netCDF needs: kind ('i', 'u', 'f', 'S' fixed string, 'V' vlen
    string), size in bytes, big-endian, string padding."""

    __slots__ = ("kind", "size", "big", "pad")

    def __init__(self, raw: bytes) -> None:
        if len(raw) < 8:
            raise _Decline
        cls, bits, size = raw[0] & 0x0F, raw[1] | raw[2] << 8 | raw[3] << 16, _I.unpack_from(raw, 4)[0]
        self.size, self.big, self.pad = size, False, 0
        if cls == 0:  # fixed-point: whole bytes, no offset (what H5Tget_native_type maps to a C integer)
            if size not in (1, 2, 4, 8) or len(raw) < 12 or _I.unpack_from(raw, 8)[0] != (size * 8) << 16:
                raise _Decline
            self.kind, self.big = "iu"[not bits & 0x08], bool(bits & 1)
        elif cls == 1:  # IEEE binary32/binary64 only
            if size not in _IEEE or len(raw) < 20 or bits & 0x40 or bits & 0x0E or (bits >> 4) & 3 != 2:
                raise _Decline
            offset, precision, eloc, esize, mloc, msize, bias = struct.unpack_from("<HHBBBBI", raw, 8)
            if offset or (precision, eloc, esize, mloc, msize, bias, bits >> 8 & 0xFF) != _IEEE[size]:
                raise _Decline
            self.kind, self.big = "f", bool(bits & 1)
        elif cls == 3:
            self.kind, self.pad = "S", bits & 0x0F
            if not size:
                raise _Decline
        elif cls == 9 and bits & 0x0F == 1:  # variable-length string
            self.kind = "V"
        else:  # compound, enum, opaque, references, vlen sequences, ...: netCDF4-python's own business
            raise _Decline

    def numpy(self) -> np.dtype:
        return np.dtype(f"{'>' if self.big else '<'}{self.kind}{self.size}")


_TYPES: dict[bytes, _H5Type] = {}


def _h5_type(raw: bytes) -> _H5Type:
    """:class:`_H5Type` of a datatype message, remembered (files repeat a handful of types)."""
    t = _TYPES.get(raw)
    if t is None:
        t = _H5Type(raw)
        if len(_TYPES) < 4096:
            _TYPES[raw] = t
    return t


def _h5_space(raw: bytes) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """A dataspace message: (kind 0 scalar / 1 simple / 2 null, current dims, max dims)."""
    if len(raw) < 4:
        raise _Decline
    version, rank, flags = raw[0], raw[1], raw[2]
    if version == 1:
        kind, pos = (1 if rank else 0), 8
        if flags & 2:  # permutation index
            raise _Decline
    elif version == 2:
        kind, pos = raw[3], 4
        if kind > 2:
            raise _Decline
    else:
        raise _Decline
    if len(raw) < pos + 8 * rank * (2 if flags & 1 else 1):
        raise _Decline
    dims = struct.unpack_from(f"<{rank}Q", raw, pos)
    maxdims = struct.unpack_from(f"<{rank}Q", raw, pos + 8 * rank) if flags & 1 else dims
    return kind, dims, maxdims


class _H5Object:
    """The messages of one version-2 object header netCDF needs."""

    __slots__ = ("attrs", "space", "dtype", "layout", "filters", "fill", "links", "link_order", "group")

    def __init__(self) -> None:
        self.attrs: list[tuple[int, bytes, bytes, bytes, bytes]] = []  # (creation order, name, type, space, data)
        self.space: bytes | None = None
        self.dtype: bytes | None = None
        self.layout: bytes | None = None
        self.filters: bytes | None = None
        self.fill: bytes | None = None
        self.links: list[tuple[int, bytes, int]] = []  # (creation order, name, address)
        self.link_order = False
        self.group = False


class _H5File:
    """The bytes of an HDF5 file, read on demand (the first ones at once)."""

    def __init__(self, fd: int, size: int, head: bytes) -> None:
        self.fd, self.size, self.head = fd, size, head
        self.heaps: dict[int, dict[int, bytes]] = {}
        self.seen: set[int] = set()
        self.scales: set[int] = set()  # object header addresses of the dimension scales read
        self.scale_refs: list[int] = []  # the addresses the variables' DIMENSION_LIST attributes refer to
        self.node_tail = b""

    def read(self, addr: int, n: int) -> bytes:
        if addr + n > self.size or addr < 0 or n > _NC3_HEAD_MAX:
            raise _Decline  # past the end (libhdf5 reports it its own way), or a hostile size
        if addr + n <= len(self.head):
            return self.head[addr:addr + n]
        data = os.pread(self.fd, n, addr)
        if len(data) != n:
            raise _Decline
        return data

    def checked(self, data: bytes) -> None:
        """Verify the trailing lookup3 checksum of a metadata block, as libhdf5 does."""
        if _LOOKUP3(data, len(data) - 4, 0) != _I.unpack_from(data, len(data) - 4)[0]:
            raise _Decline

    def object(self, addr: int) -> _H5Object:
        """Parse the object header at `addr` (its continuation chunks included)."""
        if addr in self.seen:  # two links to one object (or a loop): netCDF-C's business
            raise _Decline
        self.seen.add(addr)
        head = self.read(addr, 8)
        if head[:5] != b"OHDR\x02":
            raise _Decline  # version-1 object headers: not written by netCDF-C for superblock 2+ files
        flags = head[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        prefix = self.read(addr, pos + width)
        length = int.from_bytes(prefix[pos:pos + width], "little")
        start = pos + width
        block = self.read(addr, start + length + 4)
        self.checked(block)
        obj = _H5Object()
        crt = bool(flags & 0x04)
        chunks = [(block, start, start + length)]
        message = _MSG_CRT if crt else _MSG
        msg_head = message.size
        while chunks:
            data, pos, end = chunks.pop(0)
            while end - pos >= msg_head:
                mtype, msize, mflags, *rest = message.unpack_from(data, pos)
                order = rest[0] if crt else -1
                pos += msg_head
                body = data[pos:pos + msize]
                pos += msize
                if pos > end:
                    raise _Decline
                if mflags & 0x02 and mtype != 0:  # a shared message
                    raise _Decline
                if mtype == 0x10:  # continuation
                    caddr, clen = struct.unpack_from("<QQ", body)
                    if caddr in self.seen:  # a loop (a hostile file)
                        raise _Decline
                    self.seen.add(caddr)
                    cont = self.read(caddr, clen)
                    if cont[:4] != b"OCHK" or clen < 8:
                        raise _Decline
                    self.checked(cont)
                    chunks.append((cont, 4, clen - 4))
                elif mtype == 0x0C:
                    if not crt:
                        raise _Decline  # netCDF-C lists attributes in creation order: here, untracked
                    obj.attrs.append((order, *_h5_attr(body)))
                elif mtype == 0x01:
                    obj.space = body
                elif mtype == 0x03:
                    obj.dtype = body
                elif mtype == 0x08:
                    obj.layout = body
                elif mtype == 0x0B:
                    obj.filters = body
                elif mtype == 0x05:
                    obj.fill = body
                elif mtype == 0x06:
                    obj.links.append(_h5_link(body))
                elif mtype == 0x02:
                    obj.group = True
                    obj.link_order, heap, names, order = _h5_info(body, 8)
                    if heap != _UNDEF:  # dense link storage
                        obj.links.extend(_h5_link(raw) for _rec, raw in self.dense(heap, names, order, 5))
                elif mtype == 0x15:
                    _tracked, heap, names, order = _h5_info(body, 2)
                    if heap != _UNDEF:  # dense attribute storage: the creation order is in the index
                        if not crt:
                            raise _Decline
                        for rec, raw in self.dense(heap, names, order, 8):
                            if rec[8] & 0x02:  # a shared attribute message
                                raise _Decline
                            obj.attrs.append((_I.unpack_from(rec, 9)[0], *_h5_attr(raw)))
                elif mtype not in _H5_IGNORED:  # old-style groups, external storage, unknown messages, ...
                    raise _Decline
        obj.attrs.sort(key=lambda a: a[0])
        if len({a[0] for a in obj.attrs}) != len(obj.attrs):  # an order libhdf5's sort leaves open
            raise _Decline
        return obj

    def dense(self, heap_addr: int, names_addr: int, order_addr: int, names_type: int) -> list[tuple[bytes, bytes]]:
        """The (index record, heap object) pairs of dense link or attribute storage, in the creation order
        index's order where there is one (libhdf5 iterates it), else the name index's. Both indexes are read
        and checked (netCDF-C's lookups by name search the name index): version-2 B-trees of depth 0 (one leaf)
        over a fractal heap whose root is a direct block or an indirect block of direct blocks. Deeper trees
        and heaps, huge and tiny objects, filtered heaps: declined."""
        records = self.leaf(names_addr, names_type)
        if order_addr != _UNDEF:
            by_order = self.leaf(order_addr, names_type + 1)
            if len(by_order) != len(records):
                raise _Decline
            records, btree_type = by_order, names_type + 1
        else:
            btree_type = names_type
        hdr = self.read(heap_addr, 146)
        if hdr[:5] != b"FRHP\x00" or _H.unpack_from(hdr, 7)[0]:  # I/O filters on the heap
            raise _Decline
        self.checked(hdr[:146])
        id_len, flags, max_man = _H.unpack_from(hdr, 5)[0], hdr[9], _I.unpack_from(hdr, 10)[0]
        width = _H.unpack_from(hdr, 110)[0]
        start, max_direct = struct.unpack_from("<QQ", hdr, 112)
        max_heap_bits = _H.unpack_from(hdr, 128)[0]
        root, rows = _Q.unpack_from(hdr, 132)[0], _H.unpack_from(hdr, 140)[0]
        if start & (start - 1) or max_direct & (max_direct - 1) or not start or not width:
            raise _Decline
        off_size = (max_heap_bits + 7) // 8
        len_size = min(((max_direct.bit_length() - 1) + 7) // 8, (max_man.bit_length() - 1) // 8 + 1)
        if not flags & 0x02:  # direct blocks without checksums: what libhdf5 makes of damage is its own
            raise _Decline
        # the heap's direct blocks: (heap offset, bytes)
        blocks: list[tuple[int, bytes]] = []
        if rows == 0:
            blocks.append((0, self.direct(root, start, off_size, 0)))
        else:
            max_rows = (max_direct.bit_length() - start.bit_length()) + 2
            if rows > max_rows:
                raise _Decline
            head = 5 + 8 + off_size
            ind = self.read(root, head + rows * width * 8 + 4)
            if ind[:5] != b"FHIB\x00":
                raise _Decline
            self.checked(ind)
            offset = 0
            for r in range(rows):
                size = start if r < 2 else start << (r - 1)
                for c in range(width):
                    addr = _Q.unpack_from(ind, head + (r * width + c) * 8)[0]
                    if addr != _UNDEF:
                        blocks.append((offset, self.direct(addr, size, off_size, offset)))
                    offset += size
        if not records:
            return []
        out = []
        id_at = {5: 4, 6: 8}.get(btree_type, 0)  # link records: hash or creation order, then the heap ID
        for rec in records:
            heap_id = rec[id_at:id_at + id_len]
            if heap_id[0] & 0xF0:  # huge or tiny objects, unknown ID versions
                raise _Decline
            obj_off = int.from_bytes(heap_id[1:1 + off_size], "little")
            obj_len = int.from_bytes(heap_id[1 + off_size:1 + off_size + len_size], "little")
            for block_off, block in blocks:
                if block_off <= obj_off and obj_off + obj_len <= block_off + len(block):
                    out.append((rec, block[obj_off - block_off:obj_off - block_off + obj_len]))
                    break
            else:
                raise _Decline
        return out

    def leaf(self, addr: int, btree_type: int) -> list[bytes]:
        """The records of a version-2 B-tree of depth 0 or 1 (checksums verified), in no particular order."""
        bt = self.read(addr, 38)
        if bt[:4] != b"BTHD" or bt[4] != 0 or bt[5] != btree_type:
            raise _Decline
        self.checked(bt)
        node_size = _I.unpack_from(bt, 6)[0]
        record_size, depth = struct.unpack_from("<HH", bt, 10)
        root, count, total = _Q.unpack_from(bt, 16)[0], _H.unpack_from(bt, 24)[0], _Q.unpack_from(bt, 26)[0]
        if depth > 1 or not record_size:
            raise _Decline  # trees of more than two levels
        if depth == 0:
            if total != count:
                raise _Decline
            return self.node(root, b"BTLF", btree_type, count, record_size, 0)
        max_leaf = (node_size - 10) // record_size
        width = (max_leaf.bit_length() - 1) // 8 + 1  # bytes of a child's record count
        records = self.node(root, b"BTIN", btree_type, count, record_size, (count + 1) * (8 + width))
        pointers = self.node_tail
        for i in range(count + 1):
            child = _Q.unpack_from(pointers, i * (8 + width))[0]
            n = int.from_bytes(pointers[i * (8 + width) + 8:(i + 1) * (8 + width)], "little")
            records += self.node(child, b"BTLF", btree_type, n, record_size, 0)
        if len(records) != total:
            raise _Decline
        return records

    def node(self, addr: int, sig: bytes, btree_type: int, count: int, record_size: int, tail: int) -> list[bytes]:
        """The records of one B-tree node (and, in node_tail, the `tail` bytes after them)."""
        if not count and sig == b"BTLF":
            return []
        data = self.read(addr, 6 + count * record_size + tail + 4)
        if data[:4] != sig or data[4] != 0 or data[5] != btree_type:
            raise _Decline
        self.checked(data)
        end = 6 + count * record_size
        self.node_tail = data[end:end + tail]
        return [data[6 + i * record_size:6 + (i + 1) * record_size] for i in range(count)]

    def direct(self, addr: int, size: int, off_size: int, offset: int) -> bytes:
        """A fractal heap direct block (its checksum verified as libhdf5 does: over the block, field zeroed)."""
        block = self.read(addr, size)
        head = 5 + 8 + off_size
        if block[:5] != b"FHDB\x00" or int.from_bytes(block[13:head], "little") != offset:
            raise _Decline
        stored = _I.unpack_from(block, head)[0]
        zeroed = block[:head] + b"\x00\x00\x00\x00" + block[head + 4:]
        if _LOOKUP3(zeroed, len(zeroed), 0) != stored:
            raise _Decline
        return block

    def vlen_string(self, element: bytes, item_size: int = 1) -> bytes | None:
        """A variable-length string (or sequence of `item_size` items) from the global heap (None: NULL)."""
        length, addr, index = struct.unpack_from("<IQI", element)
        if not addr:
            return None
        heap = self.heaps.get(addr)
        if heap is None:
            head = self.read(addr, 16)
            if head[:5] != b"GCOL\x01":
                raise _Decline
            size = _Q.unpack_from(head, 8)[0]
            data = self.read(addr, size)
            heap = {}
            # parse the whole collection as libhdf5 does on loading it (H5HG__cache_heap_deserialize)
            if size % 8 or size < 4096:  # libhdf5 writes whole, aligned collections (H5HG_MINSIZE)
                raise _Decline
            pos = 16
            while pos < size:
                if pos + 16 > size:  # too small for an object header: libhdf5 calls it free space
                    pos = size
                    break
                idx, _refs, _r, osize = struct.unpack_from("<HHIQ", data, pos)
                if idx:
                    heap[idx] = data[pos + 16:pos + 16 + osize]
                    need = 16 + ((osize + 7) & ~7)
                else:
                    need = osize
                if need <= 0:
                    raise _Decline
                pos += need
            if pos != size:
                raise _Decline
            self.heaps[addr] = heap
        value = heap.get(index)
        if value is None or len(value) < length * item_size:
            raise _Decline
        return value[:length * item_size]


def _h5_attr(body: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """An attribute message: (name, datatype, dataspace, data)."""
    version = body[0]
    name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
    if version == 1:
        pos, pad = 8, 7
    elif version in (2, 3):
        pos, pad = (8 if version == 2 else 9), 0
        if body[1] & 0x03:  # shared datatype or dataspace
            raise _Decline
    else:
        raise _Decline
    name = body[pos:pos + name_size]
    pos += (name_size + pad) & ~pad
    dtype = body[pos:pos + type_size]
    pos += (type_size + pad) & ~pad
    space = body[pos:pos + space_size]
    pos += (space_size + pad) & ~pad
    if pos > len(body) or not name.endswith(b"\x00"):
        raise _Decline
    return name[:-1], dtype, space, body[pos:]


def _h5_link(body: bytes) -> tuple[int, bytes, int]:
    """A link message: (creation order, name, object address); hard links only."""
    if body[0] != 1:
        raise _Decline
    flags, pos = body[1], 2
    if flags & 0x08:
        if body[pos] != 0:  # soft, external, user-defined links
            raise _Decline
        pos += 1
    order = -1
    if flags & 0x04:
        order = _Q.unpack_from(body, pos)[0]
        pos += 8
    if flags & 0x10:
        pos += 1
    width = 1 << (flags & 3)
    n = int.from_bytes(body[pos:pos + width], "little")
    pos += width
    name = body[pos:pos + n]
    if len(name) != n or len(body) < pos + n + 8:
        raise _Decline
    return order, name, _Q.unpack_from(body, pos + n)[0]


def _h5_info(body: bytes, index_width: int) -> tuple[bool, int, int, int]:
    """A link or attribute info message: (creation order tracked, fractal heap address, name index address,
    creation order index address); the heap address is undefined where the links or attributes are in the
    object header (compact), the last where creation order is not indexed."""
    if body[0] != 0:
        raise _Decline
    flags = body[1]
    pos = 2 + (index_width if flags & 1 else 0)
    heap, names = struct.unpack_from("<QQ", body, pos)
    order = _Q.unpack_from(body, pos + 16)[0] if flags & 2 else _UNDEF
    return bool(flags & 1), heap, names, order


def _h5_value(f: _H5File, name: str, rtype: bytes, rspace: bytes, data: bytes) -> Any:
    """An attribute value as netCDF-C reads it (read_hdf5_att) and netCDF4-python returns it (_get_att)."""
    t = _h5_type(rtype)
    kind, dims, _max = _h5_space(rspace)
    if len(dims) > 1:
        raise _Decline
    count = 0 if kind == 2 else (dims[0] if dims else 1)
    if t.kind == "V":  # NC_STRING
        if kind == 2 or len(data) < 16 * count:
            raise _Decline
        values = []
        for i in range(count):
            raw = f.vlen_string(data[16 * i:16 * i + 16])
            values.append("" if raw is None else raw.split(b"\x00", 1)[0].decode("utf-8", "replace"))
        return values[0] if len(values) == 1 else values
    if t.kind == "S":  # NC_CHAR: one fixed-length string (an array of them is NC_STRING: declined)
        if kind == 1:
            raise _Decline
        if kind == 2:
            return b"" if name == "_FillValue" else ""
        raw = data[:t.size]
        if len(raw) != t.size:
            raise _Decline
        return raw if name == "_FillValue" else raw.decode("utf-8", "replace").replace("\x00", "")
    disk = t.numpy()
    if len(data) < count * t.size:
        raise _Decline
    arr = np.frombuffer(data, disk, count).astype(disk.newbyteorder("="))
    return arr[0] if count == 1 and kind != 2 else arr


def _h5_ints(rtype: bytes, rspace: bytes, data: bytes, native_int: bool) -> list[int]:
    """A hidden integer attribute: read as a C int (``_Netcdf4Dimid``) or as its own type into C ints
    (``_Netcdf4Coordinates``: netCDF-C reads its bytes as they are, so only little-endian int32 is taken)."""
    t = _h5_type(rtype)
    kind, dims, _max = _h5_space(rspace)
    if kind == 2 or len(dims) > 1 or t.kind not in "iu":
        raise _Decline
    if not native_int and (t.big or t.size != 4):
        raise _Decline
    count = dims[0] if dims else 1
    if len(data) < count * t.size:
        raise _Decline
    values = [int(v) for v in np.frombuffer(data, t.numpy(), count)]
    if any(not -(1 << 31) <= v < 1 << 31 for v in values):
        raise _Decline
    return values


def _h5_string(rtype: bytes, rspace: bytes, data: bytes) -> bytes:
    """``CLASS`` or ``NAME``: a scalar fixed-length null-terminated string, up to its first NUL."""
    t = _h5_type(rtype)
    kind, _dims, _max = _h5_space(rspace)
    if t.kind != "S" or t.pad != 0 or kind != 0 or len(data) < t.size:
        raise _Decline
    return data[:t.size].split(b"\x00", 1)[0]


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


def _nc4_attrs(f: _H5File, obj: _H5Object) -> tuple[dict[str, Any], dict[str, tuple[bytes, bytes, bytes]]]:
    """The attributes netCDF-C shows (in creation order) and the hidden ones, still encoded."""
    shown: dict[str, Any] = {}
    hidden: dict[str, tuple[bytes, bytes, bytes]] = {}
    for _order, raw, rtype, rspace, data in obj.attrs:
        if len(raw) > 256:  # NC_MAX_NAME
            raise _Decline
        name = raw.decode("utf-8")
        if name in shown or name in hidden:
            raise _Decline
        if name in _NC4_HIDDEN:
            hidden[name] = (rtype, rspace, data)
        else:
            shown[name] = _h5_value(f, name, rtype, rspace, data)
    return shown, hidden


def _h5_dimension_list(f: _H5File, rtype: bytes, rspace: bytes, data: bytes, ndims: int) -> list[int]:
    """The object addresses in a ``DIMENSION_LIST`` attribute (one variable-length list of object references
    per dimension)."""
    if len(rtype) < 16 or rtype[0] & 0x0F != 9 or rtype[1] & 0x0F != 0 or rtype[8] & 0x0F != 7:
        raise _Decline
    kind, dims, _max = _h5_space(rspace)
    if kind != 1 or dims != (ndims,) or len(data) < 16 * ndims:
        raise _Decline
    out = []
    for d in range(ndims):
        count = _I.unpack_from(data, 16 * d)[0]
        raw = f.vlen_string(data[16 * d:16 * d + 16], 8)  # libhdf5 reads the heap object even when empty
        if raw is None and count:
            raise _Decline
        out.extend(struct.unpack_from(f"<{count}Q", raw or b""))
    return out


def _nc4_dataset(f: _H5File, group: _NC4Group, name: str, addr: int, obj: _H5Object,
                 alldims: dict[int, tuple[_NC4Group, str, int, bool]]) -> None:
    """Add one HDF5 dataset to `group`: a dimension, a variable or both (netCDF-C's read_dataset)."""
    if obj.space is None or obj.dtype is None or obj.layout is None:
        raise _Decline
    kind, extent, maxshape = _h5_space(obj.space)
    if kind == 2:
        raise _Decline
    attrs, hidden = _nc4_attrs(f, obj)
    ndims = len(extent)
    dimids: list[int] | None = None
    if "_Netcdf4Coordinates" in hidden:
        dimids = _h5_ints(*hidden["_Netcdf4Coordinates"], native_int=False)
        if len(dimids) != ndims:  # netCDF-C refuses the file
            raise _Decline
    if "CLASS" in hidden:
        if _h5_string(*hidden["CLASS"]) != b"DIMENSION_SCALE" or not ndims or "_Netcdf4Dimid" not in hidden:
            raise _Decline
        ids = _h5_ints(*hidden["_Netcdf4Dimid"], native_int=True)
        if len(ids) != 1 or ids[0] < 0 or ids[0] in alldims:
            raise _Decline
        dimid = ids[0]
        f.scales.add(addr)
        unlimited = maxshape[0] == _UNDEF
        group.dims.append((dimid, name, extent[0], unlimited))
        alldims[dimid] = (group, name, extent[0], unlimited)
        if "NAME" in hidden and _h5_string(*hidden["NAME"]).startswith(_NC4_DIM_ONLY):
            return  # a dimension without a variable
        if ndims == 1:
            dimids = [dimid]  # a coordinate variable
        elif dimids is None:  # a multi-dimensional one names its dimensions in _Netcdf4Coordinates
            raise _Decline
    if name.startswith(_NC4_NON_COORD) and len(name) > len(_NC4_NON_COORD):  # netCDF-C's read_var
        name = name[len(_NC4_NON_COORD):]
    if any(v.name == name for v in group.vars):
        raise _Decline
    if dimids is None:
        if ndims:  # dimension scale matching or phony dimensions: netCDF-C's business
            raise _Decline
        dimids = []
    if "DIMENSION_LIST" in hidden and ndims:
        # netCDF-C follows every reference to the scales (H5DSiterate_scales): they must be scales read here
        f.scale_refs.extend(_h5_dimension_list(f, *hidden["DIMENSION_LIST"], ndims))
    t = _h5_type(obj.dtype)
    itemsize: int | None
    if t.kind == "V":
        dtype, itemsize = "vlen-str", None
        _h5_vlen_fill(f, obj.fill)
    elif t.kind == "S":
        if t.size != 1:
            raise _Decline
        dtype, itemsize = "|S1", 1
    else:
        # netCDF4-python reports native order, and big-endian storage through endian() (see _dtype)
        dt = np.dtype(f"{t.kind}{t.size}")
        dtype = dt.newbyteorder(">").str if t.size > 1 and t.big else dt.str
        itemsize = t.size
    flags = dict.fromkeys(_NC4_FILTER_KEYS, False)
    flags["complevel"] = 0
    for code, values in _h5_filters(obj.filters):
        if code == 1 and len(values) == 1 and values[0] <= 9:
            flags["zlib"], flags["complevel"] = True, values[0]
        elif code == 2:
            flags["shuffle"] = True
        elif code == 3:
            flags["fletcher32"] = True
        else:  # szip, zstd, blosc, plugins: as netCDF-C and this build of netCDF4-python report them
            raise _Decline
    group.vars.append(_NC4Var(name, dimids, extent, dtype, itemsize, {k: v for k, v in flags.items() if v},
                              _h5_chunks(obj.layout, ndims), attrs))


def _h5_vlen_fill(f: _H5File, body: bytes | None) -> None:
    """netCDF-C reads a string variable's fill value (H5Pget_fill_value), from the global heap: it must be
    there."""
    if body is None:
        return
    version = body[0]
    if version == 3:
        defined = body[1] & 0x20
        pos = 2
    elif version == 2:
        defined = body[3]
        pos = 4
    else:
        raise _Decline
    if defined:
        if _I.unpack_from(body, pos)[0] != 16 or len(body) < pos + 20:
            raise _Decline
        f.vlen_string(body[pos + 4:pos + 20])


def _h5_filters(body: bytes | None) -> list[tuple[int, tuple[int, ...]]]:
    """A filter pipeline message: (filter id, client values) of each filter."""
    if body is None:
        return []
    version, count = body[0], body[1]
    pos = 8 if version == 1 else 2
    if version not in (1, 2):
        raise _Decline
    out = []
    for _ in range(count):
        code = _H.unpack_from(body, pos)[0]
        pos += 2
        name_len = 0
        if version == 1 or code >= 256:
            name_len = _H.unpack_from(body, pos)[0]
            pos += 2
        _flags, nvalues = struct.unpack_from("<HH", body, pos)
        pos += 4 + ((name_len + 7) & ~7 if version == 1 else name_len)
        values = struct.unpack_from(f"<{nvalues}I", body, pos)
        pos += 4 * nvalues + (4 if version == 1 and nvalues % 2 else 0)
        out.append((code, values))
    return out


def _h5_chunks(body: bytes, ndims: int) -> tuple[int, ...] | None:
    """A data layout message: the chunk shape, or None (contiguous, compact)."""
    version, cls = body[0], body[1]
    if version not in (3, 4) or cls > 2:  # old layouts, virtual datasets
        raise _Decline
    if cls != 2:
        return None
    if version != 3:  # the chunk indexes of version 4 (arrays, B-tree 2) libhdf5 may load on opening
        raise _Decline
    rank = body[2]
    dims = struct.unpack_from(f"<{rank}I", body, 11)
    if rank != ndims + 1:
        raise _Decline
    return dims[:-1]


def _nc4_group(f: _H5File, obj: _H5Object, group: _NC4Group,
               alldims: dict[int, tuple[_NC4Group, str, int, bool]]) -> None:
    """Read a group and, after its own links, its child groups (netCDF-C's rec_read_metadata)."""
    group.attrs, _hidden = _nc4_attrs(f, obj)
    # links in creation order where tracked, else by name (as libhdf5 sorts them: bytewise)
    if obj.link_order:
        links = sorted(obj.links)
        if len({link[0] for link in links}) != len(links) or (links and links[0][0] < 0):
            raise _Decline  # creation order tracked, but missing or repeated
    else:
        links = sorted(obj.links, key=lambda link: link[1])
    children = []
    for _order, raw, addr in links:
        if len(raw) > 256:  # NC_MAX_NAME: netCDF-C cuts longer names
            raise _Decline
        name = raw.decode("utf-8")
        target = f.object(addr)
        if target.group:
            children.append((name, target))
        elif target.dtype is not None and target.space is not None:
            _nc4_dataset(f, group, name, addr, target, alldims)
        else:  # a named (user-defined) type, an old-style group, ...
            raise _Decline
    for name, target in children:
        child = _NC4Group(_join(group.path, name), group)
        group.children.append(child)
        _nc4_group(f, target, child, alldims)


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


def _nc4_dim_owner(group: _NC4Group | None, dimid: int) -> bool:
    while group is not None:
        if any(d[0] == dimid for d in group.dims):
            return True
        group = group.parent
    return False


def _nc4_dim_by_name(group: _NC4Group | None, name: str) -> int | None:
    while group is not None:
        for d in group.dims:
            if d[1] == name:
                return d[0]
        group = group.parent
    return None


def _nc4_records(fd: int, head: bytes, file_size: int) -> Records:
    """The records netCDF4-python gives for a netCDF-4 file, from its HDF5 metadata; raises _Decline for
    anything it does not prove netCDF-C reads the same way."""
    if _lookup3() is None or len(head) < 48 or head[8] not in (2, 3) or head[9:11] != b"\x08\x08":
        raise _Decline  # superblock 0/1 (symbol-table groups), odd offset sizes
    base, extension, eof, root_addr = struct.unpack_from("<QQQQ", head, 12)
    f = _H5File(fd, file_size, head)
    f.checked(head[:48])
    # a superblock extension may share messages; a file marked open for writing (consistency flags), or
    # shorter than its end of allocation, libhdf5 refuses or reports its own way
    if base != 0 or extension != _UNDEF or eof > file_size or head[11]:
        raise _Decline
    root_obj = f.object(root_addr)
    if not root_obj.group:
        raise _Decline
    classic = any(a[1] == b"_nc3_strict" for a in root_obj.attrs)
    root = _NC4Group("/", None)
    alldims: dict[int, tuple[_NC4Group, str, int, bool]] = {}
    _nc4_group(f, root_obj, root, alldims)
    if classic and (root.children or sorted(d[0] for d in root.dims) != list(range(len(root.dims)))):
        raise _Decline
    if any(ref not in f.scales for ref in f.scale_refs):
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
            for dimid in var.dimids:
                # netCDF4-python names a dimension by its id in this group or the nearest ancestor holding it,
                # then sizes it by that name from the nearest group having one (the same one, or decline)
                if dimid not in alldims or not _nc4_dim_owner(group, dimid):
                    raise _Decline
                name = alldims[dimid][1]
                if _nc4_dim_by_name(group, name) != dimid:
                    raise _Decline
                names.append(name)
            shape = tuple(lengths[d] for d in var.dimids)
            rec.arrays.append(_row(_join(group.path, var.name), capped_attrs(var.attrs.items(), limit), var.filters,
                                   shape, var.dtype, var.itemsize, names, var.chunks, False, file_size))
    return rec


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
        rec = _read_fast(path) if FAST_READ and fast_readers() else None
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
