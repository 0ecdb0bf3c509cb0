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
        return None
    except (_Decline, OSError, ValueError, OverflowError):
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
