"""The contract every format backend implements: detection, catalog records, arrays and their recipes.

A backend (in the style of xarray's ``BackendEntrypoint``) is one class in one module that holds a format's
whole story:

* :meth:`FormatBackend.sniff` -- does this file's head (or this directory) belong to the format;
* :meth:`FormatBackend.read` -- the catalog rows of one file (:class:`Records`);
* :meth:`FormatBackend.list_arrays` / :meth:`FormatBackend.open_array` -- the arrays and, for one of them, an
  :class:`ArraySpec`: a picklable :class:`ArrayProxy` (the recipe a dask graph holds) plus dimension names,
  attributes spelled the CF way (``_FillValue``, ``scale_factor``, ``add_offset``, ``units``) and the on-disk
  chunks.

Abilities are declared as class attributes (``supports_arrays``, ``directories``, ``extra_tables``,
``not_profiled``; on proxies ``reads_in_place`` and ``maps_regions``), never guessed. The package's conformance
kit (:mod:`metaextract_dask.testing`) checks a backend against this contract.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from metaextract_dask.formats.handles import FITS_LOCK, HDF5_LOCK, stamp

__all__ = ["FormatBackend", "FormatReader", "Records", "ArraySpec", "ArrayProxy", "MemberProxy", "MissingDependencyError",
           "HDF5_LOCK", "FITS_LOCK", "missing_array", "unique_dims", "as_text", "truncation", "TRUNCATED",
           "attr_json_limit", "fast_readers"]

#: How an ``arrays.error`` that says the file cannot hold the declared data begins (profiles report it as an
#: error of that type, in milliseconds, without building a graph over the declared size).
TRUNCATED = "truncated"


class MissingDependencyError(ImportError):
    """A format's optional library is not installed; the message says what to install."""


@dataclass
class Records:
    """What a backend extracts from one file, as plain picklable rows.

    Attributes
    ----------
    format : str
        The format name written to ``files.format``: one of the backend's ``catalog_formats``.
    format_version : str, optional
        Version or flavour within the format (netCDF data model, Zarr format, DICOM transfer syntax, ...).
    attrs : dict
        File-level attributes (JSON-friendly values).
    groups : dict
        Hierarchical containers (HDF5/netCDF/Zarr groups) by path, each ``{"attrs": ..., "dims": ...}``.
    arrays : list of dict
        Rows of the ``arrays`` table, without the ``path`` column.
    tables : dict
        Rows of the backend's extra tables (``extra_tables``), by table name, without the ``path`` column.
    warnings : list of str
        Problems the backend met and worked around (an invalid value left out of a typed column, ...); they
        join the library warnings in ``files.warnings``.
    """

    format: str
    format_version: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    arrays: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class FormatBackend:
    """Base class of format backends (built-in and plugins).

    A backend is stateless and cheap to construct. It opens and closes files inside :meth:`read` and
    :meth:`list_arrays`; :meth:`open_array` may use the per-process handle cache
    (:mod:`metaextract_dask.formats.handles`), and its proxy always does. Nothing open ever enters a task graph.
    """

    #: Registry and entry-point key.
    name: ClassVar[str] = ""
    #: ``files.format`` values this backend writes (default: its name). The row's format finds its backend.
    catalog_formats: ClassVar[tuple[str, ...]] = ()
    #: Lower is tried first; specific formats (netCDF-4) go before general ones (HDF5).
    priority: ClassVar[int] = 100
    #: True for backends of directory stores (Zarr).
    directories: ClassVar[bool] = False
    #: True when :meth:`list_arrays` and :meth:`open_array` are implemented.
    supports_arrays: ClassVar[bool] = False
    #: Extra catalog tables this backend fills through ``Records.tables``: {name: pyarrow schema}. The schema
    #: must start with a non-null ``path`` string column.
    extra_tables: ClassVar[Mapping[str, Any]] = {}
    #: File name suffixes that claim this format (a file that wears one without the content is flagged).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: ``arrays.kind`` values listed in the catalog but not opened as one array nor profiled, with the reason.
    not_profiled: ClassVar[Mapping[str, str]] = {}
    #: Libraries the backend needs: ``"module"`` or ``"module:pip-name"``. Missing ones disable this format
    #: only: its files become error rows that say what to install.
    requires: ClassVar[tuple[str, ...]] = ()

    _available: ClassVar[dict[type, str | None]] = {}
    _available_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def formats(cls) -> tuple[str, ...]:
        """The ``files.format`` values of this backend."""
        return cls.catalog_formats or (cls.name,)

    def require(self) -> None:
        """Import the libraries the backend needs (once per process); raise :class:`MissingDependencyError`
        naming the package to install when one is missing."""
        cls = type(self)
        with self._available_lock:
            if cls not in self._available:
                problem = None
                for spec in cls.requires:
                    module, _, pip_name = spec.partition(":")
                    try:
                        importlib.import_module(module)
                    except ImportError as exc:
                        problem = (f"format {cls.name!r} needs the {pip_name or module!r} package "
                                   f"(pip install {pip_name or module}): {exc}")
                        break
                self._available[cls] = problem
            problem = self._available[cls]
        if problem:
            raise MissingDependencyError(problem)

    def sniff(self, head: bytes, path: str) -> bool:
        """Return True if the file whose first bytes are `head` is of this format.

        Parameters
        ----------
        head : bytes
            The first ``metaextract.scan.sniff-bytes`` bytes of the file (empty for a directory).
        path : str
            Local path, for backends that need more than the head to decide (kept cheap).
        """
        raise NotImplementedError

    def read(self, path: str) -> Records:
        """Extract the catalog records of the file at `path`; raise on unreadable input."""
        raise NotImplementedError

    def error_format(self, head: bytes) -> str:
        """``files.format`` of an error row for a file this backend claimed but could not read."""
        return self.formats()[0]

    def list_arrays(self, path: str) -> list[str]:
        """Names (catalog spelling) of the arrays :meth:`open_array` opens, in catalog order."""
        raise NotImplementedError(f"format {self.name!r} has no arrays")

    def open_array(self, path: str, name: str) -> ArraySpec:
        """The recipe and metadata of one array; reads no data. KeyError (listing the names) if absent."""
        raise NotImplementedError(f"format {self.name!r} has no arrays")

    def file_attrs(self, path: str) -> dict[str, Any]:
        """File-level attributes (a Dataset's ``attrs``); by default those of :meth:`read`."""
        return dict(self.read(path).attrs)

    def proxy_from_row(self, path: str, row: Mapping[str, Any], format_version: str | None = None
                       ) -> ArrayProxy | None:
        """The recipe of one array built from its catalog ``arrays`` row alone, opening nothing; None where the
        row does not say enough (then :meth:`open_array` is asked). `format_version` is ``files.format_version``."""
        return None

    def group_attrs(self, path: str, group: str) -> dict[str, Any]:
        """Attributes of one group (``"/"``: the file's); by default from :meth:`read`'s ``groups``."""
        if group == "/":
            return self.file_attrs(path)
        return dict(self.read(path).groups.get(group, {}).get("attrs", {}))

    def list_groups(self, path: str) -> list[str]:
        """Every group of a hierarchical file (``"/"`` first), empty ones included; by default from :meth:`read`."""
        return ["/", *(g for g in self.read(path).groups if g != "/")]


#: The name the contract had before backends held arrays too; plugins written against it keep working.
FormatReader = FormatBackend


# --------------------------------------------------------------------------- #
# array recipes
# --------------------------------------------------------------------------- #
_COUNT_LOCK = threading.Lock()


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
        Class-wide count of reads in this process (all proxies), for diagnostics and tests of laziness.
    reads_in_place : bool
        Declared ability: :meth:`read_region` fills the caller's buffer.
    maps_regions : bool
        Declared ability: :meth:`iter_region` may return the stored bytes through a memory map.
    """

    reads: ClassVar[int] = 0
    reads_in_place: ClassVar[bool] = False
    maps_regions: ClassVar[bool] = False

    def __init__(self, path: str, shape: Sequence[int], dtype: Any) -> None:
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._token = stamp(self._stamp_path())

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

    @staticmethod
    def count_read() -> None:
        """Count one read (see ``reads``)."""
        with _COUNT_LOCK:
            ArrayProxy.reads += 1

    def __getitem__(self, key: Any) -> np.ndarray:
        self.count_read()
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
        """Values of `region` (one contiguous slice per axis), into `out` where the format reads in place.

        Parameters
        ----------
        region : tuple of slice
            One ``slice(start, stop)`` per axis.
        out : numpy.ndarray, optional
            A C-contiguous array of the region's shape and this proxy's dtype. Backends that declare
            ``reads_in_place`` fill and return it (no fresh allocation per block: page faults and zeroing of a
            new buffer cost as much as the read itself); the others return a new array and leave `out` alone.
        """
        return self[region]

    def iter_region(self, region: tuple[slice, ...]) -> Iterator[np.ndarray] | None:
        """The values of `region` as pieces straight from the stored bytes (element order within the region
        not kept), or None when the backend cannot (then :meth:`read_region`). Only backends that declare
        ``maps_regions`` ever return pieces."""
        return None


class MemberProxy(ArrayProxy):
    """A proxy for one member of a file: a dataset or variable path, an HDU index, a Zarr component."""

    def __init__(self, path: str, member: Any, shape: Sequence[int], dtype: Any) -> None:
        self.member = member  # before the stamp is taken: a member may have its own metadata file (Zarr)
        super().__init__(path, shape, dtype)

    def _ident(self) -> tuple[Any, ...]:
        return (self.path, self.member)


@dataclass
class ArraySpec:
    """What a backend says of one array: the recipe and the metadata xarray needs.

    Attributes
    ----------
    proxy : ArrayProxy
        The recipe; its ``shape`` and ``dtype`` are the stored ones (native byte order allowed).
    dims : list of str
        Unique dimension names (:func:`unique_dims`).
    attrs : dict
        The array's attributes, decoding keys spelled the CF way (``_FillValue``/``missing_value``,
        ``scale_factor``/``add_offset``, ``valid_*``, ``units``).
    disk_chunks : tuple of int, optional
        On-disk chunk shape (numpy order), equal to the catalog's ``arrays.chunks``; None if contiguous.
    coords : dict
        Coordinates to attach (``{name: (dims, values[, attrs])}``).
    extra : dict
        What the xarray layer may use beyond attributes (FITS: ``wcs_header``, the header text of a celestial
        WCS, and ``wcs_ctype``, its two axis names).
    """

    proxy: ArrayProxy
    dims: list[str]
    attrs: dict[str, Any]
    disk_chunks: tuple[int, ...] | None
    coords: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- #
# small helpers the backends share
# --------------------------------------------------------------------------- #
def missing_array(kind: str, path: str, name: str, available: Iterable[str]) -> KeyError:
    """The KeyError for an array that is not there, listing the ones that are."""
    return KeyError(f"no array {name!r} in {kind} file {path}; available: {sorted(available)}")


def unique_dims(names: Sequence[str | None], ndim: int) -> list[str]:
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


def as_text(value: Any) -> Any:
    """Bytes attribute values as text (UTF-8, undecodable bytes replaced); anything else unchanged."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return value


def truncation(declared: int, available: int, what: str) -> str | None:
    """The ``arrays.error`` for stored data that cannot fit in the file (a truncated or hostile file), or None.

    Parameters
    ----------
    declared : int
        Bytes the metadata says are stored.
    available : int
        Bytes the file holds (at most) for them.
    what : str
        What declares them, for the message.
    """
    if declared <= available:
        return None
    return f"{TRUNCATED}: {what} declares {declared:,} bytes of stored data, the file holds {available:,}"


def fast_readers() -> bool:
    """``metaextract.scan.fast-readers``: whether backends may take their fast paths (headers read from the
    bytes, or through the library's low-level calls, where the outcome provably equals the library's; anything
    else goes through the library either way). False: every file through the library, for comparisons."""
    from metaextract_dask import config

    return bool(config.memo("fast-readers", lambda: config.get("scan.fast-readers", True)))


def attr_json_limit() -> int | None:
    """``metaextract.scan.attr-json-max-bytes``: the most JSON one attribute value may take in the catalog
    (larger values are replaced by a marker with their size); None for no limit. Read once per file."""
    from metaextract_dask import config
    from metaextract_dask.jsonutil import DEFAULT_ATTR_JSON_MAX

    def compute() -> int | None:
        value = config.get("scan.attr-json-max-bytes", DEFAULT_ATTR_JSON_MAX)
        return None if value is None else config.parse_bytes(value)

    return config.memo("attr-json-limit", compute)  # type: ignore[no-any-return]
