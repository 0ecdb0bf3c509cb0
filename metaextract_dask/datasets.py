"""xarray-native views of one file: what :func:`xarray.open_dataset` / :func:`xarray.open_datatree` give, built
from the format backends' :class:`~metaextract_dask.formats.base.ArraySpec` recipes.

* Root variables are named without the leading ``/`` (``"tas"``), group variables by their name in the group;
  a variable named as its only dimension becomes an indexed dimension coordinate; ``coordinates`` attributes
  name non-index coordinates.
* Decoding is xarray's own (:func:`xarray.conventions.decode_cf_variables`): masking, scaling, CF times,
  character arrays, lazily on the dask arrays (times of index coordinates are read, as xarray does).
* Hierarchical files (netCDF-4, HDF5, Zarr groups) open as an :class:`xarray.DataTree`, one node per group.
* FITS image HDUs get celestial WCS coordinates (2-D ``lon``/``lat``, computed lazily per dask block); DICOM
  series volumes get patient-space millimetre coordinates (see :func:`metaextract_dask.formats.dicom.series_spec`).

Nothing here opens a file handle that enters a graph: data stay the backends' picklable proxies.
"""

from __future__ import annotations

import posixpath
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from metaextract_dask.formats.base import ArraySpec, FormatBackend

if TYPE_CHECKING:  # pragma: no cover
    import xarray

__all__ = ["DECODER_KEYS", "HIERARCHICAL", "decoders", "group_of", "open_group", "open_tree", "open_variable",
           "resolve_name", "wcs_coords"]

#: Backends whose array names are paths in a group hierarchy (``/grp/var``).
HIERARCHICAL = frozenset({"netcdf", "hdf5", "zarr"})

#: xarray's decoder switches this module accepts (as :func:`xarray.open_dataset` does).
DECODER_KEYS = ("mask_and_scale", "decode_times", "decode_coords", "concat_characters", "use_cftime",
                "decode_timedelta")


def decoders(decode: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """The decoder keywords for `decode`: False -> None (no decoding), True -> xarray's defaults, a mapping ->
    those switches (unknown keys refused)."""
    if decode is False:
        return None
    out: dict[str, Any] = {"mask_and_scale": True, "decode_times": True, "decode_coords": True,
                           "concat_characters": True, "use_cftime": None, "decode_timedelta": None}
    if isinstance(decode, Mapping):
        unknown = set(decode) - set(DECODER_KEYS)
        if unknown:
            raise TypeError(f"unknown decoder options {sorted(unknown)}; known: {', '.join(DECODER_KEYS)}")
        out.update({k: v for k, v in decode.items() if v is not None or k in ("use_cftime", "decode_timedelta")})
    return out


def group_of(name: str) -> str:
    """The group of a hierarchical array name: ``"/a/b/v"`` -> ``"/a/b"``, ``"/v"`` -> ``"/"``."""
    return posixpath.dirname(name) or "/"


def resolve_name(backend: FormatBackend, path: str, name: str) -> str:
    """The catalog spelling of `name`: ``"tas"`` -> ``"/tas"`` for hierarchical formats; a FITS EXTNAME ->
    ``"HDU<index>"`` (the backend resolves it)."""
    if backend.name in HIERARCHICAL and not name.startswith("/"):
        return "/" + name
    return name


def _short(name: str, group: str) -> str:
    return name[len(group):].lstrip("/") if group != "/" else name.lstrip("/")


def _children(names: Iterable[str], group: str) -> list[str]:
    return [n for n in names if n != "/" and group_of(n) == group]


def _raw(spec: ArraySpec, name: str, fmt: str, chunks: Any, memory_limit: int | None, *, decoding: bool = True
         ) -> xarray.Variable:
    from metaextract_dask.arrays import _raw_variable

    var = _raw_variable(spec, name, fmt, chunks=chunks, memory_limit=memory_limit)
    if decoding and spec.extra.get("fill_value_from_metadata") == 3:
        var.attrs.pop("_FillValue", None)  # as xarray's zarr backend: a v3 fill value masks nothing
    return var


def _spec_coords(spec: ArraySpec) -> dict[str, Any]:
    """Coordinates a backend attaches (``{name: (dims, values[, attrs])}``) as xarray Variables."""
    import xarray as xr

    return {k: v if isinstance(v, xr.Variable) else xr.Variable(*v) for k, v in spec.coords.items()}


def _decode_all(variables: dict[str, xarray.Variable], attrs: dict[str, Any], dec: dict[str, Any] | None,
                drop: Iterable[str] = ()) -> tuple[dict[str, xarray.Variable], dict[str, Any], set[Hashable]]:
    """xarray's CF decoding of one group's variables; compound, opaque and variable-length string variables pass
    through as they are (xarray's coders have nothing to say about them, and would read an object array's first
    element to look for dates)."""
    import xarray as xr

    drop = set(drop)
    variables = {k: v for k, v in variables.items() if k not in drop}
    if dec is None:
        return variables, attrs, set()
    plain = {k: v for k, v in variables.items() if v.dtype.kind not in "VO"}
    decoded, attrs, coord_names = xr.conventions.decode_cf_variables(plain, attrs, **dec)
    out = {k: decoded.get(k, variables[k]) for k in variables}
    return out, attrs, coord_names


def _build(variables: dict[str, xarray.Variable], attrs: dict[str, Any], coord_names: set[Hashable],
           extra_coords: Mapping[str, xarray.Variable]) -> xarray.Dataset:
    import xarray as xr

    data_vars = {k: v for k, v in variables.items() if k not in coord_names}
    coords: dict[Hashable, Any] = {k: v for k, v in variables.items() if k in coord_names}
    coords.update(extra_coords)
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    for k, v in variables.items():  # Dataset() keeps Variable encodings; make sure dimension coords do too
        if k in ds.variables and not ds[k].encoding:
            ds[k].encoding = dict(v.encoding)
    return ds


def open_variable(backend: FormatBackend, path: str, name: str, *, decode: bool | Mapping[str, Any] = True,
                  chunks: Any = None, memory_limit: int | None = None, coords: bool = True) -> xarray.DataArray:
    """One array with its coordinates, decoded as :func:`xarray.open_dataset` would decode it.

    For hierarchical formats the coordinates are the dimension coordinates in the array's group or an
    ancestor group (netCDF-4 scoping) and the variables its ``coordinates`` attribute names; their 1-D values
    are read (an index needs them), the array itself is not.
    """
    import xarray as xr

    name = resolve_name(backend, path, name)
    spec = backend.open_array(path, name)
    fmt = backend.name
    dec = decoders(decode)
    main = _raw(spec, name, fmt, chunks, memory_limit, decoding=dec is not None)
    short = _short(name, group_of(name)) if backend.name in HIERARCHICAL else name
    variables: dict[str, xr.Variable] = {}
    if coords and backend.name in HIERARCHICAL:
        wanted = list(spec.dims) + str(spec.attrs.get("coordinates", "")).split()
        available: set[str] | None = None
        for cname in dict.fromkeys(wanted):
            if cname == short:
                continue
            group = group_of(name)
            while True:  # the nearest group up the tree that holds it
                candidate = posixpath.join(group, cname)
                if available is None:  # listed once: a miss would list the file per candidate
                    available = set(backend.list_arrays(path))
                try:
                    cspec = backend.open_array(path, candidate) if candidate in available else None
                except (KeyError, ValueError, OSError):
                    cspec = None
                if cspec is not None and (cname not in spec.dims or (cspec.dims == [cname])):
                    if set(cspec.dims) <= set(spec.dims):
                        variables[cname] = _raw(cspec, candidate, fmt, None, memory_limit,
                                                decoding=dec is not None)
                    break
                if group == "/":
                    break
                group = group_of(group)
    variables[short] = main
    decoded, _, coord_names = _decode_all(variables, {}, dec)
    coord_names = set(coord_names) | (set(variables) - {short})
    if short in spec.dims:  # a dimension coordinate asked for itself: the lazy array, not an index over it
        out = xr.DataArray(decoded[short], name=short)
        out.encoding = dict(decoded[short].encoding)
        return out
    ds = _build(decoded, {}, coord_names, _spec_coords(spec) if coords else {})
    if coords and fmt == "fits":
        ds = ds.assign_coords(wcs_coords(spec, ds[short].data.chunks))
    out = ds[short]
    out.encoding = dict(decoded[short].encoding)
    out.name = name if backend.name not in HIERARCHICAL else short
    return out


def open_group(backend: FormatBackend, path: str, group: str = "/", *, decode: bool | Mapping[str, Any] = True,
               chunks: Any = None, memory_limit: int | None = None,
               drop_variables: str | Iterable[str] | None = None, names: list[str] | None = None
               ) -> xarray.Dataset:
    """One group of a file as :func:`xarray.open_dataset` (``group=``) gives it; flat formats (FITS, DICOM,
    plugins) as one Dataset of all their arrays, dimensions of one name but other lengths told apart as
    ``<dim>_1``, ... (their coordinates likewise)."""
    names = backend.list_arrays(path) if names is None else names
    drop = {drop_variables} if isinstance(drop_variables, str) else set(drop_variables or ())
    dec = decoders(decode)
    if backend.name not in HIERARCHICAL:
        return _flat(backend, path, names, dec, chunks, memory_limit, drop)
    group = "/" + group.strip("/") if group not in ("", "/") else "/"
    members = _children(names, group)
    if names == ["/"]:  # a Zarr store that is itself one array
        members = ["/"]
    variables: dict[str, Any] = {}
    for name in members:
        spec = backend.open_array(path, name)
        short = _short(name, group) or "data"
        variables[short] = _raw(spec, name, backend.name, chunks, memory_limit, decoding=dec is not None)
    sizes: dict[str, int] = {}
    for short, var in variables.items():
        dims = _distinct_dims(var.dims, var.shape, sizes)
        if dims != var.dims:
            variables[short] = _with_dims(var, dims)
    attrs = dict(backend.group_attrs(path, group))
    decoded, attrs, coord_names = _decode_all(variables, attrs, dec, drop)
    return _build(decoded, attrs, coord_names, {})


def _distinct_dims(dims: Iterable[Hashable], shape: Iterable[int], sizes: dict[str, int]) -> tuple[str, ...]:
    """`dims` with a name already used (in `sizes`) at another length renamed ``<dim>_1``, ``<dim>_2``, ...;
    `sizes` learns the names used."""
    out = []
    for dim, n in zip(dims, shape):
        new, k = str(dim), 0
        while new in sizes and sizes[new] != n:
            k += 1
            new = f"{dim}_{k}"
        sizes[new] = n
        out.append(new)
    return tuple(out)


def _with_dims(var: xarray.Variable, dims: tuple[str, ...]) -> xarray.Variable:
    import xarray as xr

    return xr.Variable(dims, var.data, attrs=var.attrs, encoding=var.encoding)


def _flat(backend: FormatBackend, path: str, names: list[str], dec: dict[str, Any] | None, chunks: Any,
          memory_limit: int | None, drop: set[str]) -> xarray.Dataset:
    import xarray as xr

    sizes: dict[str, int] = {}
    taken: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for name in names:
        if name in drop:
            continue
        arr = open_variable(backend, path, name, decode=dec if dec is not None else False, chunks=chunks,
                            memory_limit=memory_limit)
        renames = {d: n for d, n in zip(arr.dims, _distinct_dims(arr.dims, arr.shape, sizes)) if d != n}
        arr = arr.rename(renames) if renames else arr
        for cname in list(arr.coords):
            if cname in arr.dims:
                continue
            new, k = str(cname), 0
            while new in taken and not taken[new].identical(arr.coords[cname].variable):
                k += 1
                new = f"{cname}_{k}"
            if new != cname:
                arr = arr.rename({cname: new})
            taken[new] = arr.coords[new].variable
        arrays[name] = arr
    try:
        attrs = backend.file_attrs(path)
    except Exception:  # file-level attributes are a convenience; the arrays are the point
        attrs = {}
    ds = xr.Dataset(arrays, attrs=attrs)
    for name, arr in arrays.items():
        ds[name].encoding = dict(arr.encoding)
    return ds


def open_tree(backend: FormatBackend, path: str, *, decode: bool | Mapping[str, Any] = True, chunks: Any = None,
              memory_limit: int | None = None, drop_variables: str | Iterable[str] | None = None
              ) -> xarray.DataTree:
    """Every group of a hierarchical file as an :class:`xarray.DataTree` (a flat format: one root node)."""
    import xarray as xr

    names = backend.list_arrays(path)
    if backend.name not in HIERARCHICAL or names == ["/"]:
        return xr.DataTree(open_group(backend, path, decode=decode, chunks=chunks, memory_limit=memory_limit,
                                      drop_variables=drop_variables, names=names))
    groups = {"/"}
    for name in names:
        g = group_of(name)
        while g not in groups:
            groups.add(g)
            g = group_of(g)
    groups.update(backend.list_groups(path))
    tree = {g: open_group(backend, path, g, decode=decode, chunks=chunks, memory_limit=memory_limit,
                          drop_variables=drop_variables, names=names) for g in sorted(groups)}
    return xr.DataTree.from_dict(tree)


# --------------------------------------------------------------------------- #
# FITS: celestial WCS coordinates
# --------------------------------------------------------------------------- #
def _world_block(y: np.ndarray, x: np.ndarray, header: str) -> np.ndarray:
    """lon/lat (degrees) of the pixel grid ``y`` x ``x`` (0-based numpy indices), stacked on a leading axis."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-standard WCS cards were reported when the file was scanned
        wcs = WCS(fits.Header.fromstring(header)).celestial
    xx, yy = np.meshgrid(x, y)
    lon, lat = wcs.pixel_to_world_values(xx, yy)
    return np.stack([np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)])


def wcs_coords(spec: ArraySpec, chunks: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
    """2-D ``lon``/``lat`` coordinates (degrees) of a FITS image whose header has a celestial WCS on its first
    two axes, computed lazily per dask block; {} when it has none."""
    import dask.array as da
    import xarray as xr

    header = spec.extra.get("wcs_header")
    if not header or len(chunks) < 2:
        return {}
    ys = da.arange(spec.proxy.shape[-2], chunks=(chunks[-2],))
    xs = da.arange(spec.proxy.shape[-1], chunks=(chunks[-1],))
    world = da.blockwise(_world_block, "cyx", ys, "y", xs, "x", header=header, dtype=np.float64,
                         new_axes={"c": 2}, concatenate=True)
    dims = spec.dims[-2:]
    ctype = spec.extra.get("wcs_ctype", ("lon", "lat"))
    return {"lon": xr.Variable(dims, world[0], attrs={"units": "deg", "long_name": ctype[0]}),
            "lat": xr.Variable(dims, world[1], attrs={"units": "deg", "long_name": ctype[1]})}
