"""Lazy, dask-backed xarray views of the arrays a catalog lists.

>>> from metaextract_dask.arrays import open_array, open_dicom_series
>>> tas = open_array("climate_cf.nc", "/tas")                 # CF-decoded, nothing read yet
>>> raw = open_array("climate_cf.nc", "/psl", decode=False)   # stored int16 values, attrs say how to unpack
>>> ct = open_dicom_series(sorted(Path("ct_series").glob("*.dcm")))   # (slice, row, column), sorted along z

Arrays are named exactly as the catalog's ``arrays.name`` column spells them: HDF5/netCDF/Zarr ``"/grp/var"``
(a Zarr store that is itself an array: ``"/"``), FITS ``"HDU<index>"`` (image HDUs), DICOM ``"PixelData"``.

Recipes, not handles
--------------------
The dask graphs built here hold small picklable *array proxies* (:class:`ArrayProxy` subclasses): a file path,
an array name, shape and dtype. A proxy opens its file only when a task reads from it, through a per-process
cache of open handles (:func:`close_cached_files` empties it), and holds
:data:`~metaextract_dask.formats.base.HDF5_LOCK` around every h5py and netCDF4 call. No open h5py, netCDF4,
astropy or pydicom object ever enters a graph, so graphs run on any ``distributed`` cluster.

What the returned DataArrays carry
----------------------------------
``dims``
    netCDF dimensions; HDF5 dimension labels or attached dimension scales, else ``dim_0, dim_1, ...``;
    Zarr v3 ``dimension_names`` / Zarr v2 ``_ARRAY_DIMENSIONS``, else ``dim_<i>``; FITS ``("y", "x")``,
    ``("z", "y", "x")``, ... (NAXIS order reversed); DICOM ``("row", "column")`` or
    ``("frame", "row", "column")`` (plus ``"sample"`` for colour images); series ``("slice", "row", "column")``.
``attrs``
    The array's own attributes. With ``decode=False`` they also say how to decode: ``_FillValue`` (or
    ``missing_value``), ``scale_factor``/``add_offset``, ``valid_min``/``valid_max``/``valid_range`` when the
    file has them. Where the format spells these differently they are mapped: an HDF5 fill value the writer set
    (creation property) and a Zarr ``fill_value`` become ``_FillValue`` (an explicit ``_FillValue`` attribute
    wins); FITS ``BSCALE``/``BZERO``/``BLANK`` become ``scale_factor``/``add_offset``/``_FillValue``; DICOM
    ``RescaleSlope``/``RescaleIntercept`` become ``scale_factor``/``add_offset``. With ``decode=True`` xarray's
    own coders (:func:`xarray.conventions.decode_cf_variable`) mask and unpack lazily and move those keys from
    ``attrs`` to ``encoding``, as :func:`xarray.open_dataset` does. Times are *not* decoded.
``encoding``
    ``chunks``: the on-disk chunk shape (numpy axis order; HDF5/netCDF4 chunks, Zarr chunks or shards, FITS
    compression tiles, one DICOM frame), ``None`` for contiguous storage; ``preferred_chunks``: the same as
    ``{dim: size}``; ``source`` (path), ``format`` (reader name), ``variable`` (catalog name),
    ``original_shape`` and ``dtype`` (stored dtype). The dask chunks themselves are simply ``arr.chunks``.

Dask chunks default to :func:`~metaextract_dask.chunking.adaptive_chunks`: whole multiples of the on-disk
chunks, about ``metaextract.chunk-target`` bytes, capped by the smallest worker memory limit of the current
client (or `memory_limit`).
"""

from __future__ import annotations

import atexit
import itertools
import math
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from metaextract_dask.chunking import adaptive_chunks, worker_memory_limit
from metaextract_dask.formats.base import HDF5_LOCK

if TYPE_CHECKING:  # pragma: no cover
    import xarray

__all__ = ["ArrayProxy", "close_cached_files", "list_arrays", "open_array", "open_arrays", "open_dicom_series"]

PathLike = str | os.PathLike[str]

# astropy file objects are not thread-safe (seek + read): one lock per process for FITS reads.
_FITS_LOCK = threading.RLock()
_COUNT_LOCK = threading.Lock()


# --------------------------------------------------------------------------- #
# per-process cache of open handles
# --------------------------------------------------------------------------- #
def _stamp(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a file; a rewritten file gets a new stamp, so stale handles are not reused."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class _HandleCache:
    """LRU of open handles by path, one per library; callers hold that library's lock around every use.

    Handles live in the process that opened them (a dask worker, or the client for local computes) and are
    closed on eviction, when their file changes on disk, or by :func:`close_cached_files`. The cache itself is
    module state, never pickled.
    """

    def __init__(self, opener: Callable[[str], Any], lock: Any, maxsize: int = 64) -> None:
        self._opener = opener
        self._lock = lock
        self._maxsize = maxsize
        self._handles: OrderedDict[str, tuple[tuple[int, int], Any]] = OrderedDict()

    def get(self, path: str) -> Any:
        stamp = _stamp(path)
        with self._lock:
            hit = self._handles.get(path)
            if hit is not None:
                if hit[0] == stamp:
                    self._handles.move_to_end(path)
                    return hit[1]
                self._close(self._handles.pop(path)[1])
            handle = self._opener(path)
            self._handles[path] = (stamp, handle)
            while len(self._handles) > self._maxsize:
                self._close(self._handles.popitem(last=False)[1][1])
            return handle

    def clear(self) -> None:
        with self._lock:
            while self._handles:
                self._close(self._handles.popitem()[1][1])

    @staticmethod
    def _close(handle: Any) -> None:
        try:
            handle.close()
        except Exception:  # closing a broken handle must not fail the read that evicts it
            pass


def _open_h5(path: str) -> Any:
    import h5py

    return h5py.File(path, "r")


def _open_nc(path: str) -> Any:
    import netCDF4

    return netCDF4.Dataset(path, "r")


def _open_fits(path: str) -> Any:
    from astropy.io import fits

    # Raw stored values: no BSCALE/BZERO, no unsigned-int conversion; decoding is xarray's job.
    return fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True, do_not_scale_image_data=True,
                     uint=False)


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


_H5_CACHE = _HandleCache(_open_h5, HDF5_LOCK)
_MAP_CACHE = _HandleCache(_FileMap, threading.Lock(), maxsize=16)
# Per (path, name, stamp): how an HDF5 dataset is stored, if its bytes can be used as they are (see _h5_layout).
_H5_LAYOUTS: OrderedDict[tuple[str, str, tuple[int, int]], Any] = OrderedDict()
_LAYOUTS_LOCK = threading.Lock()
_MIN_MAPPED_PIECE = 1 << 18  # below this a piece costs more per call than the copy it saves
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # POSIX; elsewhere pages leave when the map is closed
_NC_CACHE = _HandleCache(_open_nc, HDF5_LOCK)
_FITS_CACHE = _HandleCache(_open_fits, _FITS_LOCK)
_ZARR_CACHE: OrderedDict[tuple[str, str, tuple[int, int]], Any] = OrderedDict()
_ZARR_LOCK = threading.Lock()


def close_cached_files() -> None:
    """Close every file handle cached by array reads in this process (h5py, netCDF4, astropy, zarr, memory
    maps). Also runs at interpreter exit, so that files are closed before their libraries are torn down."""
    _H5_CACHE.clear()
    _NC_CACHE.clear()
    _FITS_CACHE.clear()
    _MAP_CACHE.clear()
    with _ZARR_LOCK:
        _ZARR_CACHE.clear()


atexit.register(close_cached_files)


# --------------------------------------------------------------------------- #
# array proxies
# --------------------------------------------------------------------------- #
def _basic_key(key: Any, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[Any, ...], tuple[int, ...]]:
    """Split a basic index into contiguous per-axis slices to read, a step/index to apply after, and axes to drop.

    Only basic indexing (ints, slices, Ellipsis) is supported; dask only ever asks for tuples of slices.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an array of {len(shape)} dimensions")
    key = key + (slice(None),) * (len(shape) - len(key))
    reads: list[slice] = []
    after: list[Any] = []
    drop: list[int] = []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} out of range for axis {axis} of size {n}")
            reads.append(slice(i, i + 1))
            after.append(slice(None))
            drop.append(axis)
        elif isinstance(k, slice):
            selected = range(*k.indices(n))
            if not selected:
                reads.append(slice(0, 0))
                after.append(slice(None))
            elif selected.step > 0:  # read the covering range, then take every step-th element
                reads.append(slice(selected[0], selected[-1] + 1))
                after.append(slice(None, None, selected.step) if selected.step != 1 else slice(None))
            else:  # read the covered range forwards, then walk it backwards from its end
                reads.append(slice(selected[-1], selected[0] + 1))
                after.append(slice(None, None, selected.step))
        else:
            raise TypeError(f"only basic indexing (ints, slices, Ellipsis) is supported, not {type(k).__name__}")
    return tuple(reads), tuple(after), tuple(drop)


class ArrayProxy:
    """A picklable recipe for one stored array: ``shape``, ``dtype``, ``ndim`` and basic ``__getitem__``.

    Subclasses implement :meth:`_read` for one format. Reading goes through a per-process handle cache;
    pickling a proxy pickles its recipe (path, array name, shape, dtype), never an open file.

    Attributes
    ----------
    reads : int
        Class-wide count of :meth:`__getitem__` calls in this process (all proxies), for diagnostics and tests
        of laziness.
    """

    reads: ClassVar[int] = 0

    def __init__(self, path: str, shape: Sequence[int], dtype: Any) -> None:
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._token = _stamp(self._stamp_path())

    def _stamp_path(self) -> str:
        return self.path

    @property
    def ndim(self) -> int:  # noqa: D102
        return len(self.shape)

    @property
    def size(self) -> int:  # noqa: D102
        return math.prod(self.shape)

    def _ident(self) -> tuple[Any, ...]:
        return (self.path,)

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, *self._ident(), self.shape, self.dtype.str, self._token)

    def __repr__(self) -> str:
        args = ", ".join(repr(x) for x in self._ident())
        return f"{type(self).__name__}({args}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        with _COUNT_LOCK:
            ArrayProxy.reads += 1
        reads, after, drop = _basic_key(key, self.shape)
        out_shape = tuple(s.stop - s.start for s in reads)
        if 0 in out_shape:
            data = np.empty(out_shape, dtype=self.dtype)
        else:
            data = np.asarray(self._read(reads))
            if data.shape != out_shape:  # libraries may drop or add length-1 axes; anything else is an error
                if [n for n in data.shape if n != 1] != [n for n in out_shape if n != 1]:
                    raise ValueError(f"{self!r}: read shape {data.shape} where {out_shape} was expected")
                data = data.reshape(out_shape)
        if data.dtype != self.dtype:  # byte order or a lossless widening only: never garbage
            if not np.can_cast(data.dtype, self.dtype, casting="safe"):
                raise TypeError(f"{self!r}: read {data.dtype} where {self.dtype} was expected")
            data = data.astype(self.dtype)
        if any(a != slice(None) for a in after):
            data = data[after]
        if drop:
            data = data.reshape(tuple(n for i, n in enumerate(data.shape) if i not in drop))
        return data

    def _read(self, key: tuple[slice, ...]) -> Any:
        """Values of the region `key` (one contiguous slice per axis, none empty)."""
        raise NotImplementedError

    def read_region(self, region: tuple[slice, ...], out: np.ndarray | None = None) -> np.ndarray:
        """Values of `region` (one contiguous slice per axis), into `out` where the format can read in place.

        Parameters
        ----------
        region : tuple of slice
            One ``slice(start, stop)`` per axis.
        out : numpy.ndarray, optional
            A C-contiguous array of the region's shape and this proxy's dtype. Formats that read in place fill
            and return it (no fresh allocation per block: page faults and zeroing of a new buffer cost as much
            as the read itself); the others return a new array and leave `out` alone.
        """
        return self[region]


class _HDF5Array(ArrayProxy):
    reads_in_place: ClassVar[bool] = True  # read_region fills the caller's buffer (h5py read_direct)

    def __init__(self, path: str, name: str, shape: Sequence[int], dtype: Any, *, strings: bool = False) -> None:
        super().__init__(path, shape, dtype)
        self.name = name
        self.strings = strings

    def _ident(self) -> tuple[Any, ...]:
        return (self.path, self.name)

    def _read(self, key: tuple[slice, ...]) -> Any:
        with HDF5_LOCK:
            dset = _H5_CACHE.get(self.path)[self.name]
            if self.strings:
                dset = dset.asstr()
            return dset[key] if key else dset[()]

    def read_region(self, region: tuple[slice, ...], out: np.ndarray | None = None) -> np.ndarray:  # noqa: D102
        if out is None or self.strings or not region or 0 in out.shape:
            return self[region]
        with _COUNT_LOCK:
            ArrayProxy.reads += 1
        with HDF5_LOCK:
            _H5_CACHE.get(self.path)[self.name].read_direct(out, region)  # HDF5 converts byte order if needed
        return out

    def iter_region(self, region: tuple[slice, ...]) -> Iterator[np.ndarray] | None:
        """The values of `region` as pieces in file order (each element once; the order of elements within
        the region is lost), straight from the page cache through a read-only memory map: no copy.

        Only for datasets whose bytes are the values (no filters, native byte order, a plain file) and
        regions made of whole allocated chunks (or one contiguous range) of at least ~256 KiB per piece;
        None otherwise, and the caller reads with :meth:`read_region`. Each piece's pages are dropped from
        this process's mapping once the caller asks for the next one, so resident memory stays one piece.
        """
        return None if self.strings else _mapped_region(self.path, self.name, region, self.dtype)


def _mapped_region(path: str, name: str, region: tuple[slice, ...], dtype: np.dtype) -> Iterator[np.ndarray] | None:
    """Pieces of `region` of HDF5 dataset `name` straight from a memory map of the file, or None."""
    if not region or (layout := _h5_layout(path, name)) is None or layout[2] != dtype:
        return None
    spans = _h5_spans(path, name, region, layout)
    if spans is None:
        return None
    with _COUNT_LOCK:
        ArrayProxy.reads += 1
    return _mapped_pieces(_MAP_CACHE.get(path).map, spans, dtype)


def _h5_layout(path: str, name: str) -> Any:
    """("contiguous", byte offset, dtype) or ("chunked", chunk shape, dtype) when the stored bytes are the values
    as numpy would read them, else None (also when h5py cannot open the file or find `name`: netCDF-3 files).
    Cached per process and file version."""
    key = (path, name, _stamp(path))
    with _LAYOUTS_LOCK:
        if key in _H5_LAYOUTS:
            return _H5_LAYOUTS[key]
    try:
        layout = _h5_inspect(path, name)
    except (OSError, KeyError, ValueError, TypeError):
        layout = None
    with _LAYOUTS_LOCK:
        _H5_LAYOUTS[key] = layout
        while len(_H5_LAYOUTS) > 256:
            _H5_LAYOUTS.popitem(last=False)
    return layout


def _h5_inspect(path: str, name: str) -> tuple[str, Any, np.dtype] | None:
    import h5py

    with HDF5_LOCK:
        dset = _H5_CACHE.get(path)[name]
        dcpl = dset.id.get_create_plist()
        layout: tuple[str, Any, np.dtype] | None = None
        plain = (dset.file.driver == "sec2" and dcpl.get_nfilters() == 0 and dcpl.get_external_count() == 0
                 and dset.dtype.isnative and dset.dtype.kind in "biuf" and dset.dtype.fields is None)
        if plain and dcpl.get_layout() == h5py.h5d.CHUNKED:
            layout = ("chunked", tuple(dset.chunks), dset.dtype)
        elif plain and dcpl.get_layout() == h5py.h5d.CONTIGUOUS and dset.id.get_offset() is not None:
            layout = ("contiguous", int(dset.id.get_offset()), dset.dtype)
    return layout


def _h5_spans(path: str, name: str, region: tuple[slice, ...], layout: tuple[str, Any, np.dtype]
              ) -> list[tuple[int, int]] | None:
    """(byte offset, bytes) ranges of the file holding exactly the values of `region` (dataset stored as
    `layout`, from :func:`_h5_layout`), adjacent ranges merged, or None when the region is not made of whole
    allocated chunks / one contiguous range."""
    with HDF5_LOCK:
        dset = _H5_CACHE.get(path)[name]
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


class _NetCDFArray(ArrayProxy):
    def __init__(self, path: str, name: str, shape: Sequence[int], dtype: Any) -> None:
        super().__init__(path, shape, dtype)
        self.name = name

    def _ident(self) -> tuple[Any, ...]:
        return (self.path, self.name)

    def _read(self, key: tuple[slice, ...]) -> Any:
        with HDF5_LOCK:
            var = _NC_CACHE.get(self.path)[self.name]
            var.set_auto_maskandscale(False)
            var.set_auto_chartostring(False)
            return var[key] if key else var[...]

    def iter_region(self, region: tuple[slice, ...]) -> Iterator[np.ndarray] | None:
        """As :meth:`_HDF5Array.iter_region`: a netCDF-4 file is an HDF5 file and the variable the HDF5 dataset
        of the same path (opened with h5py, read-only, beside netCDF-C's handle). None for netCDF-3."""
        return _mapped_region(self.path, self.name, region, self.dtype)


def _zarr_meta_file(path: str, component: str) -> str:
    base = os.path.join(path, component) if component else path
    for marker in ("zarr.json", ".zarray"):
        candidate = os.path.join(base, marker)
        if os.path.isfile(candidate):
            return candidate
    return base


def _zarr_open(path: str, component: str) -> Any:
    import zarr

    return zarr.open_array(store=path, path=component, mode="r") if component else \
        zarr.open_array(store=path, mode="r")


class _ZarrArray(ArrayProxy):
    def __init__(self, path: str, component: str, shape: Sequence[int], dtype: Any) -> None:
        self.component = component
        super().__init__(path, shape, dtype)

    def _stamp_path(self) -> str:
        return _zarr_meta_file(self.path, self.component)

    def _ident(self) -> tuple[Any, ...]:
        return (self.path, self.component)

    def _array(self) -> Any:
        cache_key = (self.path, self.component, _stamp(self._stamp_path()))
        with _ZARR_LOCK:
            arr = _ZARR_CACHE.get(cache_key)
            if arr is not None:
                _ZARR_CACHE.move_to_end(cache_key)
                return arr
        arr = _zarr_open(self.path, self.component)
        with _ZARR_LOCK:
            _ZARR_CACHE[cache_key] = arr
            while len(_ZARR_CACHE) > 256:
                _ZARR_CACHE.popitem(last=False)
        return arr

    def _read(self, key: tuple[slice, ...]) -> Any:
        return self._array()[key if key else ()]


class _FITSImage(ArrayProxy):
    def __init__(self, path: str, index: int, shape: Sequence[int], dtype: Any) -> None:
        super().__init__(path, shape, dtype)
        self.index = index

    def _ident(self) -> tuple[Any, ...]:
        return (self.path, self.index)

    def _read(self, key: tuple[slice, ...]) -> Any:
        with _FITS_LOCK:
            hdu = _FITS_CACHE.get(self.path)[self.index]
            # section reads only the requested region (for tile-compressed HDUs: only the tiles it covers).
            return np.array(hdu.section[key], copy=True)


def _dicom_read(path: str, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    # raw=True: stored values as decoded from the transfer syntax, no colour-space conversion; pydicom never
    # applies the modality LUT here. `index` reads one frame of a multi-frame file.
    return pixel_array(path, index=index, raw=True)


class _DICOMFile(ArrayProxy):
    """Pixel data of one DICOM file; for a multi-frame file axis 0 is the frame, read frame by frame."""

    def __init__(self, path: str, shape: Sequence[int], dtype: Any, *, multiframe: bool) -> None:
        super().__init__(path, shape, dtype)
        self.multiframe = multiframe

    def _read(self, key: tuple[slice, ...]) -> Any:
        if not self.multiframe:
            return _dicom_read(self.path, None)[key]
        frames = key[0]
        if frames.start == 0 and frames.stop == self.shape[0]:
            return _dicom_read(self.path, None).reshape(self.shape)[key]
        return np.stack([_dicom_read(self.path, i)[key[1:]] for i in range(frames.start, frames.stop)])


class _DICOMSeries(ArrayProxy):
    """Single-frame DICOM files stacked along a new leading axis, in the given order."""

    def __init__(self, paths: Sequence[str], shape: Sequence[int], dtype: Any) -> None:
        self.paths = tuple(str(p) for p in paths)
        super().__init__(self.paths[0], shape, dtype)
        self._token = tuple(_stamp(p) for p in self.paths)  # type: ignore[assignment]

    def _ident(self) -> tuple[Any, ...]:
        return self.paths

    def __repr__(self) -> str:
        return f"_DICOMSeries({len(self.paths)} files, shape={self.shape}, dtype={self.dtype})"

    def _read(self, key: tuple[slice, ...]) -> Any:
        return np.stack([_dicom_read(p, None)[key[1:]] for p in self.paths[key[0]]])


# --------------------------------------------------------------------------- #
# per-format openers: metadata only, no data read
# --------------------------------------------------------------------------- #
@dataclass
class _Spec:
    proxy: ArrayProxy
    dims: list[str]
    attrs: dict[str, Any]
    disk_chunks: tuple[int, ...] | None
    coords: dict[str, Any] = field(default_factory=dict)


def _unique_dims(names: Sequence[str | None], ndim: int) -> list[str]:
    """Dimension names with blanks and repeats replaced by ``dim_<axis>`` (xarray needs unique names)."""
    out: list[str] = []
    for axis in range(ndim):
        name = names[axis] if axis < len(names) else None
        name = str(name) if name else f"dim_{axis}"
        if name in out:
            name = f"dim_{axis}"
        while name in out:
            name = f"{name}_"
        out.append(name)
    return out


def _str(value: Any) -> Any:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return value


def _missing(kind: str, path: str, name: str, available: Iterable[str]) -> KeyError:
    names = sorted(available)
    return KeyError(f"no array {name!r} in {kind} file {path}; available: {names}")


_H5_HIDDEN = {"DIMENSION_LIST", "REFERENCE_LIST"}


def _h5_names(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda n, obj: names.append("/" + n) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_hdf5(path: str, name: str) -> _Spec:
    import h5py

    with HDF5_LOCK:
        f = _H5_CACHE.get(path)  # the handle reads will use too: one open per file and process, not per array
        obj = f.get(name) if name.startswith("/") else None
        if not isinstance(obj, h5py.Dataset):
            raise _missing("HDF5", path, name, _h5_names(f))
        dset = obj
        is_scale = dset.ndim == 1 and h5py.h5ds.is_scale(dset.id)
        attrs: dict[str, Any] = {}
        for key in dset.attrs:
            if key in _H5_HIDDEN or (is_scale and key in ("CLASS", "NAME")):
                continue
            try:
                attrs[key] = _str(dset.attrs[key])
            except Exception:  # an unreadable attribute type must not cost the array
                continue
        if is_scale:
            dim_names: list[str | None] = [dset.name.rsplit("/", 1)[-1]]
        else:
            dim_names = []
            for dim in dset.dims:
                label = dim.label
                if not label and len(dim):
                    label = dim[0].name.rsplit("/", 1)[-1]
                dim_names.append(label or None)
        dt = dset.dtype
        strings = h5py.check_string_dtype(dt) is not None and dt.kind == "O"
        if ("_FillValue" not in attrs and dt.kind in "biufc"
                and dset.id.get_create_plist().fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED):
            attrs["_FillValue"] = np.array(dset.fillvalue, dtype=dt)[()]
        shape = dset.shape if dset.shape is not None else ()
        proxy = _HDF5Array(path, dset.name, shape, np.dtype(object) if strings else dt, strings=strings)
        chunks = tuple(dset.chunks) if dset.chunks else None
    return _Spec(proxy, _unique_dims(dim_names, len(shape)), attrs, chunks)


def _nc_names(ds: Any) -> list[str]:
    names: list[str] = []

    def walk(group: Any) -> None:
        prefix = "" if group.path == "/" else group.path
        names.extend(f"{prefix}/{v}" for v in group.variables)
        for sub in group.groups.values():
            walk(sub)

    walk(ds)
    return names


def _open_netcdf(path: str, name: str) -> _Spec:
    with HDF5_LOCK:
        ds = _NC_CACHE.get(path)  # the handle reads will use too: one open per file and process, not per array
        group_path, _, var_name = name.rpartition("/")
        var = None
        if name.startswith("/") and var_name:
            try:
                group = ds[group_path] if group_path else ds
                var = group.variables.get(var_name)
            except (IndexError, KeyError):
                var = None
        if var is None:
            raise _missing("netCDF", path, name, _nc_names(ds))
        attrs = {k: _str(var.getncattr(k)) for k in var.ncattrs()}
        dtype = np.dtype(object) if var.dtype is str else np.dtype(var.dtype)
        chunks = None
        if not ds.data_model.startswith("NETCDF3"):
            chunking = var.chunking()
            chunks = tuple(int(c) for c in chunking) if isinstance(chunking, (list, tuple)) else None
        shape = tuple(int(s) for s in var.shape)
        proxy = _NetCDFArray(path, name, shape, dtype)
        dims = list(var.dimensions)
    return _Spec(proxy, _unique_dims(dims, len(shape)), attrs, chunks)


def _zarr_names(path: str) -> list[str]:
    import zarr

    node = zarr.open(store=path, mode="r")
    if isinstance(node, zarr.Array):
        return ["/"]
    return ["/" + n for n, m in node.members(max_depth=None) if isinstance(m, zarr.Array)]


def _open_zarr(path: str, name: str) -> _Spec:
    import zarr

    component = name.strip("/")
    arr = None
    if name.startswith("/"):
        try:
            arr = _zarr_open(path, component)
        except Exception:
            available = _zarr_names(path)
            if name in available:  # the array exists but cannot be opened: that error is the answer
                raise
            raise _missing("Zarr", path, name, available) from None
    if not isinstance(arr, zarr.Array):
        raise _missing("Zarr", path, name, _zarr_names(path))
    attrs: dict[str, Any] = dict(arr.attrs)
    meta: Any = arr.metadata
    dims: Sequence[str | None]
    if getattr(meta, "zarr_format", 2) == 3:
        dims = list(meta.dimension_names) if meta.dimension_names else []
    else:
        dims = attrs.pop("_ARRAY_DIMENSIONS", None) or []
    dtype = np.dtype(arr.dtype)
    if "_FillValue" not in attrs and arr.fill_value is not None and dtype.kind in "biufc":
        attrs["_FillValue"] = np.array(arr.fill_value, dtype=dtype)[()]
    shards = getattr(arr, "shards", None)
    disk = tuple(int(c) for c in (shards or arr.chunks))
    proxy = _ZarrArray(path, component, arr.shape, dtype)
    return _Spec(proxy, _unique_dims(dims, len(arr.shape)), attrs, disk)


_BITPIX = {8: "u1", 16: "i2", 32: "i4", 64: "i8", -32: "f4", -64: "f8"}
_FITS_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
                    "BLANK"}
_FITS_AXES = {1: "x", 2: "y", 3: "z"}


def _fits_names(hdul: Any) -> list[str]:
    from astropy.io import fits

    return [f"HDU{i}" for i, h in enumerate(hdul)
            if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and h.header.get("NAXIS", 0)]


def _open_fits_image(path: str, name: str) -> _Spec:
    from astropy.io import fits

    from metaextract_dask.formats.fits import header_to_dict

    index = int(name[3:]) if name.startswith("HDU") and name[3:].isdigit() else -1
    with _open_fits(path) as hdul:
        try:
            hdu = hdul[index] if index >= 0 else None
        except IndexError:
            hdu = None
        image_types = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
        if not isinstance(hdu, image_types) or not hdu.header.get("NAXIS", 0):
            raise _missing("FITS image", path, name, _fits_names(hdul))
        header = hdu.header
        naxis = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header["NAXIS"]) + 1)]
        bitpix = int(header["BITPIX"])
        attrs = {k: v for k, v in header_to_dict(header).items()
                 if k not in _FITS_STRUCTURAL and not (k.startswith("NAXIS") and k[5:].isdigit())}
        if "BUNIT" in header:
            attrs["units"] = str(header["BUNIT"])
        if "BSCALE" in header:
            attrs["scale_factor"] = float(header["BSCALE"])
        if "BZERO" in header:
            attrs["add_offset"] = float(header["BZERO"])
        dtype = np.dtype(_BITPIX[bitpix])
        if "BLANK" in header and bitpix > 0:
            attrs["_FillValue"] = np.array(int(header["BLANK"]), dtype=dtype)[()]
        chunks = None
        if isinstance(hdu, fits.CompImageHDU):
            chunks = tuple(int(t) for t in hdu.tile_shape)  # numpy order already
        shape = tuple(naxis[::-1])
    dims = [_FITS_AXES.get(k, f"axis{k}") for k in range(len(naxis), 0, -1)]
    return _Spec(_FITSImage(path, index, shape, dtype), dims, attrs, chunks)


_DICOM_ATTRS = ("Modality", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
                "PixelRepresentation", "SamplesPerPixel", "RescaleType", "PixelSpacing", "SliceThickness",
                "ImageOrientationPatient", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")


def _dicom_value(value: Any) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, IS

    if isinstance(value, MultiValue) or isinstance(value, (list, tuple)):
        return [_dicom_value(v) for v in value]
    if isinstance(value, DSfloat):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def _dicom_pixel_layout(ds: Any, path: str) -> tuple[tuple[int, ...], np.dtype, list[str], int]:
    rows, cols, bits = ds.get("Rows"), ds.get("Columns"), ds.get("BitsAllocated")
    if not rows or not cols or not bits:
        raise KeyError(f"no array 'PixelData' in DICOM file {path}; available: []")
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    bits = int(bits)
    itemsize = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
    dtype = np.dtype(f"{'i' if signed and bits > 1 else 'u'}{itemsize}")
    shape = ((frames,) if frames > 1 else ()) + (int(rows), int(cols)) + ((samples,) if samples > 1 else ())
    dims = (["frame"] if frames > 1 else []) + ["row", "column"] + (["sample"] if samples > 1 else [])
    return shape, dtype, dims, frames


def _dicom_attrs(ds: Any) -> dict[str, Any]:
    attrs = {k: _dicom_value(ds.get(k)) for k in _DICOM_ATTRS if ds.get(k) not in (None, "")}
    if ds.get("RescaleSlope") not in (None, ""):
        attrs["scale_factor"] = float(ds.RescaleSlope)
    if ds.get("RescaleIntercept") not in (None, ""):
        attrs["add_offset"] = float(ds.RescaleIntercept)
    units = ds.get("RescaleType") or ("HU" if ds.get("Modality") == "CT" and "add_offset" in attrs else None)
    if units:
        attrs["units"] = str(units)
    return attrs


def _open_dicom(path: str, name: str) -> _Spec:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if name != "PixelData":
        available = ["PixelData"] if ds.get("Rows") and ds.get("BitsAllocated") else []
        raise _missing("DICOM", path, name, available)
    shape, dtype, dims, frames = _dicom_pixel_layout(ds, path)
    attrs = _dicom_attrs(ds)
    chunks = (1, *shape[1:]) if frames > 1 else None
    return _Spec(_DICOMFile(path, shape, dtype, multiframe=frames > 1), dims, attrs, chunks)


_OPENERS: dict[str, Callable[[str, str], _Spec]] = {
    "hdf5": _open_hdf5,
    "netcdf": _open_netcdf,
    "zarr": _open_zarr,
    "fits": _open_fits_image,
    "dicom": _open_dicom,
}


# --------------------------------------------------------------------------- #
# dask + xarray assembly
# --------------------------------------------------------------------------- #
def _format_of(path: str) -> str:
    from metaextract_dask.formats import sniff

    if not os.path.exists(path):
        raise FileNotFoundError(path)
    reader = sniff(path)
    if reader is None:
        raise ValueError(f"{path}: not a file of any known format")
    if reader.name not in _OPENERS:
        raise ValueError(f"{path}: format {reader.name!r} has no array opener "
                         f"(supported: {', '.join(sorted(_OPENERS))})")
    return reader.name


def _current_memory_limit() -> int | None:
    client = None
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        client = None
    try:
        return worker_memory_limit(client)
    except Exception:  # a client that cannot answer (closing, old scheduler) only costs the cap
        return None


def _dask_chunks(spec: _Spec, chunks: Any, memory_limit: int | None) -> Any:
    proxy = spec.proxy
    if chunks is None or isinstance(chunks, Mapping):
        auto = adaptive_chunks(proxy.shape, proxy.dtype, spec.disk_chunks,
                               memory_limit=memory_limit or _current_memory_limit())
        if chunks is None:
            return auto
        merged = list(auto)
        for key, value in chunks.items():
            axis = spec.dims.index(key) if isinstance(key, str) else int(key)
            merged[axis] = value
        return tuple(merged)
    return chunks


def _is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf"


def _decode(name: str, var: xarray.Variable) -> xarray.Variable:
    """xarray's CF coders, lazily: mask fill values, unpack scale/offset, native byte order; times stay numbers."""
    import xarray as xr

    if not _is_numeric(var.dtype):  # strings, compounds: nothing to decode
        return var
    return xr.conventions.decode_cf_variable(
        name, var, concat_characters=False, mask_and_scale=True, decode_times=False,
        decode_endianness=True, stack_char_dim=False, decode_timedelta=False)


def _to_dataarray(spec: _Spec, name: str, fmt: str, *, decode: bool, chunks: Any,
                  memory_limit: int | None) -> xarray.DataArray:
    import dask.array as da
    import xarray as xr
    from dask.base import tokenize

    proxy = spec.proxy
    dchunks = _dask_chunks(spec, chunks, memory_limit)
    token = tokenize(proxy, dchunks)
    label = fmt if fmt != "dicom" or not isinstance(proxy, _DICOMSeries) else "dicom-series"
    data = da.from_array(proxy, chunks=dchunks, name=f"open-{label}-{token}", lock=False, asarray=True,
                         meta=np.ndarray, inline_array=False)
    encoding: dict[str, Any] = {
        "source": proxy.path,
        "format": fmt,
        "variable": name,
        "chunks": spec.disk_chunks,
        "preferred_chunks": dict(zip(spec.dims, spec.disk_chunks)) if spec.disk_chunks else {},
        "original_shape": proxy.shape,
        "dtype": proxy.dtype,
    }
    var = xr.Variable(spec.dims, data, attrs=dict(spec.attrs), encoding=encoding)
    if decode:
        var = _decode(name, var)
    out = xr.DataArray(var, coords=spec.coords or None, name=name)
    out.encoding = dict(var.encoding)  # DataArray(Variable) keeps attrs but not encoding
    return out


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def open_array(path: PathLike, name: str, *, decode: bool = True, chunks: Any = None,
               memory_limit: int | None = None) -> xarray.DataArray:
    """Open one array of a file or Zarr store as a lazy, dask-backed DataArray.

    Parameters
    ----------
    path : str or path-like
        A file (HDF5, netCDF3/4, FITS, DICOM) or a Zarr v2/v3 store directory. The format is detected by
        content (:func:`metaextract_dask.formats.sniff`).
    name : str
        The array as the catalog's ``arrays.name`` spells it: ``"/grp/var"`` (root ``"/var"``; a Zarr store
        that is an array: ``"/"``), ``"HDU<index>"`` for FITS image HDUs, ``"PixelData"`` for DICOM.
    decode : bool, default True
        Apply CF decoding lazily with xarray's coders: mask ``_FillValue``/``missing_value`` to NaN, unpack
        ``scale_factor``/``add_offset`` (FITS BSCALE/BZERO/BLANK and DICOM RescaleSlope/RescaleIntercept are
        mapped to these first). Times are left numeric. False: the raw stored values, with the decoding keys
        in ``attrs``.
    chunks : optional
        Dask chunks (anything :func:`dask.array.from_array` accepts, or a dict by dimension name or axis, the
        other axes adaptive). Default: :func:`~metaextract_dask.chunking.adaptive_chunks` from the on-disk
        chunks and `memory_limit`.
    memory_limit : int, optional
        Worker memory in bytes that caps the chunk size; default the smallest worker memory limit of the
        current ``distributed`` client (or of this worker), none without one.

    Returns
    -------
    xarray.DataArray
        Dask-backed; nothing is read until compute. ``attrs`` hold the array's attributes, ``encoding`` the
        on-disk layout (``chunks``, ``preferred_chunks``, ``source``, ``format``, ``variable``, ``dtype``).

    Raises
    ------
    KeyError
        If `name` is not an array of `path`; the message lists the available names.
    ValueError
        If `path` is of no known format, or of one without arrays.
    """
    spec, fmt = _spec_of(path, name)
    return _to_dataarray(spec, name, fmt, decode=decode, chunks=chunks, memory_limit=memory_limit)


def _spec_of(path: PathLike, name: str) -> tuple[_Spec, str]:
    path = os.fspath(path)
    fmt = _format_of(path)
    return _OPENERS[fmt](path, name), fmt


def _open_raw(path: PathLike, name: str, *, memory_limit: int | None = None) -> tuple[xarray.DataArray, ArrayProxy]:
    """:func:`open_array` with ``decode=False``, and the recipe behind it (for tasks that read regions
    themselves, as the profiler does)."""
    spec, fmt = _spec_of(path, name)
    return _to_dataarray(spec, name, fmt, decode=False, chunks=None, memory_limit=memory_limit), spec.proxy


def list_arrays(path: PathLike) -> list[str]:
    """Names of the arrays of `path` that :func:`open_array` opens (catalog spelling, FITS tables left out)."""
    path = os.fspath(path)
    fmt = _format_of(path)
    if fmt == "hdf5":
        import h5py

        with HDF5_LOCK, h5py.File(path, "r") as f:
            return _h5_names(f)
    if fmt == "netcdf":
        import netCDF4

        with HDF5_LOCK, netCDF4.Dataset(path, "r") as ds:
            return _nc_names(ds)
    if fmt == "zarr":
        return sorted(_zarr_names(path))
    if fmt == "fits":
        with _open_fits(path) as hdul:
            return _fits_names(hdul)
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    return ["PixelData"] if header.get("Rows") and header.get("Columns") and header.get("BitsAllocated") else []


def _file_attrs(path: str, fmt: str) -> dict[str, Any]:
    from metaextract_dask.formats import sniff

    reader = sniff(path)
    try:
        return dict(reader.read(path).attrs) if reader is not None else {}
    except Exception:  # file-level attributes are a convenience; the arrays are the point
        return {}


def open_arrays(path: PathLike, *, decode: bool = True, memory_limit: int | None = None) -> xarray.Dataset:
    """Open every array of one file or Zarr store as a lazy Dataset.

    Variables are named as the catalog names them (``"/grp/var"``, ``"HDU0"``, ``"PixelData"``); FITS table
    HDUs are left out. Dimensions of the same name but different lengths in different arrays (phony
    ``dim_0``, FITS ``y``/``x`` of two images, same-named dimensions of two netCDF groups) are told apart as
    ``<dim>_1``, ``<dim>_2``, ... in the order the arrays are listed. ``attrs`` are the file-level attributes.

    Parameters
    ----------
    path : str or path-like
        File or Zarr store.
    decode : bool, default True
        As for :func:`open_array`.
    memory_limit : int, optional
        As for :func:`open_array`.
    """
    import xarray as xr

    path = os.fspath(path)
    fmt = _format_of(path)
    sizes: dict[str, int] = {}
    variables: dict[Hashable, Any] = {}
    for name in list_arrays(path):
        arr = open_array(path, name, decode=decode, memory_limit=memory_limit)
        renames: dict[Hashable, str] = {}
        for dim, n in zip(arr.dims, arr.shape):
            new, k = str(dim), 0
            while new in sizes and sizes[new] != n:
                k += 1
                new = f"{dim}_{k}"
            sizes[new] = n
            if new != dim:
                renames[dim] = new
        variables[name] = arr.rename(renames) if renames else arr
    return xr.Dataset(variables, attrs=_file_attrs(path, fmt))


def _dicom_series_paths(paths: PathLike | Iterable[PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        if p.is_dir():
            return sorted(str(c) for c in p.iterdir() if c.is_file())
        return [str(p)]
    return [os.fspath(p) for p in paths]


def open_dicom_series(paths: PathLike | Iterable[PathLike], *, decode: bool = True, chunks: Any = None,
                      memory_limit: int | None = None) -> xarray.DataArray:
    """Stack single-frame DICOM files of one series into a lazy 3-D volume ``(slice, row, column)``.

    Slices are ordered by their position along the slice normal (cross product of the row and column
    direction cosines of ImageOrientationPatient, dotted with ImagePositionPatient), ties and files without
    position or orientation by InstanceNumber. Only headers are read here; pixels are read per slice (or per
    group of slices, see `chunks`) at compute time.

    Parameters
    ----------
    paths : path or iterable of paths
        The files of the series, in any order (a directory: every file in it).
    decode : bool, default True
        Apply the linear modality LUT (RescaleSlope/RescaleIntercept). When all slices share slope and
        intercept they appear as ``scale_factor``/``add_offset`` (raw) and are applied by xarray's coders;
        otherwise they are per-slice coordinates ``scale_factor``/``add_offset`` applied slice by slice.
    chunks, memory_limit : optional
        As for :func:`open_array`; by default whole slices, several per chunk when they are small.

    Returns
    -------
    xarray.DataArray
        Named ``"PixelData"``, with coordinates ``z`` (position along the normal, NaN where unknown),
        ``instance_number`` and ``path`` along ``slice``.

    Raises
    ------
    ValueError
        If no paths are given, or the files do not share SeriesInstanceUID, Rows, Columns and pixel type, or a
        file is multi-frame.
    """
    import pydicom
    import xarray as xr

    files = _dicom_series_paths(paths)
    if not files:
        raise ValueError("open_dicom_series: no files given")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    layouts = [_dicom_pixel_layout(ds, p) for ds, p in zip(headers, files)]
    for key in ("SeriesInstanceUID", "Rows", "Columns"):
        values = {str(ds.get(key)) for ds in headers}
        if len(values) != 1:
            raise ValueError(f"open_dicom_series: files differ in {key}: {sorted(values)}")
    if len({(lay[0], lay[1].str) for lay in layouts}) != 1:
        raise ValueError("open_dicom_series: files differ in pixel layout (shape/samples/bits/sign): "
                         f"{sorted({(lay[0], lay[1].str) for lay in layouts})}")
    if layouts[0][3] > 1:
        raise ValueError("open_dicom_series: multi-frame files are volumes already; use open_array")

    def position(ds: Any) -> float:
        iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
        if not iop or not ipp or len(iop) != 6 or len(ipp) != 3:
            return math.nan
        normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
        return float(np.dot(normal, np.asarray(ipp, dtype=float)))

    z = np.array([position(ds) for ds in headers])
    inst = np.array([int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") not in (None, "") else -1
                     for ds in headers], dtype=np.int64)
    if np.isnan(z).any():  # position unknown for some slice: InstanceNumber orders the whole series
        order = sorted(range(len(files)), key=lambda i: (inst[i] < 0, inst[i], files[i]))
    else:
        order = sorted(range(len(files)), key=lambda i: (z[i], inst[i], files[i]))
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    shape2d, dtype = layouts[0][0], layouts[0][1]
    shape = (len(files), *shape2d)
    dims = ["slice", *layouts[0][2]]
    attrs = _dicom_attrs(headers[0])
    slopes = np.array([float(ds.get("RescaleSlope")) if ds.get("RescaleSlope") not in (None, "") else 1.0
                       for ds in headers])
    intercepts = np.array([float(ds.get("RescaleIntercept")) if ds.get("RescaleIntercept") not in (None, "")
                           else 0.0 for ds in headers])
    varying = bool(np.ptp(slopes) or np.ptp(intercepts))
    coords: dict[str, Any] = {
        "z": ("slice", z[order]),
        "instance_number": ("slice", inst[order]),
        "path": ("slice", np.array(files, dtype=object)),
    }
    if varying:
        attrs.pop("scale_factor", None)
        attrs.pop("add_offset", None)
        coords["scale_factor"] = ("slice", slopes)
        coords["add_offset"] = ("slice", intercepts)
    spec = _Spec(_DICOMSeries(files, shape, dtype), dims, attrs, (1, *shape2d), coords)
    arr = _to_dataarray(spec, "PixelData", "dicom", decode=decode, chunks=chunks, memory_limit=memory_limit)
    if decode and varying:
        scale = xr.DataArray(slopes, dims="slice")
        offset = xr.DataArray(intercepts, dims="slice")
        decoded = arr * scale + offset
        decoded.attrs = dict(arr.attrs)
        decoded.encoding = dict(arr.encoding)
        decoded.name = arr.name
        return decoded
    return arr
