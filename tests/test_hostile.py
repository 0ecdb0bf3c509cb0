"""Hostile and unlucky inputs handled by the format backends: sizes a file cannot hold, a Zarr store with one
broken array, huge attributes. Each reproduces a report first, then checks the fix with real files."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pyarrow as pa
import pytest

from helpers import loads, none


def _hostile_dicom(path: Path) -> None:
    """A 13 KB CT that claims 100,000 frames of 65535 x 65535 16-bit pixels."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100_000
    ds.save_as(path)


def _hostile_fits(path: Path) -> None:
    """A FITS header claiming a 10^6 x 10^6 float64 image, and no data."""
    from astropy.io import fits

    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -64
    header["NAXIS"] = 2
    header["NAXIS1"] = 1_000_000
    header["NAXIS2"] = 1_000_000
    path.write_bytes(header.tostring().encode("ascii"))


@pytest.fixture()
def hostile_tree(tmp_path: Path) -> Path:
    import h5py

    root = tmp_path / "data"
    root.mkdir()
    _hostile_dicom(root / "huge.dcm")
    _hostile_fits(root / "huge.fits")
    with h5py.File(root / "sparse.h5", "w") as f:  # legal: 8 PB declared, no chunk written
        f.create_dataset("void", shape=(10**6, 10**6, 1000), dtype="f8", chunks=(100, 100, 100))
        f["good"] = np.arange(1000, dtype=np.float32)
    return root


def test_declared_sizes_are_checked_before_any_graph(hostile_tree: Path, client: Any, tmp_path: Path) -> None:
    """profile used to hang in tokenize on the DICOM (3.7 GB client) and take 38 s on the FITS header: now
    both are error rows from their catalogued sizes, in milliseconds, and the good array is profiled."""
    from metaextract_dask import profile, scan

    cat = scan([hostile_tree], tmp_path / "cat", client=client)
    arrays = cat.to_pandas("arrays").set_index("name")
    assert arrays.loc["PixelData", "error"].startswith("truncated: the pixel module (100000x65535x65535)")
    assert arrays.loc["HDU0", "error"].startswith("truncated: the header (1000000x1000000 BITPIX -64)")
    t0 = time.perf_counter()
    stats = profile(cat, client=client, device="cpu").set_index("name")
    assert time.perf_counter() - t0 < 30
    assert stats.loc["PixelData", "status"] == "error" and stats.loc["PixelData", "error_type"] == "truncated"
    assert stats.loc["HDU0", "error_type"] == "truncated"
    assert stats.loc["/void", "error_type"] == "too_large" and "profile-max-chunks" in stats.loc["/void", "error_message"]
    good = stats.loc["/good"]
    assert good["status"] == "ok" and good["count"] == 1000 and good["max"] == 999.0


def test_hdf5_dataset_past_the_end_costs_only_itself(tmp_path: Path) -> None:
    """A contiguous dataset whose storage runs past the end of the file: libhdf5 refuses to open it (this
    used to fail the whole file's walk); the other datasets are catalogued."""
    import h5py

    from metaextract_dask.formats import get_backend

    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        f["small"] = np.arange(10, dtype="i4")
        f["big"] = np.arange(1_000_000, dtype="f8")  # contiguous, written after the small one
    data = bytearray(path.read_bytes())
    assert data[8] == 0  # superblock version 0: end-of-file address at byte 40, no checksum
    del data[len(data) - 4_000_000:]
    data[40:48] = len(data).to_bytes(8, "little")  # as a copy cut short and "repaired" would say
    path.write_bytes(bytes(data))
    rows = {r["name"]: r for r in get_backend("hdf5").read(str(path)).arrays}
    assert "file corruption" in rows["/big"]["error"] and rows["/big"]["kind"] == "dataset"
    assert rows["/small"].get("error") is None and rows["/small"]["shape"] == [10]
    assert get_backend("hdf5").list_arrays(str(path)) == ["/big", "/small"]


def test_zarr_store_with_one_corrupt_array_keeps_the_others(tmp_path: Path, client: Any) -> None:
    """A Zarr group with one child whose metadata is garbage was a whole-store error row."""
    import zarr

    from metaextract_dask import scan

    store = tmp_path / "data" / "ocean.zarr"
    g = zarr.open_group(store=str(store), mode="w", zarr_format=3)
    g.create_array("temp", shape=(4, 5), chunks=(2, 5), dtype="f4")[:] = 1.5
    g.create_group("sub").create_array("salt", shape=(3,), chunks=(3,), dtype="i2")[:] = [1, 2, 3]
    g.create_array("broken", shape=(2,), chunks=(2,), dtype="u1")
    (store / "broken" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array", "shape": "oops"}')
    g.create_array("garbage", shape=(2,), chunks=(2,), dtype="u1")
    (store / "garbage" / "zarr.json").write_text("{not json")
    cat = scan([tmp_path / "data"], tmp_path / "cat", client=client)
    files = cat.to_pandas("files")
    assert list(files["status"]) == ["ok"] and files["n_arrays"].iloc[0] == 4
    arrays = cat.to_pandas("arrays").set_index("name")
    assert set(arrays.index) == {"/temp", "/sub/salt", "/broken", "/garbage"}
    assert none(arrays.loc["/temp", "error"]) is None and list(arrays.loc["/temp", "shape"]) == [4, 5]
    assert list(arrays.loc["/sub/salt", "shape"]) == [3]
    assert isinstance(arrays.loc["/broken", "error"], str) and isinstance(arrays.loc["/garbage", "error"], str)
    assert "/sub" in loads(files["groups"].iloc[0])


def test_huge_attributes_are_capped_and_stored_once(tmp_path: Path) -> None:
    """A 32 MB HDF5 attribute became 77 MB of JSON, twice (files.attrs and groups)."""
    import h5py

    from metaextract_dask.discover import FileEntry
    from metaextract_dask.extract import extract_file

    path = tmp_path / "fat.h5"
    big = np.random.default_rng(0).random(4_000_000)  # 32 MB of float64
    with h5py.File(path, "w", libver="latest") as f:  # dense attribute storage holds large values
        f.attrs["calibration"] = big
        f.attrs["title"] = "fine"
        f.create_dataset("x", data=np.arange(3)).attrs["table"] = np.arange(100_000)
        f.create_dataset("y", data=np.arange(3)).attrs["note"] = "x" * 70_000
        f["y"].attrs["series"] = np.random.default_rng(1).random(30_000)  # under the cheap bound, over once encoded
    entry = FileEntry(str(path), path.stat().st_size, 0)
    t0 = time.perf_counter()
    rows = extract_file(entry)
    assert time.perf_counter() - t0 < 5
    row = rows["files"][0]
    assert row["status"] == "ok"
    attrs = json.loads(row["attrs"])
    assert attrs["title"] == "fine" and attrs["calibration"].startswith("<omitted: more than 8000000 bytes")
    assert len(row["attrs"]) < 1000 and "attrs" not in json.loads(row["groups"])["/"]
    arrays = {r["name"]: json.loads(r["attrs"]) for r in rows["arrays"]}
    assert arrays["/x"]["table"] == "<omitted: more than 200000 bytes of JSON>"
    assert arrays["/y"]["note"] == "<omitted: more than 70000 bytes of JSON>"
    assert re.fullmatch(r"<omitted: \d{6} bytes of JSON>", arrays["/y"]["series"])
    with dask.config.set({"metaextract.scan.attr-json-max-bytes": None}):
        unlimited = json.loads(extract_file(entry)["arrays"][1]["attrs"])
    assert unlimited["note"] == "x" * 70_000


def test_non_utf8_named_file_is_profiled_and_opened(tmp_path: Path, client: Any) -> None:
    """The catalog stores the escaped name; profile and Catalog.open_array open the real OS path."""
    import h5py

    from metaextract_dask import decode_path, profile, scan

    data = tmp_path / "data"
    data.mkdir()
    raw = os.path.join(os.fsencode(data), b"bad\xff.h5")
    with h5py.File(raw, "w") as f:
        f["v"] = np.arange(12, dtype=np.int32)
    cat = scan([data], tmp_path / "cat", client=client)
    path = cat.to_pandas("files")["path"].iloc[0]
    assert path.endswith("bad\\xff.h5") and os.fsencode(decode_path(path)) == raw
    stats = profile(cat, client=client, device="cpu")
    assert list(stats["status"]) == ["ok"] and stats["max"].iloc[0] == 11
    assert int(cat.open_array(path, "/v").sum()) == 66


@pytest.mark.slow
def test_profile_commits_batch_by_batch_and_resumes_after_kill(tmp_path: Path, client: Any) -> None:
    """A profile killed with SIGKILL keeps the stats rows it committed (not visible yet); the next profile
    with the same settings computes only the rest, and the result equals an undisturbed profile."""
    import signal
    import subprocess
    import sys

    import h5py

    from metaextract_dask import profile, scan
    from metaextract_dask.sinks import read_manifest

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(150):
        with h5py.File(data / f"f{i:03d}.h5", "w") as f:
            f["a"] = rng.normal(size=(64, 64))
            f["b"] = rng.integers(0, 100, 500, dtype=np.int16)
    with dask.config.set({"metaextract.scan.batch-max-files": 50}):
        scan([data], tmp_path / "cat", client=client)
        scan([data], tmp_path / "ref", client=client)
    script = ("import dask, metaextract_dask as mx\n"
              "if __name__ == '__main__':\n"
              "    with dask.config.set({'metaextract.profile-commit-rows': 8, 'metaextract.profile-batch': '40KiB'}):\n"
              f"        mx.profile({str(tmp_path / 'cat')!r}, device='cpu', n_workers=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            committed = len(read_manifest(str(tmp_path / "cat")).get("stats_pending", {}).get("parts", []))
        except (OSError, ValueError):
            committed = 0
        if committed >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = read_manifest(str(tmp_path / "cat"))
    kept = sum(1 for _ in manifest["stats_pending"]["parts"])
    visible = {b["parts"].get("stats") for b in manifest["batches"]}
    assert kept >= 3 and visible.isdisjoint(manifest["stats_pending"]["parts"])  # committed, not yet visible
    resumed = profile(tmp_path / "cat", client=client, device="cpu")
    reference = profile(tmp_path / "ref", client=client, device="cpu")
    info = read_manifest(str(tmp_path / "cat"))["tables"]["stats"]
    assert info["resumed"] >= 3 * 8 and "stats_pending" not in read_manifest(str(tmp_path / "cat"))
    cols = ["path", "name", "status", "count", "valid_count", "min", "max", "mean", "std", "hist_counts"]
    a = resumed[cols].sort_values(["path", "name"])
    b = reference[cols].sort_values(["path", "name"])
    assert len(a) == len(b) == 300
    assert a.drop(columns="hist_counts").reset_index(drop=True).equals(b.drop(columns="hist_counts").reset_index(drop=True))
    assert [list(x) for x in a["hist_counts"]] == [list(x) for x in b["hist_counts"]]


def test_a_scan_that_changes_the_catalog_drops_an_unfinished_profile(tmp_path: Path, client: Any) -> None:
    """Rows a killed profile committed describe the files as they were: a scan that re-reads files discards
    them, so a later profile cannot publish stale statistics."""
    import h5py

    from metaextract_dask import scan
    from metaextract_dask.sinks import ParquetSink, read_manifest
    from metaextract_dask.schema import SCHEMAS

    data = tmp_path / "data"
    data.mkdir()
    with h5py.File(data / "a.h5", "w") as f:
        f["v"] = np.arange(5)
    scan([data], tmp_path / "cat", client=client)
    settings = {"strategy": "full", "sample_fraction": None, "bins": 64, "device": "cpu"}
    with ParquetSink(tmp_path / "cat") as sink:
        sink.add_stats_pending(pa.Table.from_pylist([{"path": str(data / "a.h5"), "name": "/v", "status": "ok"}],
                                                    schema=SCHEMAS["stats"]), settings)
    part = read_manifest(str(tmp_path / "cat"))["stats_pending"]["parts"][0]
    with h5py.File(data / "a.h5", "w") as f:
        f["v"] = np.arange(50)
    scan([data], tmp_path / "cat", client=client)
    assert "stats_pending" not in read_manifest(str(tmp_path / "cat"))
    assert not (tmp_path / "cat" / "stats" / part).exists()
