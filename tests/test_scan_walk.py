"""Scans read while the walk goes on: the first files found go to idle workers before the walk ends.

The walk is slowed down here, as a network file system would be, by wrapping the scan's own walk
(:func:`metaextract_dask.discover.iter_discover`) in a generator that sleeps between entries; files, cluster
and catalog are real.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import assert_same_catalog
from metaextract_dask import open_catalog
from metaextract_dask.discover import FileEntry, iter_discover
from metaextract_dask.sample import generate_many

scan_module = importlib.import_module("metaextract_dask.scan")


class SlowWalk:
    """The scan's walk, `delay` seconds per entry; records when each entry was handed over, and can fail."""

    def __init__(self, delay: float, fail_after: int | None = None) -> None:
        self.delay, self.fail_after = delay, fail_after
        self.times: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[FileEntry]:
        for i, entry in enumerate(iter_discover(*args, **kwargs)):
            if self.fail_after is not None and i == self.fail_after:
                raise OSError(5, "Input/output error (the file server went away)")
            time.sleep(self.delay)
            self.times.append(time.time())
            yield entry


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """300 small files of every format (and a few misfits), as the scan benchmark makes them."""
    root = tmp_path_factory.mktemp("many")
    return root, generate_many(root, n_files=300, seed=11, files_per_dir=100)


def _committed_rows(path: Path) -> int:
    from metaextract_dask.sinks import ParquetSink

    with ParquetSink(path) as sink:
        return sink.files_rows("batches").num_rows + sink.files_rows("pending").num_rows


def _starts(client: Any, run: Any) -> list[tuple[float, str]]:
    """(start time, worker) of every extraction task `run()` computed."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        run()
    return sorted((s["start"], t["worker"]) for t in ts.data if str(t["key"]).startswith("extract_batch")
                  for s in t["startstops"] if s["action"] == "compute")


def test_reading_begins_while_the_walk_goes_on(many: tuple[Path, list[str]], client: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, paths = many
    reference = scan_module.scan([root], tmp_path / "reference", client=client)  # walked at full speed
    walk = SlowWalk(0.004)  # 300 entries: a walk of 1.2 s
    monkeypatch.setattr(scan_module, "iter_discover", walk)
    catalogs: list[Any] = []
    starts = _starts(client, lambda: catalogs.append(scan_module.scan([root], tmp_path / "cat", client=client)))
    walk_end = walk.times[-1]
    early = [(t, w) for t, w in starts if t < walk_end]
    # Tasks ran during the walk (which worker takes each is the scheduler's choice), the first soon after the
    # walk took LEAD_AFTER seconds.
    assert len(early) >= 2, (starts, walk_end)
    assert early[0][0] - walk.times[0] < scan_module.LEAD_AFTER + 0.4, (starts, walk.times[0])
    # Nothing lost or read twice: the same rows as the scan of a fast walk, every file the generator wrote.
    cat = catalogs[0]
    s = cat.scan_summary
    assert (s["files"], s["read"]) == (len(paths), len(paths))
    files = cat.to_pandas("files")
    assert sorted(files["path"]) == sorted(str(root / p) for p in paths) and files["path"].is_unique
    assert (files["attempts"] == 1).all()
    assert_same_catalog(cat, reference)


def test_a_walk_failing_after_reading_began_commits_nothing_and_leaves_no_task(
        many: tuple[Path, list[str]], client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, paths = many
    walk = SlowWalk(0.004, fail_after=250)
    monkeypatch.setattr(scan_module, "iter_discover", walk)

    def failing_scan() -> None:
        with pytest.raises(OSError, match="file server went away"):
            scan_module.scan([root], tmp_path / "cat", client=client)

    starts = _starts(client, failing_scan)
    assert starts and starts[0][0] < walk.times[-1]  # tasks had been fed when the walk failed
    # Their results are dropped, not committed: the catalog holds nothing; no task is left on the cluster.
    assert _committed_rows(tmp_path / "cat") == 0
    deadline = time.monotonic() + 15
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0
    # The next scan completes the catalog.
    monkeypatch.setattr(scan_module, "iter_discover", iter_discover)
    cat = scan_module.scan([root], tmp_path / "cat", client=client)
    assert cat.scan_summary["read"] == len(paths) and len(cat.to_pandas("files")) == len(paths)


def test_a_rescan_replacing_rows_while_it_walks_shows_each_file_once(
        many: tuple[Path, list[str]], client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = many
    root = tmp_path / "tree"
    shutil.copytree(src, root)
    scan_module.scan([root], tmp_path / "cat", client=client)
    # 150 changed (new mtime), 20 removed, 80 new: tasks fed during the walk replace committed rows
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.parent.parent == root)
    later = time.time() + 10
    for p in files[:150]:
        os.utime(p, (later, later))
    for p in files[150:170]:
        p.unlink()
    for i, p in enumerate(files[200:280]):
        shutil.copy(p, p.with_name(f"copy_{i:03d}{p.suffix}"))
    walk = SlowWalk(0.003)
    monkeypatch.setattr(scan_module, "iter_discover", walk)
    starts = _starts(client, lambda: scan_module.scan([root], tmp_path / "cat", client=client))
    assert starts and starts[0][0] < walk.times[-1]
    cat = open_catalog(tmp_path / "cat")
    s = cat.scan_summary
    assert (s["read"], s["removed"]) == (150 + 80, 20)
    assert cat.to_pandas("files")["path"].is_unique
    monkeypatch.setattr(scan_module, "iter_discover", iter_discover)
    assert_same_catalog(cat, scan_module.scan([root], tmp_path / "fresh", client=client))
