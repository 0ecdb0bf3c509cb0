"""Hardening of the cluster and catalog side: a private embedded cluster, errors that never vanish, validated
arguments and settings, full disks and catalog permissions. Real clusters, real processes, real files."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import stop_processes

from metaextract_dask.cluster import connect

EXE = [sys.executable, "-m", "metaextract_dask.cli"]
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the command as a user does (this checkout's package first on the path)."""
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")])
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=full)


# -- item 11: connect() never swallows the caller's exceptions ---------------------------------------------------


def test_connect_with_the_users_client_lets_their_errors_through(client: Any, catalog: Any) -> None:
    with client.as_current():  # the user's own client is the current one
        with pytest.raises(ValueError, match="^mine$"):
            with connect() as c:
                assert c is client
                raise ValueError("mine")
        with pytest.raises(KeyError, match="mine too"):
            with connect() as c:
                raise KeyError("mine too")
        from metaextract_dask import profile

        # a ValueError raised by profile inside its `with connect()` body reaches the caller as it is
        with pytest.raises(ValueError, match="device must be auto, cpu or gpu, not 'GPU'"):
            profile(catalog, device="GPU")
    # and nothing else started: the fixture's cluster is still the only one this process runs
    assert client.status == "running"


# -- item 1: the embedded cluster is private to its user ---------------------------------------------------------


def _comm_refused(address: str, **connection_args: Any) -> None:
    """A raw distributed comm to `address` gets no answer to an `identity` request."""
    import asyncio

    from distributed.comm import connect as comm_connect

    async def attempt() -> Any:
        comm = await comm_connect(address, timeout=5, **connection_args)
        try:
            await comm.write({"op": "identity"})
            return await asyncio.wait_for(comm.read(), 5)
        finally:
            await comm.close()

    t0 = time.monotonic()
    with pytest.raises((OSError, TimeoutError, asyncio.TimeoutError)):
        answer = asyncio.run(attempt())
        print("answered:", answer)
    assert time.monotonic() - t0 < 15


def _client_refused(address: str, security: Any = None) -> str:
    """`Client(address)` cannot connect (and so cannot `run(os.getuid)`); returns the error."""
    from distributed import Client

    t0 = time.monotonic()
    with pytest.raises((OSError, TimeoutError, TypeError)) as info:
        c = Client(address, security=security, timeout=5, set_as_default=False)
        try:
            print("ran code as uid", c.run(os.getuid))
        finally:
            c.close()
    assert time.monotonic() - t0 < 15
    message = str(info.value)
    # The half-made Client lives on in the traceback's frames (a cycle): collected at a random allocation, its
    # __del__ closes its loop runner, and inside the next Client's start that deadlocks distributed. Now.
    del info
    gc.collect()
    return message


def _no_verify_tls() -> Any:
    """A TLS client context that trusts anything and shows no certificate of its own."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_embedded_cluster_of_a_scan_refuses_clients_without_its_credentials(tmp_path: Path) -> None:
    """While a scan runs, another local user's client (plain TCP, TLS without or with other certificates)
    cannot reach the scheduler, a worker or a nanny; the dashboard still answers over HTTP on 127.0.0.1."""
    import urllib.request

    from distributed import Security

    from metaextract_dask import scan

    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.bin").write_bytes(b"x" * i)
    seen: dict[str, Any] = {}

    def probe(c: Any) -> None:
        address = c.scheduler.address
        seen["address"] = address
        port = address.rsplit(":", 1)[1]
        seen["tcp"] = _client_refused(f"tcp://127.0.0.1:{port}")
        seen["tls-none"] = _client_refused(f"tls://127.0.0.1:{port}")
        seen["tls-other"] = _client_refused(address, Security.temporary())  # a certificate of its own making
        _comm_refused(f"tcp://127.0.0.1:{port}")
        _comm_refused(address, ssl_context=_no_verify_tls())
        workers = c.scheduler_info()["workers"]
        seen["workers"] = sorted(workers)
        for addr, info in workers.items():
            for target in (addr, info["nanny"]):
                _comm_refused("tcp://" + target.split("://", 1)[1])
                _comm_refused(target, ssl_context=_no_verify_tls())
        seen["link"] = c.dashboard_link
        with urllib.request.urlopen(c.dashboard_link, timeout=30) as resp:
            seen["dashboard"] = (resp.status, b"Dask" in resp.read())
        seen["uids"] = set(c.run(os.getuid).values())  # the scan's own client still runs what it likes

    catalog = scan([data], tmp_path / "cat", n_workers=1, on_client=probe)
    assert seen["address"].startswith("tls://127.0.0.1:")
    assert seen["workers"] and all(w.startswith("tls://127.0.0.1:") for w in seen["workers"])
    assert "TLS" in seen["tls-none"] and "certificate" in seen["tls-other"]
    assert seen["link"].startswith("http://127.0.0.1:") and seen["link"].endswith("/status")
    assert seen["dashboard"] == (200, True)
    assert seen["uids"] == {os.getuid()}
    assert catalog.scan_summary["read"] == 3 and catalog.scan_summary["errors"] == 0


def test_session_cluster_is_tls(client: Any) -> None:
    """The clusters every other test uses are the secured ones too (and work: the suite runs on them)."""
    assert client.scheduler.address.startswith("tls://127.0.0.1:")
    assert client.security.require_encryption


def test_security_can_be_turned_off() -> None:
    import dask.config
    from distributed import Client

    with dask.config.set({"metaextract.cluster.security": False}), connect(n_workers=1) as c:
        assert c.scheduler.address.startswith("tcp://127.0.0.1:")
        with Client(c.scheduler.address, timeout=10, set_as_default=False) as anyone:
            assert set(anyone.run(os.getpid).values()) == set(c.run(os.getpid).values())


def _write_credentials(where: Path) -> dict[str, str]:
    """PEM files of a fresh self-signed certificate (its own CA) and its key, as a site's TLS files would be."""
    from distributed import Security

    sec = Security.temporary()
    where.mkdir(parents=True)
    files = {"ca-file": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
    files["ca-file"].write_text(sec.tls_ca_file)
    files["cert"].write_text(sec.tls_client_cert)
    files["key"].write_text(sec.tls_client_key)
    files["key"].chmod(0o600)
    return {k: str(v) for k, v in files.items()}


@pytest.mark.slow
def test_scan_on_an_existing_tls_scheduler(tmp_path: Path) -> None:
    """`--scheduler tls://...` with the TLS files in metaextract.cluster.tls; without them a one-line error."""
    import json

    creds = _write_credentials(tmp_path / "tls")
    other = _write_credentials(tmp_path / "other")
    tls_args = ["--tls-ca-file", creds["ca-file"], "--tls-cert", creds["cert"], "--tls-key", creds["key"]]
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls",
                               "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                               "--scheduler-file", str(sched_file), *tls_args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        end = time.monotonic() + 60
        while not (sched_file.exists() and sched_file.stat().st_size) and time.monotonic() < end:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", *tls_args,
                                       "--local-directory", str(tmp_path / "w")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        data = tmp_path / "d"
        data.mkdir()
        for i in range(4):
            (data / f"{i}.bin").write_bytes(b"\0" * i)

        def cfg(name: str, files: dict[str, str]) -> str:
            path = tmp_path / f"{name}.yaml"
            path.write_text("cluster:\n  tls:\n" + "".join(f"    {k}: {v}\n" for k, v in files.items()))
            return str(path)

        # no credentials: one line, exit 2, at once
        proc = cli("scan", str(data), "-o", str(tmp_path / "c0"), "--scheduler", address, "--no-progress")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"metaextract-dask: error: the scheduler {address} speaks TLS and no credentials are set: set "
            "metaextract.cluster.tls.ca-file, cert and key (or distributed.comm.tls.*)"]
        # credentials of another cluster: refused, one line
        proc = cli("--config", cfg("other", other), "scan", str(data), "-o", str(tmp_path / "c1"),
                   "--scheduler", address, "--no-progress", "--connect-timeout", "5")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert f"cannot connect to the dask scheduler at {address}" in proc.stderr
        # the right ones: the scan runs there
        proc = cli("--config", cfg("good", creds), "scan", str(data), "-o", str(tmp_path / "c2"),
                   "--scheduler", address, "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert "scanned 4 files" in proc.stdout and "on 1 worker threads" in proc.stdout
    finally:
        stop_processes(procs)


# -- item 12: arguments and settings validated; an unreachable scheduler; the __main__ guard ----------------------


@pytest.mark.parametrize("args, message", [
    (("--workers", "-1"), "argument --workers: must be an integer >= 1, not -1"),
    (("--workers", "0"), "argument --workers: must be an integer >= 1, not 0"),
    (("--file-timeout", "-5"), "argument --file-timeout: must be a number > 0, not -5"),
    (("--retries", "-1"), "argument --retries: must be an integer >= 0, not -1"),
    (("--connect-timeout", "0"), "argument --connect-timeout: must be a number > 0, not 0"),
    (("--sample-fraction", "1.5"), "argument --sample-fraction: must be a number > 0 and <= 1, not 1.5"),
    (("--retries", "x"), "argument --retries: 'x' is not an integer"),
])
def test_cli_arguments_are_validated(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "d").mkdir()
    t0 = time.monotonic()
    proc = cli("scan", str(tmp_path / "d"), "-o", str(tmp_path / "cat"), *args, timeout=60)
    assert time.monotonic() - t0 < 60  # --workers -1 used to hang
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "cat").exists()


def test_unknown_settings_are_rejected_with_the_closest_key(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scan:\n  batch-max-file: 3\n")
    proc = cli("--config", str(cfg), "scan", str(tmp_path / "d"), "-o", str(tmp_path / "cat"), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"metaextract-dask: error: config {cfg}: unknown setting "
                                   "metaextract.scan.batch-max-file (did you mean metaextract.scan.batch-max-files?)")
    proc = cli("scan", str(tmp_path / "d"), "-o", str(tmp_path / "cat"), timeout=60,
               env={"DASK_METAEXTRACT__SCAN__FILE_TIMEOUT": "-5", "DASK_METAEXTRACT__KERNAL": "numba"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("metaextract-dask: error: unknown setting metaextract.kernal (did you mean "
                                   "metaextract.kernel?); metaextract.scan.file-timeout must be a number > 0 or "
                                   "null, not -5")
    assert not (tmp_path / "cat").exists()


def test_api_validates_arguments_and_settings(tmp_path: Path) -> None:
    import dask.config

    from metaextract_dask import config, scan

    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"metaextract\.scan\.file-timeout must be a number > 0 or null, not -5"):
        scan([tmp_path / "d"], tmp_path / "cat", file_timeout=-5)
    with pytest.raises(ValueError, match=r"metaextract\.cluster\.n-workers must be an integer >= 1 or null, not -1"):
        scan([tmp_path / "d"], tmp_path / "cat", n_workers=-1)
    with dask.config.set({"metaextract.scan.batch-max-file": 3}), \
            pytest.raises(ValueError, match=r"did you mean metaextract\.scan\.batch-max-files\?"):
        scan([tmp_path / "d"], tmp_path / "cat")
    with dask.config.set({"metaextract.cluster.security": "no"}), \
            pytest.raises(ValueError, match=r"metaextract\.cluster\.security must be true or false, not 'no'"):
        with connect():
            pass
    with pytest.raises(ValueError, match="n_workers must be a positive integer, not 0"):
        with connect(n_workers=0):
            pass
    assert not (tmp_path / "cat").exists()  # nothing written before the settings were checked
    # a YAML file with a misspelt key merges nothing
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scan:\n  retries: 7\n  sniff-byte: 10\n")
    with pytest.raises(ValueError, match=r"c\.yaml: unknown setting metaextract\.scan\.sniff-byte \(did you mean "
                                         r"metaextract\.scan\.sniff-bytes\?\)"):
        config.load_yaml(cfg)
    assert config.get("scan.retries") == 2
    # every shipped default is valid, and the octal modes read as octal
    config.validate()
    assert config.parse_mode("0640") == 0o640 and config.parse_mode(0o600) == 0o600


def test_profile_on_the_users_client_validates_settings(client: Any, catalog: Any) -> None:
    import dask.config

    from metaextract_dask import profile

    before = catalog.manifest["next_id"]
    with dask.config.set({"metaextract.profile-batches": "1MiB"}), \
            pytest.raises(ValueError, match=r"^unknown setting metaextract\.profile-batches \(did you mean "
                                            r"metaextract\.profile-batch\?\)$"):
        profile(catalog, client=client)
    assert catalog.manifest["next_id"] == before  # nothing written


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_scheduler_is_one_line_within_the_connect_timeout(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"x")
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = cli("scan", str(tmp_path / "d"), "-o", str(tmp_path / "cat"), "--scheduler", address,
               "--connect-timeout", "2", "--no-progress", timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"metaextract-dask: error: cannot connect to the dask scheduler at {address} within 2 s: no answer (is it "
        "running, and is the address right?)"]
    assert took < 2 + 20  # the timeout plus starting Python; distributed's default was 30 s
    # a malformed address: one line too (no traceback from a half-made client at exit)
    proc = cli("scan", str(tmp_path / "d"), "-o", str(tmp_path / "cat"), "--scheduler", "tcp://127.0.0.1",
               "--no-progress", timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "metaextract-dask: error: not a scheduler address: 'tcp://127.0.0.1' (missing port number in address "
        "'127.0.0.1'); e.g. tcp://127.0.0.1:8786"], proc.stderr
    # profile: the same (the catalog the failed scan opened is a valid, empty one)
    proc = cli("profile", str(tmp_path / "cat"), "--scheduler", address, "--connect-timeout", "1", "--no-progress",
               timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"metaextract-dask: error: cannot connect to the dask scheduler at {address} within 1 s: no answer (is it "
        "running, and is the address right?)"]
    # the API: ClusterError, a RuntimeError; the catalog opened before is left resumable
    import dask.config

    from metaextract_dask import scan
    from metaextract_dask.cluster import ClusterError

    with dask.config.set({"metaextract.cluster.connect-timeout": 1}), pytest.raises(ClusterError, match="within 1 s"):
        scan([tmp_path / "d"], tmp_path / "cat", scheduler=address)
    assert not (tmp_path / "cat" / ".lock").exists() or _lock_is_free(tmp_path / "cat" / ".lock")


def _lock_is_free(path: Path) -> bool:
    import fcntl

    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


_SCRIPT = """\
import sys
import metaextract_dask as mx

{body}
"""


def _script(tmp_path: Path, name: str, body: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    path.write_text(_SCRIPT.format(body=body))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def test_script_without_main_guard_gets_the_hint(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.bin").write_bytes(b"x")
    scan_call = (f"cat = mx.scan([{str(data)!r}], {str(tmp_path / 'cat')!r}, n_workers=1)\n"
                 "print('scanned', cat.scan_summary['read'])")
    proc = _script(tmp_path, "noguard.py", scan_call)
    assert proc.returncode == 1
    assert "another scan is writing" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"metaextract_dask.cluster.ClusterError: {tmp_path / 'noguard.py'}, line 4: an embedded cluster "
                    "started from a script's top-level code: put the script's code under `if __name__ == "
                    "\"__main__\":` (the embedded cluster's worker processes are started with 'spawn' and import the "
                    "main script again, running its top-level code once more)")
    assert proc.stderr.count("Traceback") == 1  # one process: no worker was started
    # the same scan under the guard (in a function called from it) runs, and resumes the catalog left behind
    guarded = "def main():\n    " + scan_call.replace("\n", "\n    ") + "\n\nif __name__ == '__main__':\n    main()"
    proc = _script(tmp_path, "guard.py", guarded)
    assert proc.returncode == 0, proc.stderr
    assert "scanned 1" in proc.stdout


# -- item 7: a full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs) to fill: mounting needs root and CAP_SYS_ADMIN."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill here ({proc.stderr.strip() or proc.returncode}); the "
                    "RLIMIT_FSIZE test covers the same path with EFBIG")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` up to about `leave` free bytes with one file; remove it to free the space again."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush on close
        try:
            f.write(b"\0" * max(0, free - leave))
            if not leave:
                while True:  # up to the last byte
                    f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def _leftovers(catalog: Path) -> list[str]:
    return sorted(str(p.relative_to(catalog)) for p in catalog.rglob(".tmp-*"))


def _table(n: int, start: int = 0) -> Any:
    """`files` rows of `n` made-up files (what extract_batch returns, for sink-level tests)."""
    from metaextract_dask.extract import error_tables
    from metaextract_dask.discover import FileEntry

    entries = [FileEntry(path=f"/data/f{i:05d}.bin", size=i, mtime_ns=1_700_000_000_000_000_000 + i)
               for i in range(start, start + n)]
    return error_tables(entries, "OSError", "made up " * 20)


def test_full_disk_in_the_sink_keeps_the_last_commit(small_disk: Path) -> None:
    import json

    from metaextract_dask.sinks import CatalogFullError, ParquetSink

    out = small_disk / "cat"
    with ParquetSink(out) as sink:
        sink.write_batch(_table(10))
        before = json.loads((out / "_manifest.json").read_text())
        filler = _fill(small_disk)
        with pytest.raises(CatalogFullError, match="No space left on device while writing the catalog") as info:
            sink.write_batch(_table(3000, 10))
        assert info.value.errno == 28
        assert json.loads((out / "_manifest.json").read_text()) == before  # the commit record is intact
        assert sorted(p.name for p in (out / "files").iterdir()) == ["part-000000.parquet"]
        assert _leftovers(out) == [] and len(sink.manifest["batches"]) == 1
        filler.unlink()
        sink.write_batch(_table(5, 10))  # the same sink goes on once there is space again
        sink.finish(set())
    from metaextract_dask import open_catalog

    assert len(open_catalog(out).to_pandas("files")) == 15


def test_disk_full_when_the_catalog_is_created_then_resumed(small_disk: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.bin").write_bytes(b"x" * i)
    out = small_disk / "cat"
    filler = _fill(small_disk)
    proc = cli("scan", str(data), "-o", str(out), "--workers", "1", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"metaextract-dask: error: No space left on device while writing the catalog {out}: what was committed is "
        "kept; free some space and run the scan again to resume it"]
    assert _leftovers(out) == [] and not (out / "_manifest.json").exists()
    filler.unlink()
    proc = cli("scan", str(data), "-o", str(out), "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "scanned 3 files" in proc.stdout and "3 read" in proc.stdout


def test_disk_full_during_a_scan_then_resumed(small_disk: Path, tmp_path: Path) -> None:
    import json

    data = tmp_path / "d"
    data.mkdir()
    for i in range(60):
        (data / f"{i:02d}.bin").write_bytes(b"x" * i)
    out = small_disk / "cat"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scan:\n  batch-max-files: 1\n  batch-min-files: 1\n  commit-interval: 0\n")  # a commit per task
    filler = _fill(small_disk, leave=96 * 1024)  # a few batches' parts and manifests fit, not 60
    proc = cli("--config", str(cfg), "scan", str(data), "-o", str(out), "--workers", "1", "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # after the dashboard link (and distributed's note when port 8787 is taken): one line, no traceback
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"metaextract-dask: error: No space left on device while writing the catalog {out}: what was committed is "
        "kept; free some space and run the scan again to resume it")
    manifest = json.loads((out / "_manifest.json").read_text())
    committed = sum(b["rows"].get("files", 0) for b in manifest["batches"])
    assert 0 < committed < 60 and not manifest["complete"]
    listed = {b["parts"]["files"] for b in manifest["batches"]}
    assert {p.name for p in (out / "files").iterdir()} == listed  # nothing half-written or unlisted
    assert _leftovers(out) == []
    filler.unlink()
    proc = cli("--config", str(cfg), "scan", str(data), "-o", str(out), "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    # the batches committed before the disk filled are kept (a first scan's batches are visible at once)
    assert f"{60 - committed} read" in proc.stdout and f"{committed} unchanged" in proc.stdout
    from metaextract_dask import open_catalog

    files = open_catalog(out).to_pandas("files")
    assert len(files) == 60 and files["path"].is_unique and (files["status"] == "ok").all()


def test_file_size_limit_is_handled_like_a_full_disk(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (EFBIG): no mount needed, the same one-line error and a directory the next scan accepts."""
    import resource

    (tmp_path / "empty").mkdir()
    out = tmp_path / "cat"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))  # the first manifest is larger

    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([*EXE, "scan", str(tmp_path / "empty"), "-o", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=env, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"metaextract-dask: error: File too large while writing the catalog {out}: what was committed is kept; "
        "free some space and run the scan again to resume it"]
    assert _leftovers(out) == [] and not (out / "_manifest.json").exists()
    proc = cli("scan", str(tmp_path / "empty"), "-o", str(out), "--no-progress")
    assert proc.returncode == 0 and "scanned 0 files" in proc.stdout, proc.stderr


def test_leftovers_of_an_unfinished_creation_do_not_block_the_next_scan(tmp_path: Path) -> None:
    """What older versions left when the disk filled before the first manifest: temporaries, empty tables."""
    from metaextract_dask.sinks import CatalogError, ParquetSink

    out = tmp_path / "cat"
    (out / "files").mkdir(parents=True)
    (out / "arrays").mkdir()
    (out / ".lock").write_bytes(b"")
    (out / ".tmp-k3j_x9q2").write_bytes(b'{"schema_ver')
    (out / "arrays" / ".tmp-part-000000.parquet").write_bytes(b"PAR1")
    with ParquetSink(out) as sink:
        sink.finish(set())
    assert _leftovers(out) == [] and (out / "_manifest.json").exists()
    # someone else's files are never taken for ours
    other = tmp_path / "other"
    other.mkdir()
    (other / ".tmp-notes.txt").write_text("mine")
    with pytest.raises(CatalogError, match="not empty and holds no catalog"):
        ParquetSink(other)
    assert (other / ".tmp-notes.txt").read_text() == "mine"


# -- item 13: catalog permissions -------------------------------------------------------------------------------


def _modes(catalog: Path) -> dict[str, str]:
    out = {".": oct(catalog.stat().st_mode & 0o777)}
    for p in sorted(catalog.rglob("*")):
        out[str(p.relative_to(catalog))] = oct(p.stat().st_mode & 0o777)
    return out


def _small_catalog(out: Path) -> None:
    from metaextract_dask.sinks import ParquetSink

    with ParquetSink(out) as sink:
        sink.write_batch(_table(4))
        sink.finish(set())


def test_catalog_files_are_private_whatever_the_umask(tmp_path: Path, catalog: Any) -> None:
    old = os.umask(0o022)  # the usual umask: new files 0644, readable by every local user
    try:
        _small_catalog(tmp_path / "cat")
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "cat")
    assert {k: v for k, v in modes.items() if v != "0o600"} == {
        ".": "0o700", **{name: "0o700" for name in ("arrays", "dicom", "files", "hdus", "stats")}}
    assert modes["_manifest.json"] == modes[".lock"] == modes["files/part-000000.parquet"] == "0o600"
    # the catalog a real scan on the cluster wrote (DICOM names and birth dates inside) is the same
    scanned = _modes(Path(catalog.path))
    assert set(scanned.values()) == {"0o600", "0o700"}
    assert scanned["."] == scanned["dicom"] == "0o700" and scanned["_manifest.json"] == "0o600"
    assert all(v == "0o600" for k, v in scanned.items() if k.endswith(".parquet"))


def test_catalog_modes_are_configurable_and_made_consistent(tmp_path: Path) -> None:
    import dask.config

    out = tmp_path / "cat"
    _small_catalog(out)
    old = os.umask(0o077)  # a configured mode wins over a stricter umask too
    try:
        with dask.config.set({"metaextract.catalog.file-mode": "0640", "metaextract.catalog.dir-mode": "0750"}):
            from metaextract_dask.sinks import ParquetSink

            with ParquetSink(out) as sink:  # continuing the catalog: what is there gets the new modes as well
                sink.write_batch(_table(2, 100))
                sink.finish(set())
    finally:
        os.umask(old)
    modes = _modes(out)
    assert set(modes.values()) == {"0o640", "0o750"}
    assert modes["."] == modes["files"] == "0o750"
    assert modes["files/part-000000.parquet"] == modes["_manifest.json"] == modes[".lock"] == "0o640"


_AS_NOBODY = """
import contextlib, io, os, sys
from metaextract_dask import cli
with contextlib.redirect_stdout(io.StringIO()):  # import all that `info` needs while the interpreter may
    assert cli.main(["info", sys.argv[1]]) == 0
try:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
except PermissionError:
    sys.exit(77)  # no CAP_SETUID here
try:
    open(sys.argv[3], "rb").close()
    print("part: readable")
except PermissionError:
    print("part: denied")
sys.exit(cli.main(["info", sys.argv[2]]))
"""


def _info_as_nobody(warm: Path, catalog: Path) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to become the unprivileged user 'nobody' (root itself reads everything)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _AS_NOBODY, str(warm), str(catalog),
                           str(catalog / "files" / "part-000000.parquet")],
                          capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode == 77:
        pytest.skip("this machine does not let root become 'nobody' (setuid refused)")
    return proc


def test_another_user_cannot_read_a_catalog_and_info_says_so(tmp_path: Path) -> None:
    import shutil
    import tempfile

    import dask.config

    base = Path(tempfile.mkdtemp(prefix="mx-perm-", dir="/tmp"))  # pytest's tmp_path is 0700: nobody can't pass
    try:
        base.chmod(0o755)
        warm = tmp_path / "warm"
        _small_catalog(warm)
        private = base / "private"
        _small_catalog(private)
        proc = _info_as_nobody(warm, private)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stdout.strip() == "part: denied"
        assert proc.stderr.strip() == (f"metaextract-dask: error: cannot read the catalog {private}: permission denied "
                                       "(the catalog belongs to root, mode 0700; see metaextract.catalog.file-mode "
                                       "/ dir-mode)")
        # what older versions wrote: parts 0644 (the umask), the manifest 0600 -> a traceback in `info`
        for p in private.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        private.chmod(0o755)
        (private / "_manifest.json").chmod(0o600)
        proc = _info_as_nobody(warm, private)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == (f"metaextract-dask: error: cannot read the catalog {private}: permission denied "
                                       "(the catalog belongs to root, mode 0755; see metaextract.catalog.file-mode "
                                       "/ dir-mode)")
        # shared on purpose: modes for everyone
        shared = base / "shared"
        with dask.config.set({"metaextract.catalog.file-mode": "0644", "metaextract.catalog.dir-mode": "0755"}):
            _small_catalog(shared)
        proc = _info_as_nobody(warm, shared)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("part: readable\ncatalog ") and "4 files" in proc.stdout
    finally:
        shutil.rmtree(base)
