"""Get a dask.distributed Client: an existing one, a scheduler by address, or an embedded LocalCluster.

The embedded cluster is private to the user who starts it (``metaextract.cluster.security``): every listener
(scheduler, nannies, workers) speaks TLS with a certificate made for this cluster alone, kept in memory, and
requires the same certificate from whoever connects. Without that, any local user who can open a TCP
connection to 127.0.0.1 could run code as the scanning user (``Client(addr).run(...)``).
"""

from __future__ import annotations

import ast
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.config

from metaextract_dask import config

__all__ = ["ClusterError", "check_main_guard", "connect", "default_n_workers", "scheduler_security",
           "start_client"]


class ClusterError(RuntimeError):
    """No cluster to run on: an unreachable scheduler, missing TLS credentials, or a script whose worker
    processes would run it again (no ``if __name__ == "__main__":`` guard)."""


def default_n_workers() -> int:
    """One worker process per core, at least 2 and at most 4 (metadata reads are I/O and GIL bound)."""
    return min(4, max(2, os.cpu_count() or 1))


_TRIM = "MALLOC_TRIM_THRESHOLD_"
_TLS_KEYS = ("ca-file", "cert", "key")


#: ``metaextract.cluster.<key>`` -> the distributed setting it sets in the embedded cluster.
_HOUSEKEEPING = {
    "worker-profile": "distributed.worker.profile.enabled",
    "tick-interval": "distributed.admin.tick.interval",
    "system-monitor-interval": "distributed.admin.system-monitor.interval",
    "memory-monitor-interval": "distributed.worker.memory.monitor-interval",
}


@contextmanager
def _embedded_config() -> Iterator[None]:
    """Apply ``metaextract.cluster.*`` to the scheduler and worker processes created inside.

    ``allowed-failures`` (and a worker saturation of 1.0) go to the scheduler; ``worker-profile``,
    ``tick-interval``, ``system-monitor-interval`` and ``memory-monitor-interval`` to distributed's settings
    of the same meaning (read when the scheduler, nannies and workers start). ``malloc-trim-threshold`` goes
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
    settings: dict[str, Any] = {
        "distributed.nanny.pre-spawn-environ": env,
        "distributed.scheduler.allowed-failures": int(config.get("cluster.allowed-failures", 0)),
        # One task per worker thread at a time: a worker that dies takes no queued task down with it.
        "distributed.scheduler.worker-saturation": 1.0,
    }
    # dask's housekeeping, which shares the cores with the scan (null: distributed's own setting).
    for key, target in _HOUSEKEEPING.items():
        value = config.get(f"cluster.{key}")
        if value is not None:
            settings[target] = value if isinstance(value, bool) else f"{config.parse_seconds(value) * 1000:g}ms"
    try:
        with dask.config.set(settings):
            yield
    finally:
        os.environ.pop(_TRIM, None)
        if saved is not None:
            os.environ[_TRIM] = saved


# -- the `if __name__ == "__main__":` guard ---------------------------------------------------------------------

def _guard_test(node: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
        return False
    sides = [node.left, node.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _unguarded_main_line() -> tuple[str, int] | None:
    """(script, line) when the call comes from top-level code of the ``__main__`` script outside its guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None  # interactive, python -c, notebooks: children never re-run such a main
    frame = sys._getframe(1)
    line = None
    while frame is not None:  # the outermost frame of the main module's own top-level code
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return None
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None  # cannot tell: let distributed and multiprocessing speak for themselves
    # A guard anywhere around that line (also inside a top-level try/with): the line runs at module level, so
    # it cannot lie in a function's body.
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and _guard_test(node.test) and node.body[0].lineno <= line
                and line <= (node.body[-1].end_lineno or line)):
            return None
    return path, line


def check_main_guard(*, spawning: bool = True) -> None:
    """Refuse to start worker processes from a script that lacks ``if __name__ == "__main__":``.

    distributed's nannies start workers with multiprocessing's ``spawn`` method: each worker imports the
    script again as ``__mp_main__``, and top-level code outside the guard runs again in every one of them
    (a second scan of the same catalog, a cluster per worker). Called in the parent before the cluster
    starts (`spawning`), and wherever a worker still importing the script (multiprocessing marks it as
    *inheriting*) would go wrong.

    Raises
    ------
    ClusterError
        With the hint to add the guard.
    """
    import multiprocessing

    hint = ("put the script's code under `if __name__ == \"__main__\":` (the embedded cluster's worker processes "
            "are started with 'spawn' and import the main script again, running its top-level code once more)")
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ClusterError(f"metaextract-dask was called while a worker process imported the main script: {hint}")
    if not spawning:
        return
    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return  # forked workers never import the main module
    where = _unguarded_main_line()
    if where is not None:
        raise ClusterError(f"{where[0]}, line {where[1]}: an embedded cluster started from a script's top-level "
                           f"code: {hint}")


# -- security -----------------------------------------------------------------------------------------------------

def scheduler_security(address: str) -> Any:
    """The ``distributed.Security`` a client needs for the existing scheduler at `address`.

    ``metaextract.cluster.tls.{ca-file,cert,key}`` when set (all three: distributed's TLS is always mutual),
    else None: distributed then applies its own ``distributed.comm.tls.*`` settings.

    Raises
    ------
    ClusterError
        An incomplete or unreadable set of TLS files, TLS files for a non-``tls://`` address, or a ``tls://``
        address and no credentials at all.
    """
    from distributed import Security

    files = {k: config.get(f"cluster.tls.{k}") for k in _TLS_KEYS}
    given = {k: v for k, v in files.items() if v}
    if given:
        missing = [f"metaextract.cluster.tls.{k}" for k in _TLS_KEYS if k not in given]
        if missing:
            raise ClusterError(f"TLS for the scheduler needs {', '.join(missing)} as well (ca-file, cert and key)")
        for k, path in given.items():
            if not os.access(path, os.R_OK):
                raise ClusterError(f"metaextract.cluster.tls.{k}: cannot read {path}")
        if not address.startswith("tls://"):
            raise ClusterError(f"metaextract.cluster.tls is set but the scheduler address {address} is not tls://")
        return Security(tls_ca_file=files["ca-file"], tls_client_cert=files["cert"], tls_client_key=files["key"],
                        require_encryption=True)
    if address.startswith("tls://"):
        try:
            context = Security().get_connection_args("client")["ssl_context"]
        except OSError as exc:  # distributed.comm.tls.* names files that are not there
            files = ", ".join(str(f) for f in (dask.config.get("distributed.comm.tls.ca-file", None),
                                                dask.config.get("distributed.comm.tls.client.cert", None),
                                                dask.config.get("distributed.comm.tls.client.key", None)) if f)
            raise ClusterError(f"cannot read the TLS files of distributed.comm.tls ({files}): "
                               f"{exc.strerror or exc}") from None
        if context is None:
            raise ClusterError(f"the scheduler {address} speaks TLS and no credentials are set: set "
                               "metaextract.cluster.tls.ca-file, cert and key (or distributed.comm.tls.*)")
    return None


def _existing(address: str) -> Any:
    """A client of the scheduler at `address`, or a one-line ClusterError within ``cluster.connect-timeout``."""
    from distributed import Client
    from distributed.comm.addressing import parse_address, parse_host_port

    try:  # before Client(): one that fails on its address leaves a traceback behind when collected
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as exc:
        raise ValueError(f"not a scheduler address: {address!r} ({exc}); e.g. tcp://127.0.0.1:8786") from None
    security = scheduler_security(address)
    timeout = config.parse_seconds(config.get("cluster.connect-timeout", 10))
    try:
        return Client(address, security=security, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:  # refused, timed out, TLS handshake failed: all OSError in distributed
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason.startswith("Timed out trying to connect"):  # distributed's words for refused and silent alike
            reason = "no answer (is it running, and is the address right?)"
        elif "certificate" in reason.lower() or "tls" in reason.lower():
            reason = reason.split(" More info")[0] + " (metaextract.cluster.tls.*)"
        raise ClusterError(f"cannot connect to the dask scheduler at {address} within {timeout:g} s: "
                           f"{reason}") from None


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


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
    whose scheduler, workers and dashboard listen on 127.0.0.1 only (``metaextract.cluster.*``), private to
    this user (TLS with temporary credentials and mutual authentication, ``metaextract.cluster.security``).

    Raises
    ------
    ValueError
        Invalid arguments or ``metaextract`` settings.
    ClusterError
        The scheduler cannot be reached within ``metaextract.cluster.connect-timeout`` or lacks TLS
        credentials; or the embedded cluster would be started from a script's unguarded top-level code.
    """
    from distributed import Client, default_client

    _positive("n_workers", n_workers)
    _positive("threads_per_worker", threads_per_worker)
    config.validate()  # every scan and profile comes through here, on whatever cluster
    if client is not None:
        yield client
        return
    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        with _existing(address) as c:
            yield c
        return
    try:
        current = default_client()
    except ValueError:
        current = None  # no client in this process: start our own
    if current is not None:
        # Yield outside the try: an exception the caller raises in the with-body must reach them as it is.
        yield current
        return

    cluster = _embedded_cluster(n_workers, threads_per_worker, memory_limit, dashboard_address, quiet)
    try:
        # Results come through the scheduler (direct_to_workers off): gathering straight from the workers saved
        # nothing measurable, and a gather from a worker that just died waited out the 30 s connect timeout.
        with Client(cluster, set_as_default=False) as c:
            yield c
    finally:
        cluster.close()


def _embedded_cluster(n_workers: int | None, threads_per_worker: int | None, memory_limit: str | int | None,
                      dashboard_address: str | None, quiet: bool) -> Any:
    """A new LocalCluster of worker processes on 127.0.0.1, private to this user (see :func:`connect`)."""
    from distributed import LocalCluster

    check_main_guard()
    host = config.get("cluster.host", "127.0.0.1")
    dashboard = dashboard_address or config.get("cluster.dashboard-address", "127.0.0.1:8787")
    security: Any = None
    if config.get("cluster.security", True):
        from distributed import Security

        try:  # a key and a self-signed certificate for this cluster only, never written to disk
            security = Security.temporary()
        except ImportError as exc:
            raise ClusterError("the embedded cluster's TLS needs the 'cryptography' package (pip install "
                               "cryptography), or set metaextract.cluster.security: false") from exc
    with _embedded_config():
        return LocalCluster(
            n_workers=n_workers or config.get("cluster.n-workers") or default_n_workers(),
            threads_per_worker=threads_per_worker or config.get("cluster.threads-per-worker", 1),
            memory_limit=memory_limit or config.get("cluster.memory-limit", "auto"),
            processes=True,
            host=host,
            dashboard_address=dashboard,
            security=security,  # None: distributed's defaults (plain TCP unless its own TLS config says otherwise)
            silence_logs=logging.ERROR if quiet else logging.WARNING,
        )


def start_client(*, n_workers: int | None = None, threads_per_worker: int | None = None,
                 memory_limit: str | int | None = None, dashboard_address: str | None = None,
                 quiet: bool = True) -> Any:
    """Start the embedded cluster and return a Client to it that stays up (for Jupyter), set as the default.

    Unlike :func:`connect`, nothing closes it at the end of a block: scans and profiles use it as the current
    client, and its dashboard link keeps working. Close it with ``client.close(); client.cluster.close()``
    (or let the interpreter's exit do it). Same settings as the embedded cluster of :func:`connect`
    (127.0.0.1 only, TLS private to this user).

    Returns
    -------
    distributed.Client
    """
    from distributed import Client

    _positive("n_workers", n_workers)
    _positive("threads_per_worker", threads_per_worker)
    config.validate()
    cluster = _embedded_cluster(n_workers, threads_per_worker, memory_limit, dashboard_address, quiet)
    try:
        return Client(cluster, set_as_default=True)  # through the scheduler: see connect()
    except BaseException:
        cluster.close()
        raise
