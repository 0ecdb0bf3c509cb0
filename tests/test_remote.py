"""Remote sources against a real HTTP server on loopback (Range, listings, latency, injected faults).

The server (metaextract_dask.httptest) serves the generated sample tree; scans run on the session's real
2-process LocalCluster. What the catalog says is compared with the local scan of the same files, and what
was fetched with the server's own counters.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pandas as pd
import pytest

from metaextract_dask import scan
from metaextract_dask.discover import discover
from metaextract_dask.extract import extract_batch
from metaextract_dask.httptest import HTTPTestServer
from metaextract_dask.remote import MissingFilesystemError, redact, redact_text

# columns that differ between a local and a remote scan of the same bytes by nature
_VOLATILE = ["path", "mtime", "read_seconds", "remote_version", "attempts", "warnings"]


@pytest.fixture(scope="module")
def server(sample_tree: tuple[Path, dict[str, Any]]) -> Any:
    root, _ = sample_tree
    with HTTPTestServer(root) as srv:
        yield srv


@pytest.fixture()
def cache(tmp_path: Path) -> Any:
    """A fresh remote cache for this test (travels to the workers with the scan's settings)."""
    with dask.config.set({"metaextract.remote.cache-dir": str(tmp_path / "cache")}):
        yield tmp_path / "cache"


def _rel(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    df = df.copy()
    df["path"] = [p[len(prefix):].lstrip("/") for p in df["path"]]
    return df


def _table(cat: Any, name: str, prefix: str) -> pd.DataFrame:
    df = _rel(cat.to_pandas(name), prefix)
    keys = ["path", "name"] if name in ("arrays", "stats") else ["path", "index"] if name == "hdus" else ["path"]
    return df.sort_values(keys).reset_index(drop=True)


def _assert_same_rows(remote_cat: Any, local_cat: Any, url: str, root: str) -> None:
    for name in ("files", "arrays", "hdus", "dicom"):
        a = _table(remote_cat, name, url).drop(columns=[c for c in _VOLATILE if c != "path"], errors="ignore")
        b = _table(local_cat, name, root).drop(columns=[c for c in _VOLATILE if c != "path"], errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)


def test_remote_scan_equals_local_scan(server: HTTPTestServer, catalog: Any, client: Any, cache: Path,
                                       sample_tree: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, manifest = sample_tree
    server.reset_counters()
    with dask.config.set({"metaextract.scan.batch-min-files": 2, "metaextract.scan.batch-max-files": 4}):
        cat = scan([server.url + "/"], tmp_path / "remote", client=client)
    files = cat.to_pandas("files")
    assert len(files) == len(catalog.to_pandas("files")) == len(manifest["files"])
    assert all(p.startswith(server.url + "/") for p in files["path"])
    # every file row carries the version the server gave (ETag), Zarr stores (many objects) excepted
    plain = files[files["format"] != "zarr"]
    assert plain["remote_version"].notna().all() and plain["remote_version"].str.startswith('"').all()
    _assert_same_rows(cat, catalog, server.url, str(root))
    # small files: one request each, the ranged GET that sizes the file and brings all of it (no HEAD; the
    # empty file's 416 answer is followed by a HEAD for its version)
    rels = [p[len(server.url) + 1:] for p in plain["path"]]
    per_file = [server.requests_by_path[r] for r in rels]
    assert sum(per_file) <= len(rels) + 1 and max(per_file) <= 2, dict(zip(rels, per_file))

    # a second scan of the unchanged files (a new catalog, the same cache) fetches no file content again
    server.reset_counters()
    cat2 = scan([server.url + "/"], tmp_path / "again", client=client)
    fetched = {p: n for p, n in server.by_path.items() if p and not p.endswith(("/", ".metaextract-ignore"))}
    assert fetched == {}, fetched  # listings and ignore files only (HEADs carry no body)
    assert len(cat2.to_pandas("files")) == len(files)

    # an incremental re-scan of the same catalog reads nothing; a changed file (new ETag) is read again
    again = scan([server.url + "/"], tmp_path / "remote", client=client)
    assert again.scan_summary["read"] == 0 and again.scan_summary["unchanged"] == len(files)


def test_incremental_rescan_sees_a_changed_remote_file(tree: Path, client: Any, cache: Path, tmp_path: Path) -> None:
    with HTTPTestServer(tree) as srv:
        out = tmp_path / "cat"
        first = scan([srv.url + "/netcdf/"], out, client=client)
        assert first.scan_summary["read"] == 2
        target = tree / "netcdf" / "stations_classic.nc"
        data = target.read_bytes()
        target.write_bytes(data)  # same bytes, new mtime: a new ETag and Last-Modified
        os.utime(target, ns=(time.time_ns() + 5 * 10**9, time.time_ns() + 5 * 10**9))
        second = scan([srv.url + "/netcdf/"], out, client=client)
        assert second.scan_summary["read"] == 1 and second.scan_summary["unchanged"] == 1
        (tree / "netcdf" / "climate_cf.nc").unlink()
        third = scan([srv.url + "/netcdf/"], out, client=client)
        assert third.scan_summary["removed"] == 1
        assert list(third.to_pandas("files")["path"]) == [srv.url + "/netcdf/stations_classic.nc"]


def _big_tree(root: Path) -> dict[str, int]:
    """The medium preset's large-file generators (HDF5 cube, Zarr v3) at a tenth of their size, plus a large
    netCDF-4 file (groups, CF attributes, an unlimited dimension) and a large FITS file."""
    import netCDF4
    from astropy.io import fits

    from metaextract_dask.sample import _write_hdf5_big, _write_zarr_big

    _write_hdf5_big(root, "big/cube.h5", 0, 0.1)
    _write_zarr_big(root, "big/ssh.zarr", 0, 0.1)
    with netCDF4.Dataset(root / "big" / "model.nc", "w") as ds:
        ds.title = "big netCDF-4"
        ds.createDimension("time", None)
        ds.createDimension("y", 500)
        ds.createDimension("x", 1000)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        g = ds.createGroup("model")
        g.source = "synthetic"
        v = g.createVariable("tas", "f4", ("time", "y", "x"), chunksizes=(1, 500, 1000), fill_value=-999.0)
        v.units = "K"
        v.long_name = "air temperature"
        for i in range(16):
            t[i] = i
            v[i] = np.full((500, 1000), 280 + i, dtype=np.float32)
        w = ds.createVariable("flag", "i1", ("y",))
        w[:] = 1
    hdus = [fits.PrimaryHDU(np.arange(1500 * 1500, dtype=np.float32).reshape(1500, 1500))]
    hdus[0].header["OBJECT"] = "big"
    ext = fits.ImageHDU(np.ones((1000, 1000), dtype=np.int16), name="SCI")
    ext.header["EXPTIME"] = 30.0
    hdus.append(ext)
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(10.0))]))
    fits.HDUList(hdus).writeto(root / "big" / "image.fits")
    return {p.name: p.stat().st_size for p in (root / "big").iterdir() if p.is_file()}


@pytest.mark.slow
def test_metadata_scan_of_large_files_fetches_a_small_fraction(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "data"
    sizes = _big_tree(root)
    local = extract_batch(discover([root]))
    with HTTPTestServer(root) as srv, dask.config.set({"metaextract.remote.block-size": "1MiB",
                                                        "metaextract.remote.whole-file-bytes": "1MiB"}):
        entries = discover([srv.url + "/"])
        srv.reset_counters()
        remote = extract_batch(entries)
        served = dict(srv.by_path)
        requests = dict(srv.requests_by_path)
    for name in ("files", "arrays", "hdus"):
        a = remote[name].to_pandas().drop(columns=_VOLATILE, errors="ignore")
        b = local[name].to_pandas().drop(columns=_VOLATILE, errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)
    assert (remote["files"].to_pandas()["status"] == "ok").all()
    for name, size in sizes.items():
        got = served.get(f"big/{name}", 0)
        assert size > 10 * 2**20
        # metadata only: a small fraction of the file. A FITS file's headers sit between its data units:
        # one block per header (three HDUs here, each header in another 1 MiB block).
        limit = 3 * 2**20 if name.endswith(".fits") else 0.1 * size
        assert got <= limit and got < 0.25 * size, (name, got, size)
        assert requests[f"big/{name}"] <= 8, (name, requests)  # block-cached: a handful of requests
    chunks = [p for p in served if p.startswith("big/ssh.zarr/") and "/c/" in p]
    assert chunks == []  # a Zarr store's chunks are never fetched for metadata


def test_faults_become_error_rows_after_retries_and_the_scan_completes(
        sample_tree: tuple[Path, dict[str, Any]], client: Any, cache: Path, tmp_path: Path) -> None:
    root, manifest = sample_tree
    settings = {"metaextract.remote.retries": 2, "metaextract.remote.retry-backoff": 0.01,
                "metaextract.remote.request-timeout": 1, "metaextract.scan.retries": 1,
                "metaextract.scan.retry-backoff": 0.01}
    with HTTPTestServer(root, latency=0.005) as srv, dask.config.set(settings):
        entries = discover([srv.url + "/"])  # listed while the server is healthy
        srv.add_fault("hdf5/experiment.h5", ["500", "reset"])  # recovers on the third request
        srv.add_fault("fits/field_image.fits", ["slow:3"])  # past the request timeout once
        srv.add_fault("netcdf/climate_cf.nc", ["503"], repeat=True)  # never recovers
        srv.add_fault("dicom/mr_brain.dcm", ["404"], repeat=True)  # gone since it was listed
        srv.add_fault("netcdf/stations_classic.nc", ["429", "429"])  # rate limited, then fine
        with dask.config.set({"metaextract.scan.batch-min-files": 4}):
            cat = scan([srv.url + "/"], tmp_path / "cat", client=client)
        fetched_h5 = srv.requests_by_path["hdf5/experiment.h5"]
    files = _rel(cat.to_pandas("files"), srv.url).set_index("path")
    assert len(files) == len(entries) == len(manifest["files"])  # nothing lost
    ok = files[files["status"] == "ok"]
    assert {"hdf5/experiment.h5", "fits/field_image.fits", "netcdf/stations_classic.nc"} <= set(ok.index)
    assert fetched_h5 >= 3  # two faults, then the answer
    bad = files.loc["netcdf/climate_cf.nc"]
    assert bad["status"] == "error" and bad["format"] == "unknown"
    assert "HTTP 503" in bad["error_message"] and "tried 3 times" in bad["error_message"]
    assert bad["attempts"] == 2  # the scan's own retry of a transient failure, after the request retries
    gone = files.loc["dicom/mr_brain.dcm"]
    assert gone["status"] == "error" and gone["error_type"] == "FileNotFoundError" and gone["attempts"] == 1
    errors_before = sum(1 for e in manifest["files"] if e["status"] == "error")  # the sample's own bad files
    assert cat.scan_summary["errors"] == errors_before + 2


def test_unreachable_server_is_an_error_row(client: Any, cache: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"metaextract.remote.retries": 1, "metaextract.remote.retry-backoff": 0.01,
                          "metaextract.scan.retries": 0}):
        cat = scan([f"http://127.0.0.1:{port}/data/a.nc", f"http://127.0.0.1:{port}/dir/"], tmp_path / "cat",
                   client=client)
    files = cat.to_pandas("files").set_index("path")
    a = files.loc[f"http://127.0.0.1:{port}/data/a.nc"]
    assert a["status"] == "error" and "tried 2 times" in a["error_message"]
    d = files.loc[f"http://127.0.0.1:{port}/dir"]
    assert d["format"] == "directory" and d["status"] == "error"


def test_credentials_never_reach_the_catalog(sample_tree: tuple[Path, dict[str, Any]], client: Any, cache: Path,
                                             tmp_path: Path) -> None:
    root, _ = sample_tree
    with HTTPTestServer(root) as srv:
        host = srv.url.split("://", 1)[1]
        secret = "Sup3rS3cret"
        urls = [f"http://alice:{secret}@{host}/hdf5/experiment.h5?X-Amz-Signature={secret}&X-Amz-Credential="
                f"{secret}&X-Amz-Security-Token={secret}&versionId=7",
                f"http://{host}/netcdf/missing.nc?sig={secret}&token={secret}",
                f"http://{host}/netcdf/stations_classic.nc?Signature={secret}&AWSAccessKeyId={secret}"]
        srv.add_fault("netcdf/stations_classic.nc", ["500"], repeat=True)
        with dask.config.set({"metaextract.remote.retries": 0, "metaextract.scan.retries": 0}):
            with pytest.raises(FileNotFoundError) as info:
                scan(urls, tmp_path / "cat", client=client)
            assert secret not in str(info.value)
            cat = scan([urls[0], urls[2]], tmp_path / "cat", client=client)
    files = cat.to_pandas("files").set_index("path")
    assert set(files.index) == {f"http://{host}/hdf5/experiment.h5?versionId=7",
                                f"http://{host}/netcdf/stations_classic.nc"}
    assert files.loc[f"http://{host}/hdf5/experiment.h5?versionId=7", "status"] == "ok"
    assert "HTTP 500" in files.loc[f"http://{host}/netcdf/stations_classic.nc", "error_message"]
    for name in cat.tables:
        text = cat.to_pandas(name).astype(str).to_csv()
        assert secret not in text and "alice" not in text, name
    for dirpath, _dirs, names in os.walk(tmp_path / "cat"):
        for n in names:
            if n.endswith(".json"):
                assert secret not in (Path(dirpath) / n).read_text()
    assert not any(secret in p.name for p in cache.rglob("*"))
    for p in cache.rglob("*.json"):
        assert secret not in p.read_text()


def test_redaction_rules() -> None:
    assert redact("https://u:p@h/a?Signature=x&sig=y&foo=1") == "https://h/a?foo=1"
    assert redact("s3://bucket/key") == "s3://bucket/key"
    assert redact_text("failed: GET https://k:s@h/x?token=abc (500)") == "failed: GET https://h/x (500)"


def test_globs_files_and_file_urls(server: HTTPTestServer, sample_tree: tuple[Path, dict[str, Any]],
                                   cache: Path) -> None:
    root, _ = sample_tree
    found = discover([server.url + "/netcdf/*.nc", server.url + "/fits/field_image.fits",
                      "file://" + str(root / "hdf5" / "experiment.h5")])
    assert [e.catalog_path.rsplit("/", 1)[-1] for e in found] == ["climate_cf.nc", "stations_classic.nc",
                                                                 "field_image.fits", "experiment.h5"]
    assert found[0].size == (root / "netcdf" / "climate_cf.nc").stat().st_size
    assert found[-1].path == str(root / "hdf5" / "experiment.h5") and found[-1].version is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover([server.url + "/no/such.nc"])


def test_memory_urls(sample_tree: tuple[Path, dict[str, Any]], cache: Path) -> None:
    import fsspec

    root, _ = sample_tree
    fs = fsspec.filesystem("memory")
    for rel in ("hdf5/experiment.h5", "fits/field_image.fits"):
        fs.pipe(f"/mx-test/{rel}", (root / rel).read_bytes())
    try:
        entries = discover(["memory://mx-test/"])
        tables = extract_batch(entries)
        local = extract_batch(discover([root / "hdf5" / "experiment.h5", root / "fits" / "field_image.fits"]))
    finally:
        fs.rm("/mx-test", recursive=True)
    files = tables["files"].to_pandas()
    assert list(files["path"]) == ["memory://mx-test/fits/field_image.fits", "memory://mx-test/hdf5/experiment.h5"]
    assert list(files["format"]) == ["fits", "hdf5"] and (files["status"] == "ok").all()
    a = tables["arrays"].to_pandas().drop(columns=["path"])
    b = local["arrays"].to_pandas().drop(columns=["path"])
    pd.testing.assert_frame_equal(a.sort_values("name").reset_index(drop=True),
                                  b.sort_values("name").reset_index(drop=True), check_dtype=False)


def test_a_missing_filesystem_package_is_named(tmp_path: Path) -> None:
    candidates = {"s3": "s3fs", "gs": "gcsfs", "abfs": "adlfs", "oci": "ocifs", "dropbox": "dropboxdrivefs"}
    protocol, package = next((p, m) for p, m in candidates.items() if importlib.util.find_spec(m) is None)
    with pytest.raises(MissingFilesystemError, match=f"pip install {package}"):
        scan([f"{protocol}://bucket/prefix/"], tmp_path / "cat")
    from metaextract_dask.cli import main

    assert main(["scan", f"{protocol}://bucket/prefix/", "-o", str(tmp_path / "cat2"), "--no-progress"]) == 2


def test_arrays_and_profiles_of_remote_files(server: HTTPTestServer, sample_tree: tuple[Path, dict[str, Any]],
                                             client: Any, cache: Path, tmp_path: Path) -> None:
    import metaextract_dask as mx
    from metaextract_dask.profiler import profile

    root, _ = sample_tree
    a = mx.open_array(server.url + "/netcdf/climate_cf.nc", "/tas")
    b = mx.open_array(root / "netcdf" / "climate_cf.nc", "/tas")
    np.testing.assert_array_equal(a.values, b.values)
    assert a.to_dataset(name="tas").identical(b.to_dataset(name="tas"))
    assert a.dims == b.dims and list(a.attrs) == list(b.attrs)
    import xarray as xr

    ds = xr.open_dataset(server.url + "/netcdf/climate_cf.nc", engine="metaextract", chunks={})
    assert ds["tas"].identical(a.drop_vars([c for c in a.coords if c not in ds["tas"].coords]))
    cat = scan([server.url + "/hdf5/", server.url + "/fits/"], tmp_path / "cat", client=client)
    result = profile(cat, client=client)
    stats = _rel(result, server.url).set_index(["path", "name"]) if "path" in result else None
    assert stats is not None and (stats["status"] == "ok").any()
    import h5py

    with h5py.File(root / "hdf5" / "experiment.h5") as f:
        signal = f["/timeseries/signal"][()]
    row = stats.loc[("hdf5/experiment.h5", "/timeseries/signal")]
    assert row["status"] == "ok" and row["count"] == signal.size
    assert row["min"] == pytest.approx(float(np.nanmin(signal))) and row["max"] == pytest.approx(float(np.nanmax(signal)))


def test_remote_config_is_validated() -> None:
    from metaextract_dask import config

    with pytest.raises(ValueError, match="remote.block-size"):
        config.validate({"remote": {"block-size": 100}})
    with pytest.raises(ValueError, match="remote.concurency"):
        config.validate({"remote": {"concurency": 4}})
    config.validate({"remote": {"block-size": "4MiB", "cache": False}})
