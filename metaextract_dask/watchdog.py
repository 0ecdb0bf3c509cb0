"""Per-file time and memory limits for readers (and for content hashing, under the same limits).

One daemon thread per process watches the files being read. A file past ``scan.file-timeout`` seconds, or
that grew the process by more than ``scan.file-memory-limit`` bytes, gets :class:`FileAbort` raised in its
reading thread (an asynchronous exception, delivered at the next Python bytecode). A reader stuck in native
code never sees it: after a grace period, inside a dask worker, the watchdog logs the file under the
``metaextract-abort`` event topic and ends the worker process, which its nanny restarts; the client turns the
event into the file's ``timeout`` / ``too_large`` row and re-runs the rest of the batch. Outside a worker
(a plain in-process loop) the watchdog never kills the process.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["FileAbort", "Watchdog", "get_watchdog", "announce_start", "ABORT_TOPIC", "STARTED_TOPIC"]

#: distributed event topic under which a worker reports the file it is about to die on.
ABORT_TOPIC = "metaextract-abort"

#: distributed event topic on which a task run again after a worker death says it started: ``{"key": key}``.
#: A dying worker also fails the tasks that were only waiting their turn on it; those sent nothing, so the
#: client knows that failure was not theirs.
STARTED_TOPIC = "metaextract-started"


class FileAbort(BaseException):
    """Raised in a reader's thread when its file passes a limit.

    A BaseException, so the ``except Exception`` clauses inside readers and libraries do not swallow it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "timeout" | "too_large"


@dataclass
class _Watch:
    path: str
    start: float
    rss0: int
    raised_at: float | None = None
    reason: str = ""
    message: str = ""
    done: bool = False


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM: int | None = None


def _rss() -> int:
    """The process's resident set size in bytes.

    Read on every watched file, so on Linux it is one ``pread`` of ``/proc/self/statm`` through a descriptor
    kept open (a few microseconds; psutil builds a Process and parses /proc twice, ~0.1 ms a file).
    """
    global _STATM
    if _STATM is None and os.path.exists("/proc/self/statm"):
        try:
            _STATM = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            _STATM = -1
    if _STATM is not None and _STATM >= 0:
        try:
            return int(os.pread(_STATM, 128, 0).split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            pass
    import psutil

    return int(psutil.Process().memory_info().rss)


def _forget_statm() -> None:
    # A forked child must not read its parent's /proc/<pid>/statm through the inherited descriptor.
    global _STATM
    _STATM = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_statm)


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else None)


class Watchdog:
    """Watches the files read by this process's threads (use :func:`get_watchdog`)."""

    def __init__(self) -> None:
        self.timeout: float | None = None
        self.memory_limit: int | None = None
        self.grace = 5.0
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._thread: threading.Thread | None = None
        self._worker: object | None = None

    def configure(self, timeout: float | str | None, memory_limit: int | str | None, grace: float | None = None) -> None:
        """Set the limits (None or 0: no limit); called by each scan task with the client's settings."""
        from metaextract_dask.config import parse_bytes

        # get_worker() only answers on task threads, so the watchdog thread remembers it from here.
        try:
            from distributed import get_worker

            self._worker = get_worker()
        except (ImportError, ValueError):
            self._worker = None
        self.timeout = float(timeout) if timeout else None
        self.memory_limit = parse_bytes(memory_limit) if memory_limit else None
        if grace is not None:
            self.grace = float(grace)
        elif self.timeout:
            self.grace = min(5.0, max(1.0, self.timeout))

    @contextmanager
    def watch(self, path: str) -> Iterator[None]:
        """Watch the current thread while it reads `path`."""
        if not self.timeout and not self.memory_limit:
            yield
            return
        self._ensure_thread()
        tid = threading.get_ident()
        w = _Watch(path, time.monotonic(), _rss() if self.memory_limit else 0)
        with self._lock:
            self._watches[tid] = w
        try:
            yield
        finally:
            with self._lock:
                w.done = True
                self._watches.pop(tid, None)
                if w.raised_at is not None:
                    _async_raise(tid, None)  # cancel an abort not yet delivered: this file is over

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="metaextract-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            period = min(0.5, (self.timeout or 5.0) / 10)
            time.sleep(max(0.02, period))
            now = time.monotonic()
            with self._lock:
                items = list(self._watches.items())
            for tid, w in items:
                self._check(tid, w, now)

    def _check(self, tid: int, w: _Watch, now: float) -> None:
        if w.raised_at is None:
            reason = message = ""
            if self.timeout and now - w.start > self.timeout:
                reason, message = "timeout", f"reading took more than {self.timeout:g} s"
            elif self.memory_limit:
                grown = _rss() - w.rss0
                if grown > self.memory_limit:
                    reason = "too_large"
                    message = (f"reading grew the process by {grown / 2**20:,.0f} MiB, over the per-file limit of "
                               f"{self.memory_limit / 2**20:,.0f} MiB")
            if reason:
                with self._lock:
                    if w.done:
                        return
                    w.raised_at, w.reason, w.message = now, reason, message
                    _async_raise(tid, _abort_class(reason, message))
        elif now - w.raised_at > self.grace and not w.done:
            self._hard_abort(w)

    def _hard_abort(self, w: _Watch) -> None:
        # The reader is stuck in native code. Only a dask worker may be sacrificed: its nanny restarts it.
        worker = self._worker
        if worker is None:
            return
        message = f"{w.message}; reader stuck in native code, worker restarted"
        event = {"path": w.path, "reason": w.reason, "message": message}
        worker.log_event(ABORT_TOPIC, event)  # type: ignore[attr-defined]
        time.sleep(1.0)  # let the batched stream carry the event to the scheduler
        os._exit(70)


def announce_start() -> bool:
    """Inside a dask task: tell the scheduler on :data:`STARTED_TOPIC` that this task runs now, and wait until
    it knows (a synchronous call, unlike ``log_event``'s batched stream, which a crash right after could lose).

    Returns False outside a worker or when the scheduler could not be told. Costs one round trip: only tasks
    that already failed once through a worker death announce themselves.
    """
    try:
        from distributed import get_worker
        from distributed.utils import sync

        worker = get_worker()
    except (ImportError, ValueError):
        return False
    try:
        msg = {"key": str(worker.get_current_task())}
        sync(worker.loop, worker.scheduler.log_event, topic=STARTED_TOPIC, msg=msg)
    except Exception:  # the client's UNSTARTED_RETRIES bounds what an unheard announcement costs
        return False
    return True


def _abort_class(reason: str, message: str) -> type[FileAbort]:
    # PyThreadState_SetAsyncExc takes a class, not an instance: bake the details into a subclass.
    return type("FileAbort", (FileAbort,), {"__init__": lambda self: FileAbort.__init__(self, reason, message)})


_WATCHDOG = Watchdog()


def get_watchdog() -> Watchdog:
    """The process-wide watchdog."""
    return _WATCHDOG
