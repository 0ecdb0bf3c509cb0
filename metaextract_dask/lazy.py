"""The lazy API for scripted graphs: the catalog tables of some files as dask DataFrames, nothing computed.

:func:`extract` walks the inputs and plans the batches on the client (as a scan does) and builds one
``dd.from_map`` DataFrame per table, one partition per batch; reading happens when a result is computed, on
whatever scheduler is current. Nothing is committed anywhere: it is for composing extraction into a larger
graph (``to_parquet``, joins, ``distributed.progress``). :func:`metaextract_dask.scan` stays the committed,
incremental, fault-tolerant path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from metaextract_dask import config
from metaextract_dask.discover import FileEntry, PathFilter, discover, plan_batches
from metaextract_dask.schema import SCHEMAS

__all__ = ["extract", "Extraction", "extract_table"]


def extract_table(batch: list[FileEntry], table: str, settings: dict[str, Any]) -> Any:
    """One partition: the rows of `table` for the files of `batch`, as pandas (runs on a worker)."""
    from metaextract_dask.extract import extract_batch
    from metaextract_dask.frames import to_pandas

    return to_pandas(extract_batch(batch, settings)[table], lazy=True)


class Extraction(Mapping[str, Any]):
    """The catalog tables of an :func:`extract` call: ``{table name: dask DataFrame}``, also as attributes
    (``ex.files``, ``ex.arrays``, ``ex.hdus``, ``ex.dicom``). Computing a table reads its files; two tables
    computed together read them twice (use :func:`metaextract_dask.scan` to read once and keep the result).

    Attributes
    ----------
    batches : list of list of FileEntry
        The planned batches, one partition each.
    """

    def __init__(self, frames: dict[str, Any], batches: list[list[FileEntry]]) -> None:
        self._frames = frames
        self.batches = batches

    def __getitem__(self, name: str) -> Any:
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_frames"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._frames})

    def __repr__(self) -> str:
        n = sum(len(b) for b in self.batches)
        return f"<Extraction of {n} files in {len(self.batches)} partitions: {', '.join(self._frames)}>"


def extract(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
            include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
            n_threads: int | None = None) -> Extraction:
    """The catalog tables of the files under `paths` as lazy dask DataFrames (nothing is read yet).

    Parameters
    ----------
    paths : path or iterable of paths
        Files, directories (walked now, on the client) and Zarr stores.
    include, exclude : iterable of str, optional
        Glob patterns, as for :func:`metaextract_dask.scan`.
    n_threads : int, optional
        Worker threads to plan the batches for (default: the current client's, else 4).

    Returns
    -------
    Extraction
        ``files``, ``arrays``, ``hdus``, ``dicom`` (and any plugin's tables): dask DataFrames with one
        partition per batch and the catalog's columns, as :class:`metaextract_dask.Catalog` gives them.
        Special files (FIFOs, symlinks, unlisted directories) get their rows as in a scan, without being
        opened.

    Examples
    --------
    >>> ex = mx.extract("data/")                       # doctest: +SKIP
    >>> ex.files.groupby("format").size_bytes.sum()    # doctest: +SKIP
    >>> ex.arrays.to_parquet("arrays/")                # doctest: +SKIP
    """
    from metaextract_dask.frames import to_pandas

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    settings = {k.replace("_", "-"): v for k, v in config.get("scan", {}).items()}
    config.validate({"scan": settings})
    entries = discover(paths, patterns=PathFilter(include, exclude))
    if n_threads is None:
        try:
            from distributed import default_client

            n_threads = sum(default_client().nthreads().values()) or 4
        except (ImportError, ValueError):
            n_threads = 4
    batches = plan_batches(entries, n_threads) if entries else []
    frames: dict[str, Any] = {}
    import dask.dataframe as dd

    for name, schema in SCHEMAS.items():
        meta = to_pandas(schema.empty_table(), lazy=True)
        if not batches:
            frames[name] = dd.from_pandas(meta, npartitions=1)
            continue
        frames[name] = dd.from_map(extract_table, batches, table=name, settings=settings, meta=meta,
                                   enforce_metadata=False, label=f"metaextract-{name}")
    return Extraction(frames, batches)
