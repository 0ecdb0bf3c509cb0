"""Progress reporting shared by scan and profile: a tqdm bar, a callback, or nothing."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress"]


class Progress:
    """Counts finished units; shows a tqdm bar (``progress=True``) or calls ``progress(done, total)``.

    Parameters
    ----------
    total : int
        Units to expect.
    progress : bool or callable
        True for a bar, a callable for ``(done, total)`` updates, False for nothing.
    unit, desc : str
        Bar labels.
    """

    def __init__(self, total: int, progress: bool | Callable[[int, int], None], *, unit: str = "file",
                 desc: str = "scan") -> None:
        self.total, self.done = total, 0
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, smoothing=0.1)

    def update(self, n: int) -> None:
        """`n` more units are done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
