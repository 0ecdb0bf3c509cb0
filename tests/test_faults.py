"""Fault tolerance on real worker processes: retries, timeouts, memory limits, worker loss."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pytest

from helpers import assert_same_catalog, install_plugin
from metaextract_dask import formats, scan
from metaextract_dask.cluster import connect

FAULTY = '''
    import errno, hashlib, os, time
    import numpy as np
    from metaextract_dask.formats.base import FormatReader, Records

    class FaultyReader(FormatReader):
        """Test reader whose behaviour the file spells out: FAULTY <mode> [args...]."""
        name = "faulty"
        priority = 1

        def sniff(self, head, path):
            return head.startswith(b"FAULTY ")

        def read(self, path):
            with open(path, "rb") as f:
                words = f.read().decode().split()
            mode = words[1]
            if mode == "flaky":  # fails N times, then reads: counts kept in a state directory
                fails, state = int(words[2]), words[3]
                counter = os.path.join(state, hashlib.md5(path.encode()).hexdigest())
                n = int(open(counter).read()) if os.path.exists(counter) else 0
                with open(counter, "w") as f:
                    f.write(str(n + 1))
                if n < fails:
                    raise OSError(errno.EIO, "Input/output error (flaky storage)")
            elif mode == "parse":
                raise ValueError("corrupt header")
            elif mode == "spin":  # hangs in Python code
                while True:
                    pass
            elif mode == "sleep":  # hangs in native code (a blocked read, a stuck library)
                time.sleep(3600)
            elif mode == "hog":  # a header claiming a gigantic size, allocated bit by bit
                hold = []
                while True:
                    hold.append(np.ones(2**23))
                    time.sleep(0.002)
            elif mode == "slow":
                time.sleep(float(words[2]))
            return Records(format="faulty", attrs={"mode": mode})
'''


@pytest.fixture(scope="module")
def faulty_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    plug = install_plugin(tmp_path_factory.mktemp("plugin"), "faulty", {"faulty": "faulty:FaultyReader"},
                          {"faulty": FAULTY})
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plug))  # spawned workers inherit sys.path
        formats.get_readers.cache_clear()
        try:
            with connect(n_workers=2, dashboard_address="127.0.0.1:0") as c:
                yield c
        finally:
            formats.get_readers.cache_clear()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rows(catalog: Any) -> dict[str, dict[str, Any]]:
    return {os.path.basename(r["path"]): r for r in catalog.to_pandas("files").to_dict("records")}


def test_transient_io_errors_are_retried_parse_errors_are_not(faulty_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    data = tmp_path / "data"
    write(data / "flaky2.dat", f"FAULTY flaky 2 {state}")
    write(data / "flaky5.dat", f"FAULTY flaky 5 {state}")
    write(data / "parse.dat", "FAULTY parse")
    write(data / "fine.dat", "FAULTY ok")
    with dask.config.set({"metaextract.scan.retries": 2, "metaextract.scan.retry-backoff": 0.01}):
        t0 = time.perf_counter()
        cat = scan([data], tmp_path / "cat", client=faulty_client)
    r = rows(cat)
    assert (r["flaky2.dat"]["status"], r["flaky2.dat"]["attempts"]) == ("ok", 3)
    assert (r["flaky5.dat"]["status"], r["flaky5.dat"]["error_type"], r["flaky5.dat"]["attempts"]) == ("error", "OSError", 3)
    assert "Input/output error" in r["flaky5.dat"]["error_message"]
    assert (r["parse.dat"]["status"], r["parse.dat"]["error_type"], r["parse.dat"]["attempts"]) == ("error", "ValueError", 1)
    assert r["fine.dat"]["attempts"] == 1
    s = cat.scan_summary
    assert (s["retries"], s["retried_files"]) == (4, 2)
    assert time.perf_counter() - t0 < 30


def test_timeouts_and_memory_limit(faulty_client: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write(data / "a_spin.dat", "FAULTY spin")
    write(data / "b_sleep.dat", "FAULTY sleep")
    write(data / "c_hog.dat", "FAULTY hog")
    for i in range(6):
        write(data / f"ok{i}.dat", "FAULTY ok")
    settings = {"metaextract.scan.file-timeout": 1.0, "metaextract.scan.file-memory-limit": "300MiB",
                "metaextract.scan.batch-min-files": 9}
    with dask.config.set(settings):
        t0 = time.perf_counter()
        cat = scan([data], tmp_path / "cat", client=faulty_client)
        elapsed = time.perf_counter() - t0
    r = rows(cat)
    assert len(r) == 9
    assert (r["a_spin.dat"]["error_type"], r["a_spin.dat"]["format"]) == ("timeout", "faulty")
    assert "more than 1 s" in r["a_spin.dat"]["error_message"]
    # stuck in native code: the worker was sacrificed, the file reported through the abort event
    assert r["b_sleep.dat"]["error_type"] == "timeout"
    assert "native code" in r["b_sleep.dat"]["error_message"]
    assert (r["c_hog.dat"]["error_type"], r["c_hog.dat"]["format"]) == ("too_large", "faulty")
    assert all(r[f"ok{i}.dat"]["status"] == "ok" for i in range(6))  # the batch-mates survived
    assert elapsed < 60
    faulty_client.wait_for_workers(2, timeout=60)  # the nanny replaced the sacrificed worker
    # worker memory is back to normal after the hog was stopped
    import psutil

    rss = faulty_client.run(lambda: psutil.Process().memory_info().rss)
    assert max(rss.values()) < 1_500 * 2**20


def test_worker_killed_mid_scan_leaves_identical_catalog(faulty_client: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(24):
        write(data / f"s{i:02d}.dat", f"FAULTY slow 0.15 {i}")
    settings = {"metaextract.scan.batch-min-files": 3, "metaextract.scan.batch-max-files": 3}
    with dask.config.set(settings):
        reference = scan([data], tmp_path / "ref", client=faulty_client)
        pids = faulty_client.run(os.getpid)
        victim = next(iter(pids.values()))
        killed: list[int] = []

        def kill_once(done: int, total: int) -> None:
            if not killed:  # after the first commit, in the middle of the scan
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        cat = scan([data], tmp_path / "cat", client=faulty_client, progress=kill_once)
    assert killed and faulty_client.run(os.getpid).keys() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # really dead

    assert_same_catalog(cat, reference)
    assert cat.scan_summary["errors"] == 0 and cat.scan_summary["files"] == 24
    faulty_client.wait_for_workers(2, timeout=60)


def test_performance_report(client: Any, sample_tree: Any, tmp_path: Path) -> None:
    root, _ = sample_tree
    report = tmp_path / "perf.html"
    scan([root], tmp_path / "cat", client=client, performance_report=report)
    html = report.read_text()
    assert "Dask Performance Report" in html and "extract_batch" in html


@pytest.mark.slow
def test_killed_scan_resumes_where_it_stopped(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL the whole scan (client, scheduler, workers), run the same command again: it resumes."""
    import json
    import subprocess
    import sys

    from metaextract_dask import open_catalog

    plug = install_plugin(tmp_path / "plugin", "faulty", {"faulty": "faulty:FaultyReader"}, {"faulty": FAULTY})
    data = tmp_path / "data"
    for i in range(40):
        write(data / f"s{i:02d}.dat", f"FAULTY slow 0.1 {i}")
    conf = write(tmp_path / "scan.yaml", "scan:\n  batch-min-files: 2\n  batch-max-files: 2\n  commit-interval: 0\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plug), os.environ.get("PYTHONPATH", "")]))

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "metaextract_dask.cli", "--config", str(conf), "scan", str(data),
                "-o", str(out), "--workers", "1", "--no-progress", "--dashboard-address", "127.0.0.1:0"]

    reference_out = tmp_path / "reference"
    subprocess.run(command(reference_out), env=env, check=True, capture_output=True, timeout=300)

    out = tmp_path / "cat"
    proc = subprocess.Popen(command(out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "_manifest.json"
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline:
        try:
            committed = len(json.loads(manifest.read_text())["batches"])
        except (OSError, ValueError, KeyError):
            committed = 0
        if committed >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # client, scheduler, nanny and worker: the whole job dies
    proc.wait(timeout=30)
    assert 3 <= committed < 20, "killed in the middle"

    interrupted = open_catalog(out)
    assert not interrupted.manifest["complete"]
    seen = len(interrupted.to_pandas("files"))  # readers see whole committed batches only
    # (tasks of 2 files; results that arrive together are committed together)
    assert seen == sum(b["rows"].get("files", 0) for b in interrupted.manifest["batches"])
    assert seen % 2 == 0 and seen < 40

    done = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = open_catalog(out).scan_summary
    assert summary["read"] == 40 - seen  # only what was not committed
    assert summary["unchanged"] == seen

    assert_same_catalog(open_catalog(out), open_catalog(reference_out))
    assert open_catalog(out).manifest["complete"]
