"""Get a dask.distributed Client: an existing one, a scheduler by address, or an embedded LocalCluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.config

from metaextract_dask import config

__all__ = ["connect", "default_n_workers"]


def default_n_workers() -> int:
    """One worker process per core, at least 2 and at most 4 (metadata reads are I/O and GIL bound)."""
    return min(4, max(2, os.cpu_count() or 1))


_TRIM = "MALLOC_TRIM_THRESHOLD_"


@contextmanager
def _embedded_config() -> Iterator[None]:
    """Apply ``metaextract.cluster.*`` to the scheduler and worker processes created inside.

    ``allowed-failures`` (and a worker saturation of 1.0) go to the scheduler. ``malloc-trim-threshold`` goes
    to the workers' environment:

    distributed's nanny copies its pre-spawn environment into this process's ``os.environ`` (for good) and
    children inherit it, so the variable is set or removed in both places while the workers spawn.
    """
    trim = config.get("cluster.malloc-trim-threshold")
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env[_TRIM] = None if trim is None else int(trim)  # None: distributed leaves the variable out
    saved = os.environ.pop(_TRIM, None)
    if trim is not None:
        os.environ[_TRIM] = str(int(trim))
    try:
        with dask.config.set({
            "distributed.nanny.pre-spawn-environ": env,
            "distributed.scheduler.allowed-failures": int(config.get("cluster.allowed-failures", 0)),
            # One task per worker thread at a time: a worker that dies takes no queued task down with it.
            "distributed.scheduler.worker-saturation": 1.0,
        }):
            yield
    finally:
        os.environ.pop(_TRIM, None)
        if saved is not None:
            os.environ[_TRIM] = saved


@contextmanager
def connect(
    scheduler: str | None = None,
    *,
    client: Any = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = None,
    dashboard_address: str | None = None,
    quiet: bool = True,
) -> Iterator[Any]:
    """Yield a Client, closing only what this call started.

    Resolution order: `client`; `scheduler` (or ``DASK_SCHEDULER_ADDRESS`` / dask config
    ``scheduler-address``); the current default client; else a new ``LocalCluster`` of worker processes
    whose scheduler, workers and dashboard listen on 127.0.0.1 only (``metaextract.cluster.*``).
    """
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        with Client(address, set_as_default=False) as c:
            yield c
        return
    from distributed import default_client

    try:
        current = default_client()
    except ValueError:
        current = None  # no client in this process: start our own
    if current is not None:
        # Yield outside the try: an exception the caller raises in the with-body must reach them as it is.
        yield current
        return

    host = config.get("cluster.host", "127.0.0.1")
    dashboard = dashboard_address or config.get("cluster.dashboard-address", "127.0.0.1:8787")
    with _embedded_config():
        cluster = LocalCluster(
            n_workers=n_workers or config.get("cluster.n-workers") or default_n_workers(),
            threads_per_worker=threads_per_worker or config.get("cluster.threads-per-worker", 1),
            memory_limit=memory_limit or config.get("cluster.memory-limit", "auto"),
            processes=True,
            host=host,
            dashboard_address=dashboard,
            silence_logs=logging.ERROR if quiet else logging.WARNING,
        )
    try:
        with Client(cluster, set_as_default=False) as c:
            yield c
    finally:
        cluster.close()
