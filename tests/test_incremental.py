"""Incremental and resumable scans: only new/changed files are read, vanished ones dropped, atomic commits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import assert_same_catalog, normalized
from metaextract_dask import CatalogError, open_catalog, scan
from metaextract_dask.sinks import ParquetSink


def test_unchanged_rescan_reads_nothing_and_starts_no_cluster(tree: Path, client: Any, tmp_path: Path) -> None:
    os.symlink(tree / "hdf5", tree / "link-to-hdf5")  # a special row: not followed
    os.mkfifo(tree / "a-fifo")
    first = scan([tree], tmp_path / "cat", client=client)
    before = normalized(first)
    # No client and no scheduler given: a re-scan with nothing to read must not start a cluster.
    again = scan([tree], tmp_path / "cat")
    s = again.scan_summary
    assert (s["read"], s["unchanged"], s["removed"], s["threads"], s["batches"]) == (0, s["files"], 0, 0, 0)
    after = normalized(again)
    for name in before:
        assert before[name].equals(after[name]), name
    # A new catalog's summary is counted as its rows are committed; this one's is read back from the catalog.
    counted = first.scan_summary
    assert counted["errors"] > 0 and counted["special"] == {"symlink": 1, "fifo": 1}
    for key in ("bytes", "by_format", "errors", "error_types", "error_examples", "special"):
        assert s[key] == counted[key], key
    files = first.to_pandas("files")
    assert counted["bytes"] == files["size_bytes"].sum() and counted["by_format"] == files["format"].value_counts().to_dict()
    assert counted["errors"] == (files["status"] == "error").sum()


def test_changed_new_and_removed_files(tree: Path, client: Any, tmp_path: Path) -> None:
    import h5py

    scan([tree], tmp_path / "cat", client=client)
    with h5py.File(tree / "hdf5" / "experiment.h5", "a") as f:  # changed: a new dataset
        f.create_dataset("/added/later", data=[1, 2, 3])
    (tree / "misfits" / "random.bin").unlink()  # removed
    shutil.copy(tree / "netcdf" / "stations_classic.nc", tree / "netcdf" / "copy.nc")  # new
    cat = scan([tree], tmp_path / "cat", client=client)
    s = cat.scan_summary
    assert (s["read"], s["removed"], s["unchanged"]) == (2, 1, s["files"] - 2)
    files = cat.to_pandas("files").set_index("path")
    assert files.index.is_unique
    assert str(tree / "misfits" / "random.bin") not in files.index
    assert files.loc[str(tree / "netcdf" / "copy.nc"), "format"] == "netcdf3"
    arrays = cat.to_pandas("arrays")
    h5 = arrays[arrays["path"] == str(tree / "hdf5" / "experiment.h5")]
    assert "/added/later" in set(h5["name"]) and h5["name"].is_unique
    # the result equals a fresh scan of the tree as it is now
    assert_same_catalog(cat, scan([tree], tmp_path / "fresh", client=client))
    # replaced parts are gone from disk; every part on disk is in the manifest
    on_disk = {os.path.join(t, f) for t in cat.tables for f in os.listdir(os.path.join(cat.path, t))}
    listed = {os.path.relpath(p, cat.path) for t in cat.tables for p in cat.parts(t)}
    assert on_disk == listed


def test_full_rescan_reads_everything(tree: Path, client: Any, tmp_path: Path) -> None:
    first = scan([tree], tmp_path / "cat", client=client)
    again = scan([tree], tmp_path / "cat", client=client, full=True)
    assert again.scan_summary["read"] == again.scan_summary["files"]
    assert_same_catalog(first, again)


def test_hash_detects_content_change_with_same_size_and_mtime(tree: Path, client: Any, tmp_path: Path) -> None:
    path = tree / "misfits" / "random.bin"
    cat = scan([tree], tmp_path / "cat", client=client, hash=True)
    hashes = cat.to_pandas("files").set_index("path")["content_hash"]
    assert hashes.notna().all() and hashes.str.len().eq(32).all()
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the hash can tell
    plain = scan([tree], tmp_path / "cat", client=client)  # without --hash the change is invisible
    assert plain.scan_summary["read"] == 0
    hashed = scan([tree], tmp_path / "cat", client=client, hash=True)
    assert hashed.scan_summary["read"] == 1
    new_hashes = hashed.to_pandas("files").set_index("path")["content_hash"]
    assert new_hashes[str(path)] != hashes[str(path)]
    assert (new_hashes.drop(str(path)) == hashes.drop(str(path))).all()


def test_retry_errors(tree: Path, client: Any, tmp_path: Path) -> None:
    scan([tree], tmp_path / "cat", client=client)
    again = scan([tree], tmp_path / "cat", client=client, retry_errors=True)
    assert again.scan_summary["read"] == 1  # the truncated HDF5 file, and only it
    assert again.scan_summary["errors"] == 1


def test_concurrent_scan_of_the_same_catalog_is_refused(tmp_path: Path) -> None:
    with ParquetSink(tmp_path / "cat"):
        with pytest.raises(CatalogError, match="another scan"):
            ParquetSink(tmp_path / "cat")
    ParquetSink(tmp_path / "cat").close()  # released


def test_orphan_parts_are_removed_and_never_read(tree: Path, client: Any, tmp_path: Path) -> None:
    cat = scan([tree], tmp_path / "cat", client=client)
    n = len(cat.to_pandas("files"))
    # a part renamed into place whose batch never reached the manifest (crash between the two)
    shutil.copy(cat.parts("files")[0], os.path.join(cat.path, "files", "part-999999.parquet"))
    assert len(open_catalog(cat.path).to_pandas("files")) == n  # readers follow the manifest
    again = scan([tree], tmp_path / "cat", client=client)
    assert not os.path.exists(os.path.join(cat.path, "files", "part-999999.parquet"))
    assert len(again.to_pandas("files")) == n
