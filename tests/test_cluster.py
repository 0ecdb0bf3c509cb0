"""The scan on real dask.distributed clusters: worker processes, loopback-only listeners, dashboard."""

from __future__ import annotations

import os
import time
import urllib.request
from contextlib import ExitStack
from typing import Any

import dask.config
import numpy as np
import psutil
import pyarrow as pa
import pytest

from metaextract_dask import scan
from metaextract_dask.cluster import connect
from metaextract_dask.discover import discover
from metaextract_dask.extract import extract_batch
from metaextract_dask.frames import to_pandas


def test_scan_runs_batches_on_both_worker_processes(sample_tree: Any, client: Any, tmp_path: Any) -> None:
    from distributed import get_task_stream

    root, _ = sample_tree
    with dask.config.set({"metaextract.scan.batch-min-files": 2, "metaextract.scan.batch-max-files": 3}), \
            get_task_stream(client) as ts:
        catalog = scan([root], tmp_path / "cat", client=client)
    tasks = [t for t in ts.data if t["key"][0].startswith("extract_batch") or "extract_batch" in str(t["key"])]
    assert len(tasks) == catalog.manifest["summary"]["batches"] >= 6
    workers = {t["worker"] for t in tasks}
    assert len(workers) == 2, "both worker processes took batches"
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids  # real processes, not threads of this one

    # Same rows as a plain in-process extraction of the same files.
    local = extract_batch(discover([root]))
    for name in catalog.tables:
        dist = catalog.to_pandas(name).drop(columns=["read_seconds"], errors="ignore")
        ref = to_pandas(local[name]).drop(columns=["read_seconds"], errors="ignore")  # the catalog's dtypes
        keys = ["path", "name"] if name == "arrays" else ["path", "index"] if name == "hdus" else ["path"]
        dist = dist.sort_values(keys).reset_index(drop=True)
        ref = ref.sort_values(keys).reset_index(drop=True)
        assert pa.Table.from_pandas(dist).equals(pa.Table.from_pandas(ref)), name


def test_catalog_parts_committed_per_batch(catalog: Any) -> None:
    manifest = catalog.manifest
    assert manifest["complete"] and manifest["schema_version"] == 1
    ids = [b["id"] for b in manifest["batches"] if "files" in b["parts"]]
    # one committed batch per task, or fewer: results that arrive together are committed together
    assert sorted(ids) == list(range(len(ids))) and 1 <= len(ids) <= manifest["summary"]["batches"]
    extra = [b for b in manifest["batches"] if "files" not in b["parts"]]
    assert all(set(b["rows"].values()) == {0} for b in extra)  # only the empty parts of row-less tables
    n_files = sum(b["rows"].get("files", 0) for b in manifest["batches"])
    assert n_files == manifest["summary"]["files"] == len(catalog.to_pandas("files"))
    for table in catalog.tables:
        names = os.listdir(catalog.table_path(table))
        assert not [n for n in names if n.startswith(".tmp")]  # nothing half-written left behind
        assert names, table


def _trim_env() -> str | None:
    # A function, not os.environ.get: that bound method would pickle the client's environ by value.
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _listening(proc: psutil.Process) -> set[str]:
    return {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_embedded_cluster_listens_on_loopback_only() -> None:
    with connect(n_workers=2) as c:
        link = c.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        me = psutil.Process()
        addresses = _listening(me)  # scheduler and dashboard live in this process
        for child in me.children(recursive=True):  # nannies and workers
            addresses |= _listening(child)
        assert addresses == {"127.0.0.1"}
        with urllib.request.urlopen(link, timeout=30) as resp:  # the bokeh dashboard answers
            assert resp.status == 200
            assert b"Dask" in resp.read()
        # TLS by default: the embedded cluster is private to its user (metaextract.cluster.security)
        assert all(w.startswith("tls://127.0.0.1:") for w in c.scheduler_info()["workers"])
        # distributed's MALLOC_TRIM_THRESHOLD_ slows file opens ~20%; the embedded cluster leaves glibc adaptive
        assert set(c.run(_trim_env).values()) == {None}


def test_malloc_trim_threshold_is_configurable() -> None:
    with dask.config.set({"metaextract.cluster.malloc-trim-threshold": 65536}), connect(n_workers=1) as c:
        assert set(c.run(_trim_env).values()) == {"65536"}


def test_medium_preset_big_files_are_batches_of_their_own(client: Any, tmp_path: Any) -> None:
    from metaextract_dask.sample import generate

    # The medium preset at 5% scale: the same layout (8 MB chunks) at ~30 MB instead of ~600 MB.
    manifest = generate(tmp_path / "data", preset="medium", _medium_scale=0.05)
    big = {e["path"]: e for e in manifest["files"] if e["path"] in ("hdf5/large_cube.h5", "zarr/large_v3.zarr")}
    assert len(big) == 2
    with dask.config.set({"metaextract.scan.big-file-bytes": "8MB"}):
        catalog = scan([tmp_path / "data"], tmp_path / "cat", client=client)
        from metaextract_dask.discover import plan_batches

        entries = discover([tmp_path / "data"])
        batches = plan_batches(entries, n_threads=2)
    alone = {os.path.relpath(b[0].path, tmp_path / "data") for b in batches if len(b) == 1}
    assert set(big) <= alone
    arrays = catalog.to_pandas("arrays")
    for rel, entry in big.items():
        rows = arrays[arrays["path"] == str(tmp_path / "data" / rel)].set_index("name")
        for exp in entry["arrays"]:
            assert list(rows.loc[exp["name"], "shape"]) == exp["shape"]
            assert list(rows.loc[exp["name"], "chunks"]) == exp["chunks"]
            assert rows.loc[exp["name"], "nbytes"] == int(np.prod(exp["shape"])) * np.dtype(exp["dtype"]).itemsize


@pytest.mark.parametrize("queuing", [True, False], ids=["queuing", "no-queuing"])
def test_worker_death_leaves_error_rows_not_holes(tmp_path: Any, monkeypatch: Any, queuing: bool) -> None:
    """A reader that kills its worker process: that file is an error row, every other file is read.

    Without queuing (an operator's scheduler at ``worker-saturation: inf``) and with one worker, every task
    waits its turn on that worker behind the killer and dies with it, again and again: those deaths must not
    use up the attempts of files that were never read.
    """
    from distributed import Client, LocalCluster

    from helpers import install_plugin
    from metaextract_dask import formats

    plug = install_plugin(tmp_path / "plug", "killer", {"killer": "killer:KillerReader"}, {"killer": '''
        import os
        from metaextract_dask.formats.base import FormatReader

        class KillerReader(FormatReader):
            name = "killer"
            priority = 1
            def sniff(self, head, path):
                return head.startswith(b"KILLME")
            def read(self, path):
                os._exit(13)  # what a segfaulting C library does to a worker
    '''})
    monkeypatch.syspath_prepend(str(plug))  # spawned workers inherit sys.path
    formats.get_readers.cache_clear()

    data = tmp_path / "data"
    data.mkdir()
    for i in range(12):
        (data / f"f{i:02d}.bin").write_bytes(b"KILLME" if i == 5 else b"\x00" * i)
    try:
        with dask.config.set({"metaextract.scan.batch-min-files": 4, "metaextract.scan.batch-max-files": 4}), \
                ExitStack() as stack:
            if queuing:  # the embedded cluster: 2 workers, one task per thread at a time where dask queues
                c = stack.enter_context(connect(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0"))
            else:
                stack.enter_context(dask.config.set({"distributed.scheduler.worker-saturation": "inf",
                                                     "distributed.scheduler.allowed-failures": 0}))
                cluster = stack.enter_context(LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                           host="127.0.0.1", dashboard_address=None))
                c = stack.enter_context(Client(cluster))
            started = time.monotonic()
            catalog = scan([data], tmp_path / "cat", client=c)
            elapsed = time.monotonic() - started
            c.wait_for_workers(len(c.cluster.workers), timeout=60)  # the nannies restart what died
    finally:
        formats.get_readers.cache_clear()
    files = catalog.to_pandas("files").sort_values("path").reset_index(drop=True)
    assert len(files) == 12 and files["path"].is_unique
    lost = files[files["status"] == "error"]
    # Only the killer is lost; its batch-mates were re-read one by one.
    assert lost["path"].tolist() == [str(data / "f05.bin")]
    assert lost["format"].tolist() == ["unknown"] and lost["error_type"].tolist() == ["KilledWorker"]
    assert "worker process died while reading this file" in lost["error_message"].iloc[0]
    assert (files.loc[files["status"] == "ok", "format"] == "binary").all()
    summary = catalog.manifest["summary"]
    assert summary["error_types"] == {"KilledWorker": 1}
    # 3 batches; the failed one once more as a whole, then split in 4; the killer alone once more; and once more
    # each task that only waited on a dying worker (how many depends on where the scheduler put them)
    assert summary["batches"] >= 3 + 1 + 4 + 1
    # A few worker restarts (~2 s each here), not a 30 s connect timeout per death (a direct gather from the
    # dead worker cost that).
    assert elapsed < 60
