"""Format registry: built-in readers by dotted path plus the ``metaextract_dask.formats`` entry-point group.

Built-ins are imported lazily, so a missing optional dependency disables one format, not the package. A
third-party package adds a format with::

    [project.entry-points."metaextract_dask.formats"]
    myformat = "mypackage.reader:MyReader"

where ``MyReader`` subclasses :class:`~metaextract_dask.formats.base.FormatReader`.
"""

from __future__ import annotations

import importlib
import logging
import os
from functools import lru_cache
from importlib.metadata import entry_points

from metaextract_dask.formats.base import FormatReader, Records

__all__ = ["FormatReader", "Records", "BUILTIN_READERS", "get_readers", "sniff"]

logger = logging.getLogger(__name__)

BUILTIN_READERS: dict[str, str] = {
    "netcdf": "metaextract_dask.formats.netcdf:NetCDFReader",
    "hdf5": "metaextract_dask.formats.hdf5:HDF5Reader",
    "zarr": "metaextract_dask.formats.zarr:ZarrReader",
    "fits": "metaextract_dask.formats.fits:FITSReader",
    "dicom": "metaextract_dask.formats.dicom:DICOMReader",
}


def _load(target: str) -> type[FormatReader]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=1)
def get_readers() -> tuple[FormatReader, ...]:
    """Instantiate every available reader, ordered by priority (cached per process)."""
    classes: dict[str, type[FormatReader]] = {}
    for key, target in BUILTIN_READERS.items():
        try:
            classes[key] = _load(target)
        except ImportError as exc:  # optional dependency missing: lose this format only
            logger.warning("format %s disabled: %s", key, exc)
    for ep in entry_points(group="metaextract_dask.formats"):
        try:
            classes[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down
            logger.warning("format plugin %s failed to load: %s", ep.name, exc)
    readers = [cls() for cls in classes.values()]
    return tuple(sorted(readers, key=lambda r: r.priority))


def sniff(path: str, head: bytes | None = None, *, nbytes: int = 1024) -> FormatReader | None:
    """Return the reader for the file or directory at `path`, or None when no reader claims it.

    Detection is by content (magic bytes, Zarr metadata files), never by extension.
    """
    is_dir = os.path.isdir(path)
    if head is None:
        head = b""
        if not is_dir:
            with open(path, "rb") as f:
                head = f.read(nbytes)
    for reader in get_readers():
        if reader.directories != is_dir:
            continue
        if reader.sniff(head, path):
            return reader
    return None
