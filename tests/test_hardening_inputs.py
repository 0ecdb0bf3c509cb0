"""Hardening of the scan's inputs: odd file names, special files, unlisted directories, the catalog inside
its own tree, hashing under the file limits, library log records in ``warnings``.

Real files (h5py, zarr, astropy write them), real FIFOs and sockets, a real LocalCluster; the unreadable
directory is made so by the kernel (a scan run as an unprivileged user in a forked child process).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pytest

from helpers import none
from metaextract_dask import open_catalog, scan
from metaextract_dask.discover import discover
from metaextract_dask.extract import NON_UTF8_WARNING, extract_batch, hash_batch

BAD = os.fsdecode(b"bad\xff.h5")  # a name that is not UTF-8 (Latin-1 "ÿ"), as the OS hands it to Python


def files_by_name(cat: Any) -> dict[str, dict[str, Any]]:
    return {os.path.basename(r["path"]): r for r in cat.to_pandas("files").to_dict("records")}


# -- item 2: file names that are not UTF-8 ---------------------------------------------------------------


def test_encode_decode_path_round_trip() -> None:
    import codecs

    from metaextract_dask.discover import decode_path, encode_path

    for same in ["/data/a b/ü.h5", "100%.h5", "x%FFy"]:
        assert encode_path(same) is same  # UTF-8 without a backslash: the path itself
    assert encode_path(BAD) == r"bad\xff.h5"
    assert encode_path(b"bad\xff.h5") == r"bad\xff.h5"
    assert encode_path("a\\b") == "a\\\\b"  # the escape character itself is escaped
    for name in ["/data/a b/ü.h5", BAD, "100%.h5", "a\\b", "a\\xff", os.fsdecode(b"\\\xfe\xff/\\x/\\"), "\\"]:
        text = encode_path(name)
        text.encode("utf-8")  # storable
        assert decode_path(text) == name, (name, text)
        assert codecs.escape_decode(text.encode())[0] == os.fsencode(name)  # any bytes-literal decoder


def test_non_utf8_name_is_catalogued_read_and_unchanged_on_rescan(sample_tree: Any, client: Any,
                                                                   tmp_path: Path) -> None:
    from metaextract_dask.discover import decode_path

    root, _ = sample_tree
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(root / "hdf5" / "experiment.h5", tree / "experiment.h5")
    shutil.copy(root / "hdf5" / "experiment.h5", os.path.join(tree, BAD))
    shutil.copy(root / "hdf5" / "experiment.h5", tree / "back\\slash.h5")
    (tree / "zz.bin").write_bytes(b"after the bad name in listing order")

    cat = scan([tree], tmp_path / "cat", client=client)
    rows = files_by_name(cat)
    assert set(rows) == {"experiment.h5", r"bad\xff.h5", r"back\\slash.h5", "zz.bin"}
    good, bad, slash = rows["experiment.h5"], rows[r"bad\xff.h5"], rows[r"back\\slash.h5"]
    # the file is read through its real OS path
    assert (bad["status"], bad["format"], bad["n_arrays"]) == ("ok", "hdf5", good["n_arrays"])
    assert bad["attrs"] == good["attrs"] and bad["size_bytes"] == good["size_bytes"]
    assert list(bad["warnings"]) == [NON_UTF8_WARNING]
    assert none(good["warnings"]) is None and none(slash["warnings"]) is None and slash["status"] == "ok"
    assert decode_path(bad["path"]) == os.path.join(tree, BAD)
    assert decode_path(slash["path"]) == os.path.join(tree, "back\\slash.h5")
    assert good["path"] == str(tree / "experiment.h5")  # ordinary names are stored as they are
    arrays = cat.to_pandas("arrays")
    names = lambda p: sorted(arrays[arrays["path"] == p]["name"])  # noqa: E731
    assert names(bad["path"]) == names(good["path"]) and names(bad["path"])

    again = scan([tree], tmp_path / "cat", client=client)
    s = again.scan_summary
    assert (s["read"], s["unchanged"], s["removed"], s["files"]) == (0, 4, 0, 4)
    hashed = files_by_name(scan([tree], tmp_path / "cat", client=client, hash=True))  # no hashes yet: read
    assert hashed[r"bad\xff.h5"]["content_hash"] == hashed["experiment.h5"]["content_hash"]
    s = scan([tree], tmp_path / "cat", client=client, hash=True).scan_summary
    assert (s["read"], s["unchanged"], s["removed"]) == (0, 4, 0)


# -- item 6: special files ------------------------------------------------------------------------------


@pytest.fixture()
def special_tree(tmp_path: Path) -> Iterator[Path]:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.bin").write_bytes(b"regular")
    os.mkfifo(tree / "fifo")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tree / "sock"))
    os.symlink(tree / "a.bin", tree / "link.bin")
    os.symlink(tree / "nowhere", tree / "dangling")
    os.symlink("loop", tree / "loop")
    try:
        yield tree
    finally:
        sock.close()


def test_special_files_are_rows_never_opened(special_tree: Path, client: Any, tmp_path: Path) -> None:
    # a FIFO opened for reading would block this scan forever; --hash reads every byte of a regular file
    t0 = time.perf_counter()
    cat = scan([special_tree, "/dev/null"], tmp_path / "cat", client=client, hash=True, file_timeout=5)
    assert time.perf_counter() - t0 < 60
    rows = files_by_name(cat)
    kinds = {n: (r["format"], none(r["format_version"]), r["status"]) for n, r in rows.items()}
    assert kinds == {
        "a.bin": ("binary", None, "ok"),
        "fifo": ("special", "fifo", "skipped"),
        "sock": ("special", "socket", "skipped"),
        "link.bin": ("special", "symlink", "skipped"),  # follow-symlinks off: not followed
        "dangling": ("special", "symlink", "skipped"),
        "loop": ("special", "symlink", "skipped"),
        "null": ("special", "char-device", "skipped"),  # an explicit input is followed; a device is not read
    }
    assert json.loads(rows["link.bin"]["attrs"]) == {"kind": "symlink", "target": str(special_tree / "a.bin")}
    assert json.loads(rows["fifo"]["attrs"]) == {"kind": "fifo"}
    assert all(none(r["content_hash"]) is None for n, r in rows.items() if n != "a.bin")
    s = cat.scan_summary
    assert s["special"] == {"fifo": 1, "socket": 1, "symlink": 3, "char-device": 1}
    assert s["by_format"]["special"] == 6 and s["errors"] == 0
    assert (s["read"], s["recorded"]) == (1, 6)  # special files are recorded, not read
    from metaextract_dask.scan import ScanSummary

    assert "special files (not read): char-device 1, fifo 1, socket 1, symlink 3" in ScanSummary(s).format()

    # unchanged on a re-scan, with --hash too (never hashed), and no cluster is needed for them
    again = scan([special_tree, "/dev/null"], tmp_path / "cat", hash=True)
    assert (again.scan_summary["read"], again.scan_summary["recorded"], again.scan_summary["unchanged"]) == (0, 0, 7)

    with dask.config.set({"metaextract.scan.follow-symlinks": True}):
        found = {os.path.basename(e.path): e.kind for e in discover([special_tree])}
    assert found == {"a.bin": "", "fifo": "fifo", "sock": "socket", "link.bin": "", "dangling": "symlink-dangling",
                     "loop": "symlink-loop"}


def test_special_entries_given_to_extract_are_not_opened(special_tree: Path) -> None:
    files = extract_batch(discover([special_tree]))["files"].to_pylist()
    assert {os.path.basename(r["path"]): r["status"] for r in files} == {
        "a.bin": "ok", "fifo": "skipped", "sock": "skipped", "link.bin": "skipped", "dangling": "skipped",
        "loop": "skipped"}


# -- item 5: --hash under the file limits ---------------------------------------------------------------


def test_hash_obeys_file_timeout_and_never_opens_devices(tmp_path: Path) -> None:
    # /dev/zero: an endless read. An explicit input, no cluster needed (nothing is read).
    t0 = time.perf_counter()
    cat = scan(["/dev/zero"], tmp_path / "cat", hash=True, file_timeout=5)
    assert time.perf_counter() - t0 < 30
    row = cat.to_pandas("files").iloc[0]
    assert (row["format"], row["format_version"], row["status"]) == ("special", "char-device", "skipped")

    # a sparse 6 GiB file: hashing it takes several seconds, the limit is 1 s
    big = tmp_path / "sparse.bin"
    with open(big, "wb") as f:
        f.truncate(6 << 30)
    settings = {"file-timeout": 1, "hash": True}
    t0 = time.perf_counter()
    files = extract_batch(discover([big]), settings)["files"].to_pylist()
    assert time.perf_counter() - t0 < 4
    assert (files[0]["status"], files[0]["error_type"]) == ("error", "timeout")
    assert "hashing the content" in files[0]["error_message"] and files[0]["content_hash"] is None
    t0 = time.perf_counter()
    assert hash_batch(discover([big]), settings) == [None]  # the --hash re-scan's check, limited too
    assert time.perf_counter() - t0 < 4


def test_hash_of_zarr_store_with_a_fifo_inside(client: Any, tmp_path: Path) -> None:
    import zarr

    store = tmp_path / "data" / "s.zarr"
    z = zarr.open_group(str(store), mode="w")
    z.create_array("x", shape=(4,), dtype="i4")[:] = np.arange(4)
    os.mkfifo(store / "x" / "pipe")  # a FIFO inside the store: opening it blocks until a writer comes
    t0 = time.perf_counter()
    cat = scan([tmp_path / "data"], tmp_path / "cat", client=client, hash=True, file_timeout=10)
    row = cat.to_pandas("files").iloc[0]
    assert (row["format"], row["status"]) == ("zarr", "ok")
    assert isinstance(row["content_hash"], str) and len(row["content_hash"]) == 32
    s = scan([tmp_path / "data"], tmp_path / "cat", client=client, hash=True, file_timeout=10).scan_summary
    assert (s["read"], s["unchanged"]) == (0, 1)  # verified by hash, the FIFO not opened
    assert time.perf_counter() - t0 < 60


# -- item 8: the catalog inside the scanned tree --------------------------------------------------------


def test_catalog_inside_its_tree_is_not_scanned(client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(3):
        (tree / f"f{i}.bin").write_bytes(bytes([i]) * 10)
    monkeypatch.chdir(tmp_path)
    first = scan(["tree"], "tree/cat", client=client)  # relative paths
    assert first.scan_summary["files"] == 3
    again = scan(["tree"], "tree/cat", client=client)
    s = again.scan_summary
    assert (s["files"], s["read"], s["removed"]) == (3, 0, 0)
    # through a symlink to the catalog, and through a symlink to the tree
    os.symlink(tree / "cat", tmp_path / "catlink")
    os.symlink(tree, tmp_path / "treelink")
    s = scan([tree], tmp_path / "catlink", client=client).scan_summary
    assert (s["files"], s["read"]) == (3, 0)
    s = scan([tmp_path / "treelink"], "tree/cat", client=client).scan_summary
    assert s["files"] == 3  # the same files under another path: read, the old rows dropped
    with dask.config.set({"metaextract.scan.follow-symlinks": True}):
        s = scan([tree], tmp_path / "catlink", client=client).scan_summary
    assert s["files"] == 3
    paths = open_catalog(tree / "cat").to_pandas("files")["path"]
    assert not any("/cat/" in p for p in paths) and len(paths) == 3
    # an input inside the excluded catalog is left out too
    found = discover([tree / "cat" / "files", tree], exclude=[tmp_path / "catlink"])
    assert [os.path.basename(e.path) for e in found] == ["f0.bin", "f1.bin", "f2.bin"]


# -- item 4: a directory that cannot be listed ----------------------------------------------------------


def _as_nobody(fn: Any) -> dict[str, Any]:
    """Run `fn()` in a forked child as user `nobody` (root reads every directory); its JSON result."""
    import pwd

    if os.geteuid() != 0:
        return fn()
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    # Everything the scan imports lazily is imported before the fork: the child cannot read the venv.
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out = json.dumps(fn()).encode()
            os.write(w, out)
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"child_error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "child_error" not in result, result
    return result


def test_unlisted_directory_is_an_error_row_and_keeps_its_rows(client: Any) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mx-unlisted-"))  # outside pytest's root-only tmp tree
    try:
        os.chmod(base, 0o755)
        tree = base / "tree"
        (tree / "locked").mkdir(parents=True)
        (tree / "open").mkdir()
        (tree / "locked" / "f1.bin").write_bytes(b"one")
        (tree / "locked" / "f2.bin").write_bytes(b"two")
        (tree / "open" / "g.bin").write_bytes(b"three")
        cat = base / "cat"
        scan([tree], cat, client=client)
        if os.geteuid() == 0:  # the child scanning as nobody writes the catalog
            import pwd

            nobody = pwd.getpwnam("nobody")
            for p in [tree, *tree.rglob("*"), cat, *cat.rglob("*")]:
                os.chown(p, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
        os.chmod(tree / "locked", 0)  # even its owner cannot list it now

        def rescan() -> dict[str, Any]:
            c = scan([tree], cat)  # nothing to read: no cluster (the child could not start one)
            files = c.to_pandas("files")
            return {"summary": c.scan_summary,
                    "rows": {os.path.relpath(r["path"], tree): [r["format"], r["status"], r["error_type"],
                                                               r["error_message"]]
                             for r in files.to_dict("records")}}

        result = _as_nobody(rescan)
        rows, s = result["rows"], result["summary"]
        assert rows["locked"][:3] == ["directory", "error", "PermissionError"]
        assert "Permission denied" in rows["locked"][3]
        assert {"locked/f1.bin", "locked/f2.bin", "open/g.bin"} <= set(rows)  # kept, not deleted
        assert rows["locked/f1.bin"][:2] == ["binary", "ok"]
        assert (s["removed"], s["kept"], s["errors"]) == (0, 2, 1)
        assert s["error_types"] == {"PermissionError": 1}

        os.chmod(tree / "locked", 0o755)  # listable again: the error row goes, the files stay unchanged
        s = scan([tree], cat).scan_summary
        assert (s["read"], s["removed"], s["errors"], s["files"]) == (0, 1, 0, 3)
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(base)


# -- item 14: library log records in the warnings column ------------------------------------------------


def _truncated_fits(path: Path) -> Path:
    from astropy.io import fits

    fits.PrimaryHDU(np.arange(10000, dtype="f4").reshape(100, 100)).writeto(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 20000])  # header intact, data cut short
    return path


def test_truncated_fits_warning_reaches_the_row_on_a_fresh_worker(tmp_path: Path) -> None:
    from metaextract_dask.cluster import connect

    data = tmp_path / "data"
    data.mkdir()
    _truncated_fits(data / "a.fits")
    _truncated_fits(data / "b.fits")
    # a fresh worker process: astropy is first imported while a.fits is read (and then hooks warnings)
    with connect(n_workers=1, dashboard_address="127.0.0.1:0") as c:
        cat = scan([data], tmp_path / "cat", client=c)
    rows = files_by_name(cat)
    for name in ("a.fits", "b.fits"):
        assert rows[name]["status"] == "ok"
        assert any("AstropyUserWarning: File may have been truncated" in w for w in rows[name]["warnings"]), rows[name]
    assert list(rows["a.fits"]["warnings"]) == list(rows["b.fits"]["warnings"])


def test_library_log_records_reach_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import install_plugin

    from metaextract_dask import formats

    plug = install_plugin(tmp_path / "plugin", "logging_reader", {"logs": "logs_reader:LogsReader"}, {"logs_reader": '''
        import logging
        from metaextract_dask.formats.base import FormatReader, Records

        class LogsReader(FormatReader):
            name = "logs"
            priority = 1

            def sniff(self, head, path):
                return head.startswith(b"LOGS")

            def read(self, path):
                from astropy import log
                log.warning("astropy says %s", "hello")
                logging.getLogger("mylib.sub").error("a child logger")
                logging.getLogger("some.other.lib").warning("not captured")
                log.info("below the warning level")
                return Records(format="logs")
    '''})
    monkeypatch.syspath_prepend(str(plug))
    formats.get_readers.cache_clear()
    try:
        (tmp_path / "x.logs").write_bytes(b"LOGS")
        files = extract_batch(discover([tmp_path / "x.logs"]))["files"].to_pylist()
        assert files[0]["status"] == "ok"
        assert files[0]["warnings"] == ["astropy WARNING: astropy says hello"]
        with dask.config.set({"metaextract.scan.warning-loggers": ["astropy", "mylib"]}):
            files = extract_batch(discover([tmp_path / "x.logs"]))["files"].to_pylist()
        assert files[0]["warnings"] == ["astropy WARNING: astropy says hello", "mylib.sub ERROR: a child logger"]
        with dask.config.set({"metaextract.scan.warning-loggers": []}):
            assert extract_batch(discover([tmp_path / "x.logs"]))["files"].to_pylist()[0]["warnings"] is None
    finally:
        formats.get_readers.cache_clear()


def test_modes_of_special_files(tmp_path: Path) -> None:
    # block and character devices made with mknod where this machine allows it (root, CAP_MKNOD)
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("mknod not permitted here")
    assert [(os.path.basename(e.path), e.kind) for e in discover([tmp_path])] == [("null", "char-device")]
