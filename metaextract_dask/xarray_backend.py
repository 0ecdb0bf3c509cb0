"""The xarray engine: ``xr.open_dataset(path, engine="metaextract")`` for every format this project reads.

Registered in ``pyproject.toml`` under ``[project.entry-points."xarray.backends"]`` as ``metaextract``::

    ds = xr.open_dataset("climate_cf.nc", engine="metaextract")            # netCDF-3/4, CF-decoded
    ds = xr.open_dataset("experiment.h5", engine="metaextract", group="/timeseries")   # plain HDF5
    ds = xr.open_dataset("field.fits", engine="metaextract")               # FITS images with WCS lon/lat
    ds = xr.open_dataset("ct_series/", engine="metaextract")               # a DICOM series directory: a volume
    tree = xr.open_datatree("climate_cf.nc", engine="metaextract")
    ds = xr.open_mfdataset(paths, engine="metaextract", combine="by_coords")

The datasets are :func:`metaextract_dask.arrays.open_arrays`'. ``chunks={}`` (and ``open_mfdataset``, whose
default it is) gives dask arrays in this project's adaptive chunks (the engine's preferred chunks: whole
multiples of the on-disk chunks, about ``metaextract.chunk-target`` bytes); ``chunks=None`` gives xarray's
lazily indexed arrays, as for any engine. Passing the class itself (``engine=MetaextractBackendEntrypoint``) works without
the entry point being installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from xarray.backends import BackendEntrypoint

__all__ = ["MetaextractBackendEntrypoint"]


def _local_path(filename_or_obj: Any) -> str | None:
    if isinstance(filename_or_obj, (str, os.PathLike)):
        return os.fspath(filename_or_obj)
    return None


def _is_dicom_dir(path: str) -> bool:
    from metaextract_dask.formats import sniff

    if not os.path.isdir(path):
        return False
    for entry in sorted(os.listdir(path))[:1]:
        found = sniff(os.path.join(path, entry)) if os.path.isfile(os.path.join(path, entry)) else None
        return found is not None and found.name == "dicom"
    return False


def _prefer_our_chunks(ds: Any) -> Any:
    """Make our dask chunks the engine's preferred chunks (xarray uses them for ``chunks={}``, the default of
    ``open_mfdataset``); the on-disk chunks stay in ``encoding["chunks"]``."""
    for var in ds.variables.values():
        chunks = var.chunks
        if chunks:
            var.encoding["preferred_chunks"] = {d: c[0] for d, c in zip(var.dims, chunks)}
    return ds



def _path_and_decode(filename_or_obj: Any, mask_and_scale: bool, decode_times: Any, decode_coords: Any,
                     concat_characters: bool, use_cftime: Any, decode_timedelta: Any) -> tuple[str, dict[str, Any]]:
    """The local path to open and xarray's decoding keywords as one ``decode`` mapping."""
    path = _local_path(filename_or_obj)
    if path is None:
        raise TypeError(f"engine='metaextract' opens local paths, not {type(filename_or_obj).__name__}")
    return path, {"mask_and_scale": mask_and_scale, "decode_times": decode_times, "decode_coords": decode_coords,
                  "concat_characters": concat_characters, "use_cftime": use_cftime,
                  "decode_timedelta": decode_timedelta}

class MetaextractBackendEntrypoint(BackendEntrypoint):
    """xarray backend over metaextract_dask's format backends (netCDF, HDF5, Zarr, FITS, DICOM, plugins)."""

    description = "HDF5, netCDF-3/4, Zarr v2/v3, FITS and DICOM (series directories too) through metaextract_dask"
    url = "https://github.com/metaextract-dask/metaextract-dask#xarray-engine"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "mask_and_scale", "decode_times",
                               "decode_coords", "concat_characters", "use_cftime", "decode_timedelta", "group",
                               "format", "memory_limit")
    supports_groups = True

    def guess_can_open(self, filename_or_obj: Any) -> bool:  # noqa: D102
        path = _local_path(filename_or_obj)
        if path is None or not os.path.exists(path):
            return False
        from metaextract_dask.formats import sniff

        try:
            found = sniff(path)
        except OSError:
            return False
        return (found is not None and found.supports_arrays) or _is_dicom_dir(path)

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                     mask_and_scale: bool = True, decode_times: Any = True, decode_coords: Any = True,
                     concat_characters: bool = True, use_cftime: Any = None, decode_timedelta: Any = None,
                     group: str | None = None, format: str | None = None,  # noqa: A002
                     memory_limit: int | None = None) -> Any:
        """Open one file, Zarr store or DICOM series directory.

        Parameters
        ----------
        filename_or_obj : str or path-like
            Local path.
        drop_variables : str or iterable of str, optional
            Variables to leave out.
        mask_and_scale, decode_times, decode_coords, concat_characters, use_cftime, decode_timedelta
            xarray's decoders (``decode_cf=False`` turns them all off).
        group : str, optional
            Group of a hierarchical file.
        format : str, optional
            The format backend (``netcdf``, ``hdf5``, ``zarr``, ``fits``, ``dicom``, a plugin's) or a catalog
            ``files.format``; default detected from the content.
        memory_limit : int, optional
            Caps the adaptive chunk size (default: the current client's smallest worker memory).
        """
        from metaextract_dask.arrays import open_arrays, open_dicom_series

        path, decode = _path_and_decode(filename_or_obj, mask_and_scale, decode_times, decode_coords,
                                        concat_characters, use_cftime, decode_timedelta)
        if format is None and _is_dicom_dir(path):
            vol = open_dicom_series(path, decode=bool(mask_and_scale), memory_limit=memory_limit)
            ds = vol.to_dataset()
            ds["PixelData"].encoding = dict(vol.encoding)
        else:
            ds = open_arrays(path, engine=format, group=group, decode=decode, memory_limit=memory_limit,
                             drop_variables=drop_variables)
        return _prefer_our_chunks(ds)

    def open_datatree(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                      mask_and_scale: bool = True, decode_times: Any = True, decode_coords: Any = True,
                      concat_characters: bool = True, use_cftime: Any = None, decode_timedelta: Any = None,
                      format: str | None = None, memory_limit: int | None = None,  # noqa: A002
                      **kwargs: Any) -> Any:
        """Every group of a hierarchical file as a DataTree (see :func:`metaextract_dask.arrays.open_datatree`)."""
        from metaextract_dask.arrays import open_datatree

        path, decode = _path_and_decode(filename_or_obj, mask_and_scale, decode_times, decode_coords,
                                        concat_characters, use_cftime, decode_timedelta)
        tree = open_datatree(path, engine=format, decode=decode, memory_limit=memory_limit,
                             drop_variables=drop_variables)
        for node in tree.subtree:
            _prefer_our_chunks(node.dataset)
        return tree

    def open_groups_as_dict(self, filename_or_obj: Any, **kwargs: Any) -> dict[str, Any]:
        """``{group path: Dataset}`` of every group (what :func:`xarray.open_groups` returns)."""
        tree = self.open_datatree(filename_or_obj, **kwargs)
        return {node.path: node.to_dataset(inherit=False) for node in tree.subtree}
