"""Scans against an existing cluster: real `dask scheduler` and `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import assert_same_catalog, auto_device, stop_processes

DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear")


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cluster")
    sched_file = tmp / "scheduler.json"
    procs = [subprocess.Popen([*DASK, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                               "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for(sched_file)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(subprocess.Popen([*WORKER, address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                                           "--name", f"w{i}", "--no-dashboard", "--local-directory", str(tmp / f"w{i}")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        yield address
    finally:
        stop_processes(procs)


@pytest.mark.slow
def test_cli_scan_on_existing_scheduler_equals_local_run(scheduler_address: str, sample_tree: Any, catalog: Any,
                                                         tmp_path: Path) -> None:
    root, _ = sample_tree
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "remote"
    proc = subprocess.run([sys.executable, "-m", "metaextract_dask.cli", "scan", str(root), "-o", str(out),
                           "--scheduler", scheduler_address, "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "on 2 worker threads" in proc.stdout
    from metaextract_dask import open_catalog

    scanned = tuple(t for t in catalog.tables if t != "stats")  # a profile test may have filled `stats` there
    assert_same_catalog(open_catalog(out), catalog, tables=scanned)

    # DASK_SCHEDULER_ADDRESS works as well as --scheduler
    out2 = tmp_path / "env"
    proc = subprocess.run([sys.executable, "-m", "metaextract_dask.cli", "scan", str(root), "-o", str(out2),
                           "--no-progress"], capture_output=True, text=True, timeout=300,
                          env=dict(env, DASK_SCHEDULER_ADDRESS=scheduler_address))
    assert proc.returncode == 0, proc.stderr
    assert_same_catalog(open_catalog(out2), catalog, ("files",))


@pytest.mark.slow
def test_existing_cluster_workers_do_not_get_client_config(scheduler_address: str, tmp_path: Path) -> None:
    """Settings travel with the task: a client-side sniff size reaches workers that never saw it."""
    import dask.config
    from distributed import Client

    from metaextract_dask import scan

    data = tmp_path / "d"
    data.mkdir()
    (data / "late.bin").write_bytes(b"\x00" * 512 + b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with Client(scheduler_address) as c:
        with dask.config.set({"metaextract.scan.sniff-bytes": 256}):
            cat = scan([data], tmp_path / "a", client=c)
        assert cat.to_pandas("files")["format"].tolist() == ["binary"]  # magic beyond the sniffed bytes
        cat = scan([data], tmp_path / "b", client=c)  # default 1024: HDF5 user-block offset 512 is seen
        files = cat.to_pandas("files")
        assert (files["format"].tolist(), files["status"].tolist()) == (["hdf5"], ["error"])  # magic only
    shutil.rmtree(tmp_path / "a")


@pytest.mark.slow
def test_cli_profile_on_existing_scheduler_equals_local_profile(scheduler_address: str, sample_tree: Any,
                                                                 client: Any, tmp_path: Path) -> None:
    from metaextract_dask import open_catalog, profile, scan

    root, _ = sample_tree
    local = scan([root], tmp_path / "local", client=client)
    profile(local, client=client)
    remote = scan([root], tmp_path / "remote", client=client)
    proc = subprocess.run([sys.executable, "-m", "metaextract_dask.cli", "profile", str(tmp_path / "remote"),
                           "--scheduler", scheduler_address, "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr
    assert f"profiled 39 arrays on {auto_device()}: ok 36, skipped 3" in proc.stdout
    a = open_catalog(local.path).to_pandas("stats").sort_values(["path", "name"])  # same tree: same paths
    b = open_catalog(remote.path).to_pandas("stats").sort_values(["path", "name"])
    assert len(a) == len(b) == 39
    for col in ("path", "name", "status", "valid_count", "fill_count", "min", "max", "mean", "std", "hist_counts", "dask_chunks"):
        assert [str(x) for x in a[col]] == [str(x) for x in b[col]], col
