"""Adaptive dask chunk sizes: whole multiples of the on-disk chunks, sized from a target, capped by memory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from metaextract_dask import config

__all__ = ["adaptive_chunks", "chunk_limit", "worker_memory_limit"]


def worker_memory_limit(client: Any = None) -> int | None:
    """The smallest worker memory limit of `client`'s cluster, or of this worker when run inside one."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
        if limit:
            return int(limit)
    except (ImportError, ValueError, AttributeError):
        pass
    if client is not None:
        limits = [w.get("memory_limit") for w in client.scheduler_info()["workers"].values()]
        limits = [int(x) for x in limits if x]
        return min(limits) if limits else None
    return None


def chunk_limit(memory_limit: int | None = None) -> int:
    """Bytes per dask chunk: ``metaextract.chunk-target``, capped at ``chunk-memory-fraction`` of a worker."""
    limit = config.parse_bytes(config.get("chunk-target", "128MiB"))
    if memory_limit:
        limit = min(limit, int(memory_limit * float(config.get("chunk-memory-fraction", 0.1))))
    return max(limit, 1)


def adaptive_chunks(shape: Sequence[int], dtype: Any, disk_chunks: Sequence[int] | None = None, *,
                    memory_limit: int | None = None, limit: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Dask chunks for an array of `shape` and `dtype` stored in `disk_chunks` (None: contiguous).

    Small arrays are one chunk. Larger ones get chunks of about `limit` bytes (default :func:`chunk_limit`)
    that are whole multiples of the on-disk chunks, so every stored chunk is read by exactly one task; the
    rounding is dask's own (``normalize_chunks`` with ``previous_chunks``).
    """
    from dask.array.core import normalize_chunks

    shape = tuple(int(s) for s in shape)
    dt = np.dtype(dtype)
    limit = limit or chunk_limit(memory_limit)
    if disk_chunks:
        # Never split a stored chunk over tasks (each would decompress all of it), unless even one stored
        # chunk breaks the memory cap.
        disk_bytes = math.prod(min(int(c), s) for c, s in zip(disk_chunks, shape)) * dt.itemsize
        cap = int(memory_limit * float(config.get("chunk-memory-fraction", 0.1))) if memory_limit else None
        if disk_bytes > limit and (cap is None or disk_bytes <= cap):
            limit = disk_bytes
    if not shape or math.prod(shape) * dt.itemsize <= limit:
        return tuple((s,) for s in shape)
    if disk_chunks:
        previous = tuple(min(int(c), s) for c, s in zip(disk_chunks, shape))
    else:  # contiguous: slabs along the first axis, so each task reads one contiguous byte range
        previous = (1, *shape[1:])
    itemsize_dtype = dt if dt.kind != "O" else np.dtype("f8")
    return normalize_chunks("auto", shape=shape, limit=limit, dtype=itemsize_dtype, previous_chunks=previous)
