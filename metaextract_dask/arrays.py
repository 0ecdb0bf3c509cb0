"""Lazy, dask-backed xarray views of the arrays a catalog lists.

>>> from metaextract_dask.arrays import open_array, open_dicom_series
>>> tas = open_array("climate_cf.nc", "/tas")                 # CF-decoded, nothing read yet
>>> raw = open_array("climate_cf.nc", "/psl", decode=False)   # stored int16 values, attrs say how to unpack
>>> ct = open_dicom_series(sorted(Path("ct_series").glob("*.dcm")))   # (slice, row, column), sorted along z

Arrays are named exactly as the catalog's ``arrays.name`` column spells them: HDF5/netCDF/Zarr ``"/grp/var"``
(a Zarr store that is itself an array: ``"/"``), FITS ``"HDU<index>"`` (image HDUs), DICOM ``"PixelData"``.

Recipes, not handles
--------------------
The dask graphs built here hold small picklable *array proxies* (:class:`ArrayProxy` subclasses, one per format
backend in :mod:`metaextract_dask.formats`): a file path, an array name, shape and dtype. A proxy opens its file
only when a task reads from it, through its backend's per-process handle cache
(:mod:`metaextract_dask.formats.handles`; :func:`close_cached_files` empties them all), under the library's
lock. No open h5py, netCDF4, astropy or pydicom object ever enters a graph, so graphs run on any
``distributed`` cluster. This module is generic: chunk choice, CF decoding with xarray's coders, and
DataArray/Dataset assembly from a backend's :class:`~metaextract_dask.formats.base.ArraySpec`.

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
    ``{dim: size}``; ``source`` (path), ``format`` (backend name), ``variable`` (catalog name),
    ``original_shape`` and ``dtype`` (stored dtype). The dask chunks themselves are simply ``arr.chunks``.

Dask chunks default to :func:`~metaextract_dask.chunking.adaptive_chunks`: whole multiples of the on-disk
chunks, about ``metaextract.chunk-target`` bytes, capped by the smallest worker memory limit of the current
client (or `memory_limit`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from metaextract_dask.chunking import adaptive_chunks, worker_memory_limit
from metaextract_dask.formats import get_backend, sniff
from metaextract_dask.formats.base import ArrayProxy, ArraySpec, FormatBackend
from metaextract_dask.formats.handles import close_cached_files

if TYPE_CHECKING:  # pragma: no cover
    import xarray

__all__ = ["ArrayProxy", "ArraySpec", "close_cached_files", "list_arrays", "open_array", "open_arrays",
           "open_datatree", "open_dicom_series"]

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- #
# dask + xarray assembly
# --------------------------------------------------------------------------- #
def _backend_of(path: str, engine: str | None = None) -> FormatBackend:
    """The backend of `path`: `engine` when given (a backend name or a catalog ``files.format`` value, so a
    catalogued file is never sniffed again), else detected from the content."""
    if engine is not None:
        backend = get_backend(engine)
    else:
        local = _local(path)
        if not os.path.exists(local):
            raise FileNotFoundError(path)
        found = sniff(local)
        if found is None:
            raise ValueError(f"{path}: not a file of any known format")
        backend = found
    if not backend.supports_arrays:
        raise ValueError(f"{path}: format {backend.name!r} has no lazy arrays")
    backend.require()
    return backend


def _local(path: str) -> str:
    """A URL or a compressed file as a local file with its whole content (fetched or decompressed once into
    the cache, :func:`metaextract_dask.sources.local_path`); a plain local path as it is."""
    from metaextract_dask.sources import local_path

    return local_path(path)


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


def _dask_chunks(spec: ArraySpec, chunks: Any, memory_limit: int | None) -> Any:
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
    """xarray's CF coders, lazily: mask fill values, unpack scale/offset; times stay numbers. Non-native byte
    order is swapped here with dask (xarray's own endianness coder wraps the array in a lazily indexed
    adapter that is no longer a dask array: no chunks, and the whole array read at once)."""
    import xarray as xr

    if not _is_numeric(var.dtype):  # strings, compounds: nothing to decode
        return var
    return xr.conventions.decode_cf_variable(
        name, var, concat_characters=False, mask_and_scale=True, decode_times=False,
        decode_endianness=False, stack_char_dim=False, decode_timedelta=False)


def _raw_variable(spec: ArraySpec, name: str, fmt: str, *, chunks: Any, memory_limit: int | None,
                  native: bool = True) -> xarray.Variable:
    """The stored values of one array as a dask-backed Variable (in native byte order unless `native` is
    False), attrs undecoded."""
    import dask.array as da
    import xarray as xr
    from dask.base import tokenize

    proxy = spec.proxy
    dchunks = _dask_chunks(spec, chunks, memory_limit)
    token = tokenize(proxy, dchunks)
    label = "dicom-series" if "instance_number" in spec.coords else fmt
    data = da.from_array(proxy, chunks=dchunks, name=f"open-{label}-{token}", lock=False, asarray=True,
                         meta=np.ndarray, inline_array=False)
    if native and _is_numeric(proxy.dtype) and not proxy.dtype.isnative:
        # swapped here with dask: xarray's endianness coder would wrap the array in a lazily indexed adapter
        # that is no longer a dask array (no chunks, the whole array read at once)
        data = data.astype(proxy.dtype.newbyteorder("="))
    encoding: dict[str, Any] = {
        "source": proxy.path,
        "format": fmt,
        "variable": name,
        "chunks": spec.disk_chunks,
        "preferred_chunks": dict(zip(spec.dims, spec.disk_chunks)) if spec.disk_chunks else {},
        "original_shape": proxy.shape,
        "dtype": proxy.dtype,
    }
    return xr.Variable(spec.dims, data, attrs=dict(spec.attrs), encoding=encoding)


def _to_dataarray(spec: ArraySpec, name: str, fmt: str, *, decode: bool, chunks: Any,
                  memory_limit: int | None) -> xarray.DataArray:
    import xarray as xr

    var = _raw_variable(spec, name, fmt, chunks=chunks, memory_limit=memory_limit, native=decode)
    if decode:
        var = _decode(name, var)
    out = xr.DataArray(var, coords=spec.coords or None, name=name)
    out.encoding = dict(var.encoding)  # DataArray(Variable) keeps attrs but not encoding
    return out


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def open_array(path: PathLike, name: str, *, engine: str | None = None, decode: bool | Mapping[str, Any] = True,
               chunks: Any = None, memory_limit: int | None = None, coords: bool = True) -> xarray.DataArray:
    """Open one array of a file or Zarr store as a lazy, dask-backed DataArray, as xarray would give it.

    Parameters
    ----------
    path : str or path-like
        A file (HDF5, netCDF3/4, FITS, DICOM) or a Zarr v2/v3 store directory. The format is detected by
        content (:func:`metaextract_dask.formats.sniff`).
    name : str
        The array as the catalog's ``arrays.name`` spells it (``"/grp/var"``; a Zarr store that is an array:
        ``"/"``; ``"HDU<index>"`` for FITS image HDUs; ``"PixelData"`` for DICOM) or as xarray does: a root
        variable without the ``/`` (``"tas"``), a FITS HDU by its EXTNAME.
    engine : str, optional
        The format backend (``hdf5``, ``netcdf``, ``zarr``, ``fits``, ``dicom``, a plugin's name) or the
        catalog's ``files.format`` value (``netcdf4``, ...); default: detected from the content.
    decode : bool or dict, default True
        Decode lazily with xarray's own coders (:func:`xarray.conventions.decode_cf_variables`): mask
        ``_FillValue``/``missing_value`` to NaN, unpack ``scale_factor``/``add_offset`` (FITS BSCALE/BZERO/BLANK
        and DICOM RescaleSlope/RescaleIntercept are mapped to these first), CF times and character arrays. A
        dict switches single decoders (``{"decode_times": False}``, keys as :func:`xarray.open_dataset`'s).
        False: the raw stored values, with the decoding keys in ``attrs``.
    chunks : optional
        Dask chunks (anything :func:`dask.array.from_array` accepts, or a dict by dimension name or axis, the
        other axes adaptive). Default: :func:`~metaextract_dask.chunking.adaptive_chunks` from the on-disk
        chunks and `memory_limit`.
    memory_limit : int, optional
        Worker memory in bytes that caps the chunk size; default the smallest worker memory limit of the
        current ``distributed`` client (or of this worker), none without one.
    coords : bool, default True
        Attach coordinates: dimension coordinates (their 1-D values are read, as xarray does for an index) and
        those a ``coordinates`` attribute names, FITS celestial WCS ``lon``/``lat`` (lazy), DICOM positions.

    Returns
    -------
    xarray.DataArray
        Dask-backed; nothing of the array itself is read until compute. ``attrs`` hold the array's attributes,
        ``encoding`` the on-disk layout (``chunks``, ``preferred_chunks``, ``source``, ``format``,
        ``variable`` (the catalog name), ``dtype``).

    Raises
    ------
    KeyError
        If `name` is not an array of `path`; the message lists the available names.
    ValueError
        If `path` is of no known format, or of one without arrays.
    """
    from metaextract_dask.datasets import open_variable

    path = _local(os.fspath(path))
    return open_variable(_backend_of(path, engine), path, name, decode=decode, chunks=chunks,
                         memory_limit=memory_limit, coords=coords)


def _spec_of(path: PathLike, name: str, engine: str | None = None) -> tuple[ArraySpec, str]:
    path = os.fspath(path)
    backend = _backend_of(path, engine)
    return backend.open_array(path, name), backend.name


def _open_raw(path: PathLike, name: str, *, engine: str | None = None, memory_limit: int | None = None
              ) -> tuple[xarray.DataArray, ArrayProxy]:
    """:func:`open_array` with ``decode=False``, and the recipe behind it (for tasks that read regions
    themselves, as the profiler does)."""
    spec, fmt = _spec_of(path, name, engine)
    return _to_dataarray(spec, name, fmt, decode=False, chunks=None, memory_limit=memory_limit), spec.proxy


def list_arrays(path: PathLike, *, engine: str | None = None) -> list[str]:
    """Names of the arrays of `path` that :func:`open_array` opens (catalog spelling; kinds a backend lists
    but does not open, such as FITS tables, left out)."""
    path = _local(os.fspath(path))
    return _backend_of(path, engine).list_arrays(path)


def open_arrays(path: PathLike, *, engine: str | None = None, group: str | None = None,
                decode: bool | Mapping[str, Any] = True, chunks: Any = None, memory_limit: int | None = None,
                drop_variables: str | Iterable[str] | None = None) -> xarray.Dataset:
    """Open one file or Zarr store as a lazy Dataset: what :func:`xarray.open_dataset` gives.

    netCDF/HDF5/Zarr: the variables of the root group (or of `group`) by their names in the group (``"tas"``),
    dimension coordinates as indexes, ``coordinates`` attributes honoured, CF decoding by xarray's coders;
    ``attrs`` are the group's attributes. For every group of a hierarchical file at once use
    :func:`open_datatree`. FITS (image HDUs ``HDU<index>``, with WCS ``lon``/``lat``), DICOM (``PixelData``)
    and plugin formats: all arrays in one Dataset; dimensions of one name but other lengths in different
    arrays (FITS ``y``/``x`` of two images) are told apart as ``<dim>_1``, ``<dim>_2``, ... in list order.

    Parameters
    ----------
    path : str or path-like
        File or Zarr store.
    group : str, optional
        The group to open (``"/forecast"`` or ``"forecast"``); default the root.
    drop_variables : str or iterable of str, optional
        Variables to leave out (names in the group).
    engine, decode, chunks, memory_limit : optional
        As for :func:`open_array`.
    """
    from metaextract_dask.datasets import open_group

    path = _local(os.fspath(path))
    return open_group(_backend_of(path, engine), path, group or "/", decode=decode, chunks=chunks,
                      memory_limit=memory_limit, drop_variables=drop_variables)


def open_datatree(path: PathLike, *, engine: str | None = None, decode: bool | Mapping[str, Any] = True,
                  chunks: Any = None, memory_limit: int | None = None,
                  drop_variables: str | Iterable[str] | None = None) -> xarray.DataTree:
    """Open every group of a hierarchical file (netCDF-4, HDF5, Zarr) as a lazy :class:`xarray.DataTree`, each
    node as :func:`open_arrays` opens that group (what :func:`xarray.open_datatree` gives). A flat format is a
    tree of one node.

    Parameters
    ----------
    path, engine, decode, chunks, memory_limit, drop_variables : optional
        As for :func:`open_arrays`.
    """
    from metaextract_dask.datasets import open_tree

    path = _local(os.fspath(path))
    return open_tree(_backend_of(path, engine), path, decode=decode, chunks=chunks, memory_limit=memory_limit,
                     drop_variables=drop_variables)


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
    import xarray as xr

    from metaextract_dask.formats.dicom import series_files, series_spec
    from metaextract_dask.remote import is_url

    get_backend("dicom").require()
    if isinstance(paths, str) and is_url(paths):  # a URL: one file, or a directory the server lists
        from metaextract_dask.sources import discover_url

        files = [e.path for e in discover_url(paths) if not e.special and not e.is_dir]
    else:
        files = series_files(paths)
    spec = series_spec([_local(p) for p in files])
    arr = _to_dataarray(spec, "PixelData", "dicom", decode=decode, chunks=chunks, memory_limit=memory_limit)
    if decode and "scale_factor" in spec.coords:  # slope/intercept vary by slice: applied slice by slice
        scale = xr.DataArray(spec.coords["scale_factor"][1], dims="slice")
        offset = xr.DataArray(spec.coords["add_offset"][1], dims="slice")
        decoded = arr * scale + offset
        decoded.attrs = dict(arr.attrs)
        decoded.encoding = dict(arr.encoding)
        decoded.name = arr.name
        return decoded
    return arr
