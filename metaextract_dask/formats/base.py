"""The reader contract every format module implements."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["FormatReader", "Records", "HDF5_LOCK"]

# HDF5 and netCDF-C are not thread-safe, and h5py and netCDF4 may each bundle a libhdf5: one re-entrant lock
# per worker process guards both (as xarray's HDF5_LOCK/NETCDFC_LOCK do).
HDF5_LOCK = threading.RLock()


@dataclass
class Records:
    """What a reader extracts from one file, as plain picklable rows.

    Attributes
    ----------
    format : str
        The format name written to ``files.format`` (a reader may refine its own name, e.g. netcdf3/netcdf4).
    format_version : str, optional
        Version or flavour within the format (netCDF data model, Zarr format, DICOM transfer syntax, ...).
    attrs : dict
        File-level attributes (JSON-friendly values).
    groups : dict
        Hierarchical containers (HDF5/netCDF/Zarr groups) by path, each ``{"attrs": ..., "dims": ...}``.
    arrays, hdus, dicom : list of dict
        Rows for the ``arrays``, ``hdus`` and ``dicom`` tables, without the ``path`` column.
    """

    format: str
    format_version: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    arrays: list[dict[str, Any]] = field(default_factory=list)
    hdus: list[dict[str, Any]] = field(default_factory=list)
    dicom: list[dict[str, Any]] = field(default_factory=list)


class FormatReader:
    """Base class of format readers.

    A reader is stateless and cheap to construct: the engine builds it inside the worker, calls
    :meth:`sniff` on the first bytes of a file and, for the first reader that accepts, :meth:`read`.
    Readers open and close files inside :meth:`read`; no handle outlives the call, so nothing open ever
    travels in a task graph.
    """

    #: Format name, also the registry key.
    name: ClassVar[str] = ""
    #: Lower is tried first; specific formats (netcdf4) go before general ones (hdf5).
    priority: ClassVar[int] = 100
    #: True for readers of directory stores (Zarr).
    directories: ClassVar[bool] = False

    def sniff(self, head: bytes, path: str) -> bool:
        """Return True if the file whose first bytes are `head` is of this format.

        Parameters
        ----------
        head : bytes
            The first ``metaextract.scan.sniff-bytes`` bytes of the file (empty for a directory).
        path : str
            Local path, for readers that need more than the head to decide (kept cheap).
        """
        raise NotImplementedError

    def read(self, path: str) -> Records:
        """Extract metadata records from the file at `path`; raise on unreadable input."""
        raise NotImplementedError
