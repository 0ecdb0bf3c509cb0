"""Progress reporting shared by scan and profile: where the output goes decides how it looks.

- inside Jupyter: a widget (``tqdm.notebook``, needs ``ipywidgets``: ``pip install 'metaextract-dask[notebook]'``);
  without ipywidgets, whole log lines as below rather than ``\\r`` fragments in a cell;
- on a terminal: a plain tqdm bar on stderr;
- otherwise (a pipe, a log file, CI): a whole line on stderr at most every ``metaextract.progress.log-interval``
  seconds, and one at the end.

Workers report how many files of their batch are done every ``metaextract.progress.worker-interval`` seconds
(:class:`WorkerTicker`, dask events on :data:`PROGRESS_TOPIC`), so the count moves per file or few files while
a batch of hundreds runs, not once per batch.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from metaextract_dask import config

__all__ = ["Progress", "WorkerTicker", "PROGRESS_TOPIC", "in_jupyter", "progress_mode"]

#: dask event topic of the workers' in-batch progress: ``{"key": task key, "done": units done so far}``.
PROGRESS_TOPIC = "metaextract-progress"


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell), where a widget can show."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def progress_mode(stream: TextIO | None = None) -> str:
    """``"widget"``, ``"bar"`` or ``"log"``: how :class:`Progress` shows itself here."""
    if in_jupyter():
        return "widget" if _has_widgets() else "log"
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty else "log"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """Counts finished units and shows them (see the module docstring), or calls ``progress(done, total)``.

    Thread-safe: workers' in-batch reports arrive on the client's event loop thread.

    Parameters
    ----------
    total : int
        Units to expect.
    progress : bool, callable or None
        True to show progress, a callable for ``(done, total)`` updates, False for nothing; None: True inside
        Jupyter, else False.
    unit, desc : str
        Labels.
    stream : file, optional
        Where bars and log lines go (default ``sys.stderr``; in Jupyter, log lines go to ``sys.stdout``).
    """

    def __init__(self, total: int, progress: bool | Callable[[int, int], None] | None, *, unit: str = "file",
                 desc: str = "scan", stream: TextIO | None = None) -> None:
        if progress is None:
            progress = in_jupyter()
        self.total, self.done = total, 0
        self.unit, self.desc = unit, desc
        self.callback = progress if callable(progress) else None
        self.bar: Any = None
        self.mode = "none"
        self._lock = threading.Lock()
        self._t0 = self._last_line = time.monotonic()
        self._interval = config.parse_seconds(config.get("progress.log-interval", 10))
        self._stream = stream
        if progress is True and total:
            self.mode = progress_mode(stream)
            if self.mode == "widget":
                from tqdm.notebook import tqdm as notebook_tqdm

                self.bar = notebook_tqdm(total=total, unit=unit, desc=desc)
            elif self.mode == "bar":
                from tqdm.std import tqdm

                self.bar = tqdm(total=total, unit=unit, desc=desc, smoothing=0.1, file=stream or sys.stderr)
            elif in_jupyter():
                self._stream = stream or sys.stdout  # stderr of a cell is shown as an alarming red box

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}s ({100 * self.done / self.total:.0f}%)"
        text += f" in {_duration(elapsed)}, {rate:,.1f} {self.unit}s/s"
        if not final and rate > 0:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        print(text, file=self._stream or sys.stderr, flush=True)
        self._last_line = time.monotonic()

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.refresh()
        elif self.mode == "log":
            if time.monotonic() - self._last_line >= self._interval and self.done < self.total:
                self._line()
        elif self.callback is not None:
            self.callback(self.done, self.total)

    def update(self, n: int) -> None:
        """`n` more units are done."""
        with self._lock:
            self.done += n
            self._show()

    def set(self, done: int) -> None:
        """At least `done` units are done (never moves back: a retried batch's early reports stay counted)."""
        with self._lock:
            if done > self.done:
                self.done = min(done, self.total) if self.total else done
                self._show()

    def close(self) -> None:
        """Finish the bar (or write the last line)."""
        with self._lock:
            if self.bar is not None:
                self.bar.n = self.done
                self.bar.close()
                self.bar = None
            elif self.mode == "log":
                self._line(final=True)
                self.mode = "none"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerTicker:
    """Inside a task: report the units done so far on :data:`PROGRESS_TOPIC`, at most every
    ``metaextract.progress.worker-interval`` seconds (a no-op outside a dask worker)."""

    def __init__(self, interval: float | None = None) -> None:
        self.worker: Any = None
        self.key = ""
        try:
            from distributed import get_worker

            self.worker = get_worker()
            self.key = str(self.worker.get_current_task())
        except (ImportError, ValueError):
            pass
        self.interval = config.parse_seconds(config.get("progress.worker-interval", 0.5) if interval is None
                                             else interval)
        self.last = time.monotonic()

    def tick(self, done: int) -> None:
        """`done` units of this task are finished."""
        if self.worker is None:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            try:
                self.worker.log_event(PROGRESS_TOPIC, {"key": self.key, "done": int(done)})
            except Exception:  # progress is never worth failing a batch for
                self.worker = None
