"""Format registry: built-in backends by dotted path plus the ``metaextract_dask.formats`` entry-point group.

A third-party package adds a format with::

    [project.entry-points."metaextract_dask.formats"]
    myformat = "mypackage.backend:MyBackend"

where ``MyBackend`` subclasses :class:`~metaextract_dask.formats.base.FormatBackend`. A plugin that reuses a
built-in name (or a ``files.format`` value a built-in writes) is refused with a warning, never silently put in
its place. Backends import their libraries only when they read: a missing library disables that one format,
whose files become error rows naming the package to install.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from functools import lru_cache
from importlib.metadata import entry_points

from metaextract_dask.formats.base import ArrayProxy, ArraySpec, FormatBackend, FormatReader, \
    MissingDependencyError, Records

__all__ = ["FormatBackend", "FormatReader", "Records", "ArraySpec", "ArrayProxy", "MissingDependencyError",
           "BUILTIN_BACKENDS", "ENTRY_POINT_GROUP", "get_backends", "get_readers", "get_backend",
           "backend_for_format", "sniff", "suffix_claims"]

logger = logging.getLogger(__name__)

#: The entry-point group plugins register their backends in.
ENTRY_POINT_GROUP = "metaextract_dask.formats"

#: Built-in backends: registry key -> "module:Class" (one module per format).
BUILTIN_BACKENDS: dict[str, str] = {
    "netcdf": "metaextract_dask.formats.netcdf:NetCDFBackend",
    "hdf5": "metaextract_dask.formats.hdf5:HDF5Backend",
    "zarr": "metaextract_dask.formats.zarr:ZarrBackend",
    "fits": "metaextract_dask.formats.fits:FITSBackend",
    "dicom": "metaextract_dask.formats.dicom:DICOMBackend",
}


def _load(target: str) -> type[FormatBackend]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _refuse(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


@lru_cache(maxsize=1)
def get_backends() -> tuple[FormatBackend, ...]:
    """Every available backend, built-ins and plugins, ordered by priority (cached per process)."""
    classes: dict[str, type[FormatBackend]] = {}
    for key, target in BUILTIN_BACKENDS.items():
        try:
            classes[key] = _load(target)
        except ImportError as exc:  # a broken install of one module: lose this format only
            logger.warning("format %s disabled: %s", key, exc)
    taken = {fmt for cls in classes.values() for fmt in cls.formats()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in classes:
            _refuse(f"format plugin {ep.value!r} refused: the name {ep.name!r} is taken "
                    f"(by {'a built-in backend' if ep.name in BUILTIN_BACKENDS else 'another plugin'})")
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down
            logger.warning("format plugin %s failed to load: %s", ep.name, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, FormatBackend)):
            _refuse(f"format plugin {ep.name!r} refused: {ep.value} is not a FormatBackend subclass")
            continue
        name = cls.name or ep.name  # the backend's own name is its key (engine=, get_backend)
        if name in classes:
            _refuse(f"format plugin {ep.name!r} refused: its backend calls itself {name!r}, a name that is "
                    f"taken (by {'a built-in backend' if name in BUILTIN_BACKENDS else 'another plugin'})")
            continue
        clash = taken.intersection(cls.formats() if cls.name else (name,))
        if clash:
            _refuse(f"format plugin {ep.name!r} refused: it would write files.format {sorted(clash)}, "
                    "which another backend writes")
            continue
        if not cls.name:
            cls.name = name
        classes[name] = cls
        taken.update(cls.formats())
    backends = [cls() for cls in classes.values()]
    return tuple(sorted(backends, key=lambda b: b.priority))


#: The name the registry function had before backends held arrays too.
get_readers = get_backends


def get_backend(name: str) -> FormatBackend:
    """The backend registered as `name` (an engine name: ``hdf5``, ``netcdf``, ``zarr``, ``fits``, ``dicom``
    or a plugin's), or the one that writes the catalog format `name` (``netcdf3``, ``netcdf4``)."""
    for backend in get_backends():
        if backend.name == name:
            return backend
    return backend_for_format(name)


def backend_for_format(fmt: str) -> FormatBackend:
    """The backend that writes ``files.format`` value `fmt`.

    Raises
    ------
    KeyError
        If no backend writes it (``binary``, ``unknown``, or a plugin that is not installed).
    """
    for backend in get_backends():
        if fmt in backend.formats():
            return backend
    known = sorted(f for b in get_backends() for f in b.formats())
    raise KeyError(f"no format backend for {fmt!r}; known formats: {', '.join(known)}")


def suffix_claims() -> dict[str, str]:
    """File name suffix (lower case, with the dot) -> the backend that claims it."""
    return {suffix: b.name for b in reversed(get_backends()) for suffix in b.suffixes}


def sniff(path: str, head: bytes | None = None, *, nbytes: int = 8192, is_dir: bool | None = None
          ) -> FormatBackend | None:
    """Return the backend for the file or directory at `path`, or None when no backend claims it.

    Detection is by content (magic bytes, Zarr metadata files), never by extension. `is_dir`: what the caller
    already knows of `path` (a scan's listing), saving a ``stat``.
    """
    if is_dir is None:
        is_dir = os.path.isdir(path)
    if head is None:
        head = b""
        if not is_dir:
            with open(path, "rb") as f:
                head = f.read(nbytes)
    for backend in get_backends():
        if backend.directories != is_dir:
            continue
        if backend.sniff(head, path):
            return backend
    return None
