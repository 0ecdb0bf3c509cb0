"""Per-process state shared by the format backends: the library locks and one cache of open handles.

Graphs carry recipes (path, array name, shape, dtype); a task that reads opens the file here, in the process
that runs it, and keeps the handle for the next task. A handle is keyed by path and the file's *stamp*
(mtime, size): a file rewritten since it was opened gets a fresh handle. Everything here is module state,
never pickled.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["HDF5_LOCK", "FITS_LOCK", "HandleCache", "stamp", "close_cached_files"]

# HDF5 and netCDF-C are not thread-safe, and h5py and netCDF4 may each bundle a libhdf5: one re-entrant lock
# per worker process guards both (as xarray's HDF5_LOCK/NETCDFC_LOCK do).
HDF5_LOCK = threading.RLock()
# astropy file objects are not thread-safe (seek + read): one lock per process for FITS reads.
FITS_LOCK = threading.RLock()


def stamp(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a file; a rewritten file gets a new stamp, so stale handles are not reused.

    A URL's stamp comes from the store (its version and size, asked at most once a minute), without fetching.
    """
    if "://" in path:
        from metaextract_dask.sources import remote_stamp

        try:
            return remote_stamp(path)
        except (OSError, ValueError):
            return 0, 0  # the store does not describe it (a directory): the open will say what is wrong
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _local(key: Any) -> Any:
    """What the opener opens: a URL or a compressed file as a local file with its whole content
    (:func:`metaextract_dask.sources.local_path`; fetched or decompressed once, cached); anything else as is."""
    if isinstance(key, str):
        from metaextract_dask.sources import local_path

        return local_path(key)
    return key


class HandleCache:
    """LRU of open handles by path (and stamp), closed on eviction, on a change on disk, or by
    :func:`close_cached_files`.

    Parameters
    ----------
    opener : callable
        ``opener(path) -> handle``; the handle needs a ``close()``.
    lock : lock
        Held around every open and lookup; callers hold the same lock around every use of the handle (the
        library's lock, e.g. :data:`HDF5_LOCK`).
    maxsize : int
        Handles kept open.
    stamp_of : callable, optional
        The stamp of a key (default :func:`stamp` of the path); Zarr stores stamp their metadata file.
    open_under_lock : bool, default True
        Open while holding `lock` (libraries that are not thread-safe); False opens outside it, so threads
        open different files at once (a race to open the same one keeps the first handle, closes the other).
    """

    def __init__(self, opener: Callable[[Any], Any], lock: Any, maxsize: int = 64,
                 stamp_of: Callable[[Any], Any] | None = None, open_under_lock: bool = True) -> None:
        self._opener = opener
        self._lock = lock
        self._maxsize = maxsize
        self._stamp_of = stamp_of or stamp
        self._open_under_lock = open_under_lock
        self._handles: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        _CACHES.append(self)

    @property
    def lock(self) -> Any:
        """The lock that guards this cache (and the library behind it)."""
        return self._lock

    def get(self, key: Any) -> Any:
        """The open handle for `key` (a path, or what the opener takes), opened now if needed."""
        current = self._stamp_of(key)
        with self._lock:
            hit = self._lookup(key, current)
            if hit is not None:
                return hit
        local = _local(key)  # a URL is fetched (a compressed file decompressed) here, outside the library lock
        with self._lock:
            hit = self._lookup(key, current)
            if hit is not None:
                return hit
            if self._open_under_lock:
                return self._insert(key, current, self._opener(local))
        handle = self._opener(local)
        with self._lock:
            hit = self._lookup(key, current)
            if hit is not None:  # another thread opened it meanwhile
                self._close(handle)
                return hit
            return self._insert(key, current, handle)

    def _lookup(self, key: Any, current: Any) -> Any:
        hit = self._handles.get(key)
        if hit is None:
            return None
        if hit[0] == current:
            self._handles.move_to_end(key)
            return hit[1]
        self._close(self._handles.pop(key)[1])
        return None

    def _insert(self, key: Any, current: Any, handle: Any) -> Any:
        self._handles[key] = (current, handle)
        while len(self._handles) > self._maxsize:
            self._close(self._handles.popitem(last=False)[1][1])
        return handle

    def clear(self) -> None:
        """Close every cached handle."""
        with self._lock:
            while self._handles:
                self._close(self._handles.popitem()[1][1])

    @staticmethod
    def _close(handle: Any) -> None:
        close = getattr(handle, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:  # closing a broken handle must not fail the read that evicts it
            pass


_CACHES: list[HandleCache] = []


def close_cached_files() -> None:
    """Close every file handle the backends cached in this process (h5py, netCDF4, astropy, zarr, memory
    maps). Also runs at interpreter exit, so that files are closed before their libraries are torn down."""
    for cache in _CACHES:
        cache.clear()


atexit.register(close_cached_files)
