"""Find the files to scan and pack them into size-aware batches."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from metaextract_dask import config
from metaextract_dask.formats.zarr import is_zarr_store

__all__ = ["FileEntry", "discover", "plan_batches"]


class FileEntry(NamedTuple):
    """A file (or a Zarr directory store) found by :func:`discover`; plain data, cheap to pickle."""

    path: str
    size: int
    mtime_ns: int  # integer nanoseconds: exact, so fingerprints compare equal across runs
    is_dir: bool = False

    @property
    def mtime_us(self) -> int:
        """Modification time in microseconds since the epoch (the catalog's resolution)."""
        return self.mtime_ns // 1000


def _store_entry(path: str) -> FileEntry:
    # A Zarr store is one catalog entry: its size is the sum of its files, its mtime the newest of them.
    size, mtime = 0, os.stat(path).st_mtime_ns
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return FileEntry(path, size, mtime, True)


def _walk(top: str, follow_symlinks: bool, seen_dirs: set[tuple[int, int]] | None = None) -> Iterator[FileEntry]:
    if follow_symlinks:  # a symlink cycle must not walk forever: visit each directory once
        seen_dirs = set() if seen_dirs is None else seen_dirs
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen_dirs:
            return
        seen_dirs.add((st.st_dev, st.st_ino))
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=follow_symlinks):
                if is_zarr_store(entry.path):
                    yield _store_entry(entry.path)
                else:
                    yield from _walk(entry.path, follow_symlinks, seen_dirs)
            elif entry.is_file(follow_symlinks=follow_symlinks):
                st = entry.stat(follow_symlinks=follow_symlinks)
                yield FileEntry(entry.path, st.st_size, st.st_mtime_ns)
        except OSError:
            continue  # vanished or unreadable directory entry; a file that vanishes later is an error row


def discover(paths: Iterable[str | os.PathLike[str]], *, follow_symlinks: bool | None = None) -> list[FileEntry]:
    """List the files under `paths` (files, directories, Zarr stores), depth first in name order.

    Raises
    ------
    FileNotFoundError
        If one of `paths` does not exist (a user error, unlike a file that fails to read).
    """
    if follow_symlinks is None:
        follow_symlinks = bool(config.get("scan.follow-symlinks", False))
    seen: set[str] = set()
    out: list[FileEntry] = []
    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        if not os.path.exists(path):
            raise FileNotFoundError(f"input path does not exist: {raw}")
        if os.path.isdir(path):
            found = [_store_entry(path)] if is_zarr_store(path) else _walk(path, follow_symlinks)
        else:
            st = os.stat(path)
            found = [FileEntry(path, st.st_size, st.st_mtime_ns)]
        for entry in found:
            if entry.path not in seen:  # overlapping inputs are scanned once
                seen.add(entry.path)
                out.append(entry)
    return out


def plan_batches(entries: list[FileEntry], n_threads: int = 1) -> list[list[FileEntry]]:
    """Pack entries into batches: many small files per task, each big file alone.

    A batch holds at most ``scan.batch-max-files`` files and ``scan.batch-target-bytes`` bytes, and
    aims at ``scan.tasks-per-thread`` batches per worker thread so the cluster stays evenly loaded,
    without going below ``scan.batch-min-files`` files (per-task overhead would dominate).
    """
    big = config.parse_bytes(config.get("scan.big-file-bytes", "512MiB"))
    target_bytes = config.parse_bytes(config.get("scan.batch-target-bytes", "256MiB"))
    max_files = int(config.get("scan.batch-max-files", 400))
    min_files = int(config.get("scan.batch-min-files", 16))
    per_thread = int(config.get("scan.tasks-per-thread", 4))

    small = [e for e in entries if e.size < big]
    batches: list[list[FileEntry]] = [[e] for e in entries if e.size >= big]
    want = max(1, n_threads * per_thread)
    per_batch = min(max_files, max(min_files, math.ceil(len(small) / want))) if small else 1

    current: list[FileEntry] = []
    current_bytes = 0
    for entry in small:
        if current and (len(current) >= per_batch or current_bytes + entry.size > target_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(entry)
        current_bytes += entry.size
    if current:
        batches.append(current)
    return batches
