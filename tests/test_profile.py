"""Content profiles: single pass, values equal the generator's, sampling, errors, memory, devices."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pytest

from helpers import assert_quantiles, assert_sketch_histogram, auto_device, none
from metaextract_dask import open_array, open_catalog, profile, scan
from metaextract_dask.stats import block_partial, finalize, merge_all


@pytest.fixture(scope="module")
def stats(catalog: Any, client: Any) -> Any:
    return profile(catalog, client=client)


def _manifest_stats(sample_tree: Any) -> dict[tuple[str, str], dict[str, Any]]:
    root, manifest = sample_tree
    return {(str(root / f["path"]), a["name"]): a for f in manifest["files"] for a in f.get("arrays", [])}


def test_every_numeric_array_profiled_with_the_generators_values(stats: Any, sample_tree: Any) -> None:
    expected = _manifest_stats(sample_tree)
    numeric = {k: v for k, v in expected.items() if v.get("stats")}
    ok = stats[stats["status"] == "ok"].set_index(["path", "name"])
    assert set(ok.index) == set(numeric)
    for key, arr in numeric.items():
        row, exp = ok.loc[key], arr["stats"]
        assert row["valid_count"] == exp["count"], key
        assert row["min"] == pytest.approx(exp["min"], rel=1e-6) and row["max"] == pytest.approx(exp["max"], rel=1e-6)
        assert row["mean"] == pytest.approx(exp["mean"], rel=1e-9, abs=1e-9), key
        # std against numpy on the same raw values (read back through h5py/netCDF4/... by open_array)
        raw = np.asarray(open_array(key[0], key[1], decode=False).values, dtype=np.float64).ravel()
        fill = arr["fill_value"]
        valid = raw[np.isfinite(raw) & ((raw != fill) if fill is not None else True)]
        assert row["std"] == pytest.approx(valid.std(), rel=1e-9, abs=1e-12), key
        assert row["count"] == raw.size and row["fill_count"] + row["valid_count"] + row["nan_count"] == raw.size
        hist = np.asarray(row["hist_counts"])
        assert hist.sum() + row["hist_underflow"] + row["hist_overflow"] == row["valid_count"], key
        if row["hist_exact"]:
            ref, _ = np.histogram(valid, bins=int(row["bins"]), range=(row["hist_min"], row["hist_max"]))
            np.testing.assert_array_equal(hist, ref, err_msg=str(key))
        else:  # float data without a valid range: from the sketch, over the data's own range, in the one pass
            assert (row["hist_range_source"], row["passes"]) == ("data (sketch)", 1), key
            assert (row["hist_min"], row["hist_max"]) == (row["min"], row["max"]) or row["min"] == row["max"], key
            assert_sketch_histogram(hist, valid, int(row["bins"]), row["hist_min"], row["hist_max"], key)
        assert_quantiles(row, valid, key)
        assert row["passes"] == 1, key
    skipped = stats[stats["status"] == "skipped"]
    assert set(skipped["name"]) == {"/events/triggers", "/log/messages", "HDU1"}


def test_histogram_ranges_come_from_metadata(stats: Any, sample_tree: Any) -> None:
    root, _ = sample_tree
    by = stats.set_index(["path", "name"])
    tas = by.loc[(str(root / "netcdf/climate_cf.nc"), "/tas")]
    assert (tas["hist_range_source"], tas["hist_min"], tas["hist_max"], tas["passes"]) == ("valid_range", 150, 350, 1)
    assert tas["fill_count"] == 7  # the cells the generator set to _FillValue
    psl = by.loc[(str(root / "netcdf/climate_cf.nc"), "/psl")]
    assert (psl["hist_range_source"], psl["hist_min"], psl["hist_max"]) == ("dtype", -32768, 32767)
    assert psl["phys_mean"] == pytest.approx(psl["mean"] * 0.01 + 1000.0)  # scale_factor / add_offset
    assert (tas["hist_exact"], psl["hist_exact"]) == (True, True)
    dark = by.loc[(str(root / "hdf5/experiment.h5"), "/instrument/detector/dark_current")]
    assert (dark["hist_range_source"], dark["passes"], dark["hist_exact"]) == ("data (sketch)", 1, False)
    assert (dark["hist_min"], dark["hist_max"]) == (dark["min"], dark["max"])
    assert (stats.loc[stats["status"] == "ok", "passes"] == 1).all()  # one pass for every array by default


def test_exact_histogram_setting_and_argument_take_a_second_pass(catalog: Any, client: Any, sample_tree: Any) -> None:
    """metaextract.profile.histogram: exact (or histogram="exact"): float data without a valid range binned
    exactly over its min..max in a second pass (hist_exact True, passes 2); the others unchanged."""
    root, _ = sample_tree
    with dask.config.set({"metaextract.profile.histogram": "exact"}):
        st = profile(catalog, client=client)
    by = st.set_index(["path", "name"])
    dark_key = (str(root / "hdf5/experiment.h5"), "/instrument/detector/dark_current")
    dark = by.loc[dark_key]
    assert (dark["hist_range_source"], dark["passes"], dark["hist_exact"]) == ("data (second pass)", 2, True)
    raw = np.asarray(open_array(*dark_key, decode=False).values, dtype=np.float64).ravel()
    valid = raw[np.isfinite(raw)]
    ref, _ = np.histogram(valid, bins=int(dark["bins"]), range=(dark["hist_min"], dark["hist_max"]))
    np.testing.assert_array_equal(dark["hist_counts"], ref)
    assert_quantiles(dark, valid, dark_key)
    ok = st[st["status"] == "ok"]
    assert ok["hist_exact"].astype(bool).all()
    assert set(ok.loc[ok["passes"] == 2, "hist_range_source"]) == {"data (second pass)"}
    again = profile(catalog, client=client, histogram="exact").set_index(["path", "name"])
    assert again.loc[dark_key, "hist_counts"].tolist() == dark["hist_counts"].tolist()
    with pytest.raises(ValueError, match="histogram must be sketch or exact"):
        profile(catalog, client=client, histogram="approximate")


def test_single_pass_reads_each_chunk_once(client: Any, tmp_path: Path) -> None:
    import h5py

    from metaextract_dask.arrays import ArrayProxy

    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=(64, 256, 256), dtype="i2", chunks=(8, 64, 256))
        d[...] = np.arange(64 * 256 * 256, dtype=np.int64).reshape(64, 256, 256) % 1000
    cat = scan([path], tmp_path / "cat", client=client)
    reads = lambda: sum(client.run(lambda: __import__("metaextract_dask.arrays").arrays.ArrayProxy.reads).values())  # noqa: E731
    before = reads()
    with dask.config.set({"metaextract.chunk-target": "1MiB"}):  # several dask chunks
        st = profile(cat, client=client)
    row = st.iloc[0]
    assert row["status"] == "ok" and row["passes"] == 1 and row["n_chunks"] > 4
    assert [c % d for c, d in zip(row["dask_chunks"], (8, 64, 256))] == [0, 0, 0]  # multiples of disk chunks
    assert reads() - before == row["n_chunks"]  # every chunk read exactly once
    assert ArrayProxy.reads >= 0


def test_sample_strategy_is_deterministic(catalog: Any, client: Any, tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(200 * 100, dtype="i4").reshape(200, 100), chunks=(10, 100))
    cat = scan([path], tmp_path / "cat", client=client)
    with dask.config.set({"metaextract.chunk-target": "4KiB"}):
        a = profile(cat, client=client, strategy="sample", sample_fraction=0.25).iloc[0]
        b = profile(cat, client=client, strategy="sample", sample_fraction=0.25).iloc[0]
    assert a["strategy"] == "sample" and a["chunks_read"] == np.ceil(a["n_chunks"] * 0.25)
    assert a["sampled_fraction"] == pytest.approx(a["count"] / 20000)
    assert 0 < a["sampled_fraction"] < 0.5
    assert (a["mean"], a["count"]) == (b["mean"], b["count"])


def test_corrupt_chunk_is_an_error_row(sample_tree: Any, client: Any, tmp_path: Path) -> None:
    root, _ = sample_tree
    store = tmp_path / "ocean_v3.zarr"
    shutil.copytree(root / "zarr" / "ocean_v3.zarr", store)
    chunk = sorted((store / "velocity" / "c").rglob("*"))[-1]
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage, not zstd\xff" * 10)
    cat = scan([store], tmp_path / "cat", client=client)
    st = profile(cat, client=client).set_index("name")
    assert st.loc["/velocity", "status"] == "error" and none(st.loc["/velocity", "error_type"])
    assert st.loc["/velocity", "n_chunks"] >= 1 and st.loc["/velocity", "passes"] == 1  # what is known of it
    assert st.loc["/temperature", "status"] == "ok" and st.loc["/analysis/anomaly", "status"] == "ok"
    assert len(cat.to_pandas("stats")) == 3  # written to the catalog


def test_gpu_device_without_gpu_is_a_clear_error(catalog: Any, client: Any) -> None:
    from metaextract_dask.profiler import gpu_available

    if all(client.run(gpu_available).values()):
        pytest.skip("workers have a GPU")
    with pytest.raises(RuntimeError, match="cupy cannot see a CUDA device"):
        profile(catalog, client=client, device="gpu")
    auto = profile(catalog, client=client, device="auto")
    assert set(auto["device"]) == {"cpu"}


def _local_cupy() -> tuple[Any, str]:
    """cupy where it imports and sees a CUDA device in this process, else None and why not."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy, ""
        return None, "no CUDA device visible"
    except Exception as exc:  # ImportError, or CUDA runtime errors without a driver
        return None, f"cupy unavailable: {type(exc).__name__}"


def _array_libraries() -> list[Any]:
    cupy, reason = _local_cupy()
    return [pytest.param("numpy", id="numpy"),
            pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(cupy is None, reason=reason)])]


@pytest.mark.parametrize("xp_name", _array_libraries())
def test_partials_equal_on_numpy_and_cupy(xp_name: str) -> None:
    xp = __import__(xp_name)
    rng = np.random.default_rng(1)
    host = rng.normal(300, 20, size=(50, 400)).astype("f4")
    host[0, :7] = np.nan
    host[3, 3] = -999
    blocks = [xp.asarray(b) for b in np.array_split(host, 4)]
    res = finalize(merge_all([block_partial(b, fill=-999, bins=32, rng=(200, 400)) for b in blocks]))
    valid = host[np.isfinite(host) & (host != -999)].astype(np.float64)
    assert (res["valid_count"], res["nan_count"], res["fill_count"]) == (valid.size, 7, 1)
    assert res["mean"] == pytest.approx(valid.mean(), rel=1e-12)
    assert res["std"] == pytest.approx(valid.std(), rel=1e-9)
    np.testing.assert_array_equal(res["hist_counts"], np.histogram(valid, 32, (200, 400))[0])


_EXACT = ("count", "valid_count", "nan_count", "inf_count", "fill_count", "hist_underflow", "hist_overflow",
          "min", "max", "n_chunks", "chunks_read", "passes", "hist_min", "hist_max", "hist_exact",
          "p01", "p05", "p25", "p50", "p75", "p95", "p99")  # quantiles and sketch histograms: equal on CPU and GPU


def _assert_same_stats(cpu: Any, gpu: Any) -> None:
    """Two stats tables of the same catalog agree: counts, min/max and histograms exactly, moments to float
    tolerance (the GPU sums in another order)."""
    a, b = cpu.set_index(["path", "name"]).sort_index(), gpu.set_index(["path", "name"]).sort_index()
    assert list(a.index) == list(b.index) and list(a["status"]) == list(b["status"])
    for key in a.index[a["status"] == "ok"]:
        ra, rb = a.loc[key], b.loc[key]
        for col in _EXACT:
            assert ra[col] == rb[col], (key, col)
        for col in ("mean", "std", "phys_mean"):
            assert rb[col] == pytest.approx(ra[col], rel=1e-9, abs=1e-12, nan_ok=True), (key, col)
        np.testing.assert_array_equal(rb["hist_counts"], ra["hist_counts"], err_msg=str(key))


def _need_gpu_workers(client: Any) -> None:
    from metaextract_dask.profiler import gpu_available

    if not all(client.run(gpu_available).values()):
        pytest.skip("cupy sees no CUDA device on the workers")


@pytest.mark.gpu
def test_gpu_profile_of_the_sample_tree_equals_cpu(catalog: Any, client: Any) -> None:
    _need_gpu_workers(client)
    cpu = profile(catalog, client=client, device="cpu")
    with dask.config.set({"metaextract.gpu-min-bytes": 0}):  # every array on the GPU, however small
        gpu = profile(catalog, client=client, device="gpu")
        assert set(profile(catalog, client=client, device="auto")["device"]) == {"gpu"}  # auto takes the GPU
    assert set(cpu["device"]) == {"cpu"} and set(gpu["device"]) == {"gpu"}
    _assert_same_stats(cpu, gpu)


def test_tiny_arrays_stay_on_the_cpu_when_profiling_on_a_gpu(catalog: Any, client: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Below gpu-min-bytes the CPU kernels summarise an array even with device gpu, and its row says so.
    (The device is forced to "gpu" here, so that this routing is checked on machines without one too: every
    array of the sample tree is tiny, so no block reaches cupy.)"""
    from metaextract_dask import profiler

    cpu = profile(catalog, client=client, device="cpu")
    monkeypatch.setattr(profiler, "resolve_device", lambda device, client=None: "gpu")
    routed = profile(catalog, client=client, device="gpu")
    ok = routed["status"] == "ok"
    assert catalog.to_pandas("arrays")["nbytes"].max() < 4 << 20
    assert ok.sum() == 36 and set(routed.loc[ok, "device"]) == {"cpu"}
    _assert_same_stats(cpu, routed)


@pytest.mark.gpu
def test_gpu_profile_of_multi_block_arrays_equals_cpu(client: Any, tmp_path: Path) -> None:
    """Arrays of many blocks, each block read, copied to the GPU and summarised in one task: HDF5 pieces
    straight from the memory map (contiguous and chunked), netCDF-3 and compressed Zarr through host reads,
    float data without a valid range with its histogram from the sketch."""
    import h5py
    import netCDF4
    import zarr

    _need_gpu_workers(client)
    rng = np.random.default_rng(11)
    tree = tmp_path / "tree"
    tree.mkdir()
    temp = rng.normal(280, 15, size=(2048, 1024)).astype("f4")
    temp[::97, ::13] = np.nan
    temp[5, :40] = -999
    with h5py.File(tree / "a.h5", "w") as f:
        d = f.create_dataset("temp", data=temp)  # contiguous
        d.attrs["valid_range"] = np.array([200, 360], dtype="f4")
        d.attrs["_FillValue"] = np.float32(-999)
        f.create_dataset("counts", data=rng.integers(-500, 3000, size=(1024, 1024)).astype("i2"),
                         chunks=(128, 1024))
        f.create_dataset("level", data=rng.normal(-3, 2, size=(512, 512)), chunks=(64, 512))  # from the sketch
    with netCDF4.Dataset(tree / "b.nc", "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.createDimension("y", 1024)
        nc.createDimension("x", 512)
        nc.createVariable("v", "i4", ("y", "x"))[:] = rng.integers(-10**6, 10**6, size=(1024, 512))
    z = zarr.create_array(str(tree / "c.zarr"), shape=(1024, 1024), chunks=(128, 1024), dtype="f8")
    z[:] = rng.normal(0, 1, size=(1024, 1024))
    cat = scan([tree], tmp_path / "cat", client=client)
    with dask.config.set({"metaextract.chunk-target": "1MiB", "metaextract.profile-batch": "64KiB"}):
        cpu = profile(cat, client=client, device="cpu")
        gpu = profile(cat, client=client, device="gpu")
    assert (cpu["status"] == "ok").all() and len(cpu) == 5 and (cpu["n_chunks"] > 1).all()
    assert set(gpu["device"]) == {"gpu"}
    _assert_same_stats(cpu, gpu)
    row = gpu.set_index("name").loc["/temp"]
    valid = temp[np.isfinite(temp) & (temp != -999)].astype(np.float64)
    assert (row["valid_count"], row["fill_count"]) == (valid.size, 40)
    assert row["std"] == pytest.approx(valid.std(), rel=1e-9)


@pytest.mark.gpu
def test_gpu_profile_array_of_a_dask_array_without_recipe(client: Any) -> None:
    """A dask array given without its recipe: blocks go to cupy with map_blocks(cupy.asarray), then the kernels."""
    import dask.array as da

    from metaextract_dask.profiler import profile_array

    _need_gpu_workers(client)
    x = np.random.default_rng(2).normal(10, 3, size=(400, 300)).astype("f4")
    x[0, :5] = np.nan
    data = da.from_array(x, chunks=(100, 300))
    res = {}
    for dev in ("cpu", "gpu"):
        final, meta = profile_array(data, {"valid_range": [0.0, 20.0]}, bins=16, device=dev)
        res[dev] = finalize(client.compute(final).result())
    assert meta["n_chunks"] == 4
    valid = x[np.isfinite(x)].astype(np.float64)
    assert (res["gpu"]["valid_count"], res["gpu"]["nan_count"]) == (valid.size, 5)
    assert res["gpu"]["hist_counts"] == res["cpu"]["hist_counts"]
    assert sum(res["gpu"]["hist_counts"]) == ((valid >= 0) & (valid <= 20)).sum()
    assert res["gpu"]["std"] == pytest.approx(valid.std(), rel=1e-9)


def test_rescan_drops_stats_of_changed_files(sample_tree: Any, client: Any, tmp_path: Path) -> None:
    root, _ = sample_tree
    tree = tmp_path / "t"
    shutil.copytree(root / "netcdf", tree)
    cat = scan([tree], tmp_path / "cat", client=client)
    profile(cat, client=client)
    os.utime(tree / "climate_cf.nc")
    cat = scan([tree], tmp_path / "cat", client=client)
    assert set(cat.to_pandas("stats")["path"]) == {str(tree / "stations_classic.nc")}  # stale rows gone


@pytest.mark.slow
def test_cli_profile_and_scan_with_profile(sample_tree: Any, tmp_path: Path) -> None:
    root, _ = sample_tree
    exe = [sys.executable, "-W", "always::ResourceWarning", "-m", "metaextract_dask.cli"]
    out = tmp_path / "cat"
    proc = subprocess.run([*exe, "scan", str(root), "-o", str(out), "--profile", "--workers", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "unclosed file" not in proc.stderr  # cached handles are closed at exit
    assert f"profiled 39 arrays on {auto_device()}: ok 36, skipped 3" in proc.stdout
    proc = subprocess.run([*exe, "profile", str(out), "--strategy", "sample", "--sample-fraction", "0.5",
                           "--bins", "10", "--workers", "1", "--no-progress"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = open_catalog(out).to_pandas("stats")
    ok = stats[stats["status"] == "ok"]
    assert set(ok["bins"]) == {10} and all(len(h) == 10 for h in ok["hist_counts"])
    proc = subprocess.run([*exe, "profile", str(out), "--bins", "0", "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "bins must be a positive integer" in proc.stderr
    proc = subprocess.run([*exe, "profile", str(out), "--device", "gpu", "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    if "profiled" not in proc.stdout:  # no GPU here: a clear error, exit 2
        assert proc.returncode == 2 and "cupy cannot see a CUDA device" in proc.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["tables"]["stats"]["strategy"] in ("sample", "full")


@pytest.mark.slow
def test_array_larger_than_worker_memory_profiles_in_bounded_memory(tmp_path: Path) -> None:
    """1.75 GiB of data on workers limited to 640 MiB each (~310 MiB of which the imports take)."""
    import h5py

    from metaextract_dask.cluster import connect

    path = tmp_path / "large.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=(448, 1024, 1024), dtype="f4", chunks=(4, 1024, 1024))
        d.attrs["valid_range"] = np.array([0.0, 1.0], dtype="f4")
        slab = np.random.default_rng(0).random((16, 1024, 1024), dtype=np.float32)
        for i in range(0, 448, 16):
            d[i:i + 16] = slab
    with connect(n_workers=2, memory_limit="640MiB", dashboard_address="127.0.0.1:0") as c:
        limit = min(w["memory_limit"] for w in c.scheduler_info()["workers"].values())
        assert path.stat().st_size > 2.5 * limit
        workers_before = set(c.scheduler_info()["workers"])
        cat = scan([path], tmp_path / "cat", client=c)
        # host memory is the point (on a GPU, each worker's CUDA context would take host memory of its own)
        st = profile(cat, client=c, device="cpu").iloc[0]
        assert set(c.scheduler_info()["workers"]) == workers_before  # nobody was killed for memory
    assert st["status"] == "ok" and st["valid_count"] == 448 * 1024 * 1024
    assert st["mean"] == pytest.approx(float(slab.mean(dtype=np.float64)), rel=1e-6)
    # chunks are capped at a tenth of the worker's memory, in whole stored chunks
    chunk_bytes = np.prod([int(x) for x in st["dask_chunks"]]) * 4
    assert chunk_bytes <= 0.1 * limit and int(st["dask_chunks"][0]) % 4 == 0


def _kernel_case(dtype: str, centre: int, size: int = 300_001) -> np.ndarray:
    """Values of both signs around `centre` (unsigned: folded), NaN and inf for floats, one fill value (42)."""
    x = np.random.default_rng(7).normal(centre, 30, size=size)
    if np.dtype(dtype).kind == "u":
        x = np.abs(x)
    x = x.astype(dtype)
    if x.dtype.kind == "f":
        x[::997] = np.nan
        x[5] = np.inf
    x[11] = 42 if dtype != "?" else True
    return x


@pytest.mark.parametrize("dtype", ["f4", "f8", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "?"])
@pytest.mark.parametrize("centre", [100, -60])
def test_numba_kernel_equals_array_module_path(dtype: str, centre: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numba kernels (numpy blocks) and the generic path (what cupy blocks take) agree, for values of both
    signs (the kernels take min/max from the bits) and an odd size (elements are binned in pairs)."""
    from metaextract_dask import stats as stats_mod

    x = _kernel_case(dtype, centre)
    lo_hi = (0.0, 200.0)
    fast = stats_mod.block_partial(x, fill=42, bins=32, rng=lo_hi)
    monkeypatch.setattr(stats_mod, "HAVE_NUMBA", False)
    slow = stats_mod.block_partial(x, fill=42, bins=32, rng=lo_hi)
    a, b = finalize(fast), finalize(slow)
    for key in ("count", "valid_count", "nan_count", "inf_count", "fill_count", "hist_underflow", "hist_overflow"):
        assert a[key] == b[key], key
    for key in ("min", "max", "mean", "std"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert a["hist_counts"] == b["hist_counts"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f4", "f8", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "?"])
@pytest.mark.parametrize("centre", [100, -60])
@pytest.mark.parametrize("bins", [32, 10_000])
def test_cuda_kernels_equal_cpu_kernels(dtype: str, centre: int, bins: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused CUDA kernels (cupy blocks) give the CPU kernels' counts, extremes and histogram exactly (bins
    in shared memory, and beyond it in global atomics) and their moments to rounding; so does cupy's generic
    array-module path. Also an all-fill block and an empty one."""
    from metaextract_dask import _cuda

    cupy = _cupy_with_gpu()
    kernel_dtype = {"f2": "f8", "?": "u1"}.get(dtype, dtype)  # what block_partial hands the kernels
    assert _cuda.kernels_available(kernel_dtype), _cuda._STATE.get("error")
    x = _kernel_case(dtype, centre)
    lo_hi = (0.0, 200.0)
    cpu = finalize(block_partial(x, fill=42, bins=bins, rng=lo_hi))
    dev = cupy.asarray(x.reshape(-1, 1))  # not 1-D: flattened on the device
    fused = finalize(block_partial(dev, fill=42, bins=bins, rng=lo_hi))
    monkeypatch.setattr(_cuda, "FUSED", False)
    generic = finalize(block_partial(dev, fill=42, bins=bins, rng=lo_hi))
    for other in (fused, generic):
        for key in ("count", "valid_count", "nan_count", "inf_count", "fill_count", "hist_underflow",
                    "hist_overflow", "min", "max", "hist_counts"):
            assert other[key] == cpu[key], key
        for key in ("mean", "std"):
            assert other[key] == pytest.approx(cpu[key], rel=1e-9), key
    monkeypatch.setattr(_cuda, "FUSED", True)
    if dtype != "?":
        p = block_partial(cupy.full(1000, 42, dtype=dtype), fill=42, bins=bins, rng=lo_hi)
        assert (p.count, p.fill, p.n, p.hist) == (1000, 1000, 0, None)
    p = block_partial(cupy.empty(0, dtype=dtype), fill=42, bins=bins, rng=lo_hi)
    assert (p.count, p.n) == (0, 0)


def _cupy_with_gpu() -> Any:
    cupy, reason = _local_cupy()
    if cupy is None:
        pytest.skip(reason)
    return cupy


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "i8"])
def test_kernel_values_against_numpy(dtype: str) -> None:
    """Every statistic of the numba kernels against numpy on the valid values: NaN/inf/fill counted apart,
    values outside the histogram range counted as under/overflow, all-negative data, one element."""
    rng = np.random.default_rng(3)
    cases = [rng.normal(5, 2, size=100_003), -np.abs(rng.normal(50, 10, size=40_000)) - 1, np.array([3.25])]
    for raw in cases:
        x = raw.astype(dtype)
        if x.dtype.kind == "f" and x.size > 1:
            x[::11], x[5], x[7] = np.nan, np.inf, -np.inf
        if x.size > 1:
            x[13::17] = -99
        p = block_partial(x, fill=-99, bins=16, rng=(0.0, 10.0))
        xf = x.astype(np.float64)
        valid = xf[np.isfinite(xf) & (xf != -99)]
        assert (p.count, p.n, p.fill) == (x.size, valid.size, int((xf == -99).sum()))
        assert (p.nan, p.inf) == (int(np.isnan(xf).sum()), int(np.isinf(xf).sum()))
        assert (p.min, p.max) == (valid.min(), valid.max())
        assert p.mean == pytest.approx(valid.mean(), rel=1e-12)
        assert math.sqrt(p.m2 / p.n) == pytest.approx(valid.std(), rel=1e-9, abs=1e-12)
        assert (p.under, p.over) == (int((valid < 0).sum()), int((valid > 10).sum()))
        np.testing.assert_array_equal(p.hist, np.histogram(valid, bins=16, range=(0.0, 10.0))[0])


def test_kernel_variance_far_from_the_shift() -> None:
    """A tiny spread around a huge offset, first value an outlier: no cancellation in the variance."""
    x = 1e9 + np.random.default_rng(4).normal(0, 1e-3, size=200_000)
    x[0] = -1e9
    p = block_partial(x)
    assert p.mean == pytest.approx(x.mean(), rel=1e-15)
    assert math.sqrt(p.m2 / p.n) == pytest.approx(x.std(), rel=1e-9)
    y = x[1:]
    assert math.sqrt(block_partial(y).m2 / y.size) == pytest.approx(y.std(), rel=1e-6)


def test_small_arrays_are_profiled_many_per_task(client: Any, tmp_path: Path) -> None:
    """120 files of two tiny arrays each: a handful of batch tasks, not 240 (or 480) tasks; every value right,
    the float arrays without a valid range binned over their own min..max from the sketch (one pass)."""
    import h5py
    from distributed import get_task_stream

    rng = np.random.default_rng(5)
    expected = {}
    for i in range(120):
        path = tmp_path / "tree" / f"f{i:03d}.h5"
        path.parent.mkdir(exist_ok=True)
        counts, level = rng.integers(0, 500, size=(16, 16)).astype("i2"), rng.normal(i, 1, size=50)
        with h5py.File(path, "w") as f:
            f["counts"] = counts
            f["level"] = level
        expected[(str(path), "/counts")], expected[(str(path), "/level")] = counts, level
    cat = scan([tmp_path / "tree"], tmp_path / "cat", client=client)
    with get_task_stream(client) as ts:
        st = profile(cat, client=client)
    names = [t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in ts.data]
    assert 1 <= len([n for n in names if n.startswith("_small_partials")]) <= 4 and len(names) <= 8, names
    assert (st["status"] == "ok").all() and len(st) == 240
    for row in st.to_dict("records"):
        values = expected[(row["path"], row["name"])].astype(np.float64)
        assert (row["valid_count"], row["min"], row["max"]) == (values.size, values.min(), values.max())
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert row["std"] == pytest.approx(values.std(), rel=1e-9)
        assert row["chunks_read"] == row["n_chunks"] == 1
        assert_quantiles(row, values, row["name"])
        if row["name"] == "/level":
            assert (row["passes"], row["hist_range_source"], row["hist_exact"]) == (1, "data (sketch)", False)
            assert (row["hist_min"], row["hist_max"]) == (values.min(), values.max())
            assert_sketch_histogram(row["hist_counts"], values, 64, row["hist_min"], row["hist_max"])
        else:
            assert (row["passes"], row["hist_range_source"], row["hist_exact"]) == (1, "dtype", True)
            ref, _ = np.histogram(values, bins=64, range=(row["hist_min"], row["hist_max"]))
            np.testing.assert_array_equal(row["hist_counts"], ref)


def test_batches_respect_the_byte_budget_and_count() -> None:
    from metaextract_dask.profiler import _batches

    small = [{"nbytes": n} for n in (40, 40, 30, 100, 5, 5, 5)]
    assert [[e["nbytes"] for e in b] for b in _batches(small, 100)] == [[40, 40], [30], [100], [5, 5, 5]]
    assert [len(b) for b in _batches([{"nbytes": 1}] * 600, 10**9)] == [256, 256, 88]


def _avx2_kernel_reason() -> str | None:
    from metaextract_dask import stats as stats_mod

    if stats_mod._kernels is None:
        return "the C extension was not built (no compiler at install time)"
    if stats_mod._kernels.f32_block(np.zeros(8, "f4"), 0.0, 1.0, 1.0, 0.0, 1, None, 0.0,
                                    np.zeros(7, np.int64)) is None:
        return "this CPU has no AVX2/FMA"
    return None


@pytest.mark.skipif(_avx2_kernel_reason() is not None, reason=str(_avx2_kernel_reason()))
@pytest.mark.parametrize("size", [1, 7, 8, 9, 100_003])
def test_avx2_kernel_equals_numba_kernel(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C float32 kernel and the numba one give the same counts, bins and extremes, and equal moments."""
    from metaextract_dask import stats as stats_mod

    rng = np.random.default_rng(size)
    x = rng.normal(-3, 40, size=size).astype("f4")
    if size > 8:
        x[::13], x[3], x[4], x[6::29] = np.nan, np.inf, -np.inf, -999
        x[7] = np.float32(100.0)  # exactly the top edge: the last bin
    for fill, rng_ in [(-999, (-50.0, 100.0)), (None, None), (12345.0, (-1e3, 1e3))]:
        c = stats_mod.block_partial(x, fill=fill, bins=24, rng=rng_)
        monkeypatch.setattr(stats_mod, "_kernels", None)
        n = stats_mod.block_partial(x, fill=fill, bins=24, rng=rng_)
        monkeypatch.undo()
        assert (c.count, c.n, c.nan, c.inf, c.fill, c.under, c.over) == (n.count, n.n, n.nan, n.inf, n.fill,
                                                                          n.under, n.over)
        assert (c.min, c.max) == (n.min, n.max)
        assert c.mean == pytest.approx(n.mean, rel=1e-12, abs=1e-12)
        assert c.m2 == pytest.approx(n.m2, rel=1e-10, abs=1e-10)
        assert (c.hist is None and n.hist is None) or c.hist.tolist() == n.hist.tolist()
        assert (c.sketch is None and n.sketch is None) or (c.sketch[0].tolist(), c.sketch[1].tolist()) == (
            n.sketch[0].tolist(), n.sketch[1].tolist())


def test_kernel_setting_numba_bypasses_the_c_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """metaextract.kernel = numba: float32 blocks never reach the C extension."""
    from metaextract_dask import stats as stats_mod

    class Refuses:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError("the C kernel was called")

    monkeypatch.setattr(stats_mod, "_kernels", Refuses())
    x = np.arange(1000, dtype="f4")
    with dask.config.set({"metaextract.kernel": "numba"}):
        p = stats_mod.block_partial(x, bins=10, rng=(0.0, 1000.0))
    assert (p.n, p.min, p.max, p.mean) == (1000, 0.0, 999.0, 499.5)
    with pytest.raises(AssertionError, match="C kernel was called"):
        stats_mod.block_partial(x, bins=10, rng=(0.0, 1000.0))


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2"])
def test_many_bins_stay_small_and_exact(dtype: str) -> None:
    """2,000 bins: no (bins + 6)**2 pair tables (they would take 64 MiB per block); numpy's counts up to
    values within rounding of an edge (bin arithmetic in float32 for float32 data; see README)."""
    x = np.random.default_rng(9).normal(0, 100, size=50_001).astype(dtype)
    p = block_partial(x, bins=2000, rng=(-300.0, 300.0))
    xf = x.astype(np.float64)
    ref = np.histogram(xf, bins=2000, range=(-300.0, 300.0))[0]
    assert p.hist.sum() == ref.sum() and np.abs(p.hist - ref).sum() <= 10
    if dtype != "f4":
        np.testing.assert_array_equal(p.hist, ref)
    assert (p.under, p.over, p.n) == (int((xf < -300).sum()), int((xf > 300).sum()), x.size)


def test_bins_must_be_positive(catalog: Any) -> None:
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        block_partial(np.zeros(10, "f4"), bins=0, rng=(0.0, 1.0))
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        profile(catalog, bins=-3)


def test_file_truncated_after_the_scan_is_an_error_row(client: Any, tmp_path: Path) -> None:
    """Between scan and profile a file loses its second half: its array is an error row, with a message;
    the other file's array is profiled."""
    import h5py

    values = np.arange(64 * 1024, dtype="f4").reshape(64, 1024)
    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("x", data=values, chunks=(16, 1024))
    cat = scan([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "cat", client=client)
    with open(tmp_path / "b.h5", "r+b") as f:
        f.truncate((tmp_path / "b.h5").stat().st_size // 2)
    st = profile(cat, client=client).set_index("path")
    a, b = st.loc[str(tmp_path / "a.h5")], st.loc[str(tmp_path / "b.h5")]
    assert a["status"] == "ok" and a["valid_count"] == values.size and a["max"] == values.max()
    assert b["status"] == "error" and b["error_message"]


def test_array_grown_since_the_scan_is_still_read_block_by_block(client: Any, tmp_path: Path) -> None:
    """The catalog says the array is small (one task of many); by profile time it has grown to several
    chunks: the batch task reads it block by block and the values are right."""
    import h5py

    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100, dtype="f8"), maxshape=(None,), chunks=(1000,))
    cat = scan([path], tmp_path / "cat", client=client)
    big = np.random.default_rng(1).normal(size=300_000)
    with h5py.File(path, "a") as f:
        f["x"].resize((big.size,))
        f["x"][:] = big
    with dask.config.set({"metaextract.chunk-target": "512KiB"}):
        st = profile(cat, client=client).iloc[0]
    assert st["status"] == "ok" and st["n_chunks"] > 1 and st["valid_count"] == big.size
    assert st["mean"] == pytest.approx(big.mean(), rel=1e-12) and st["std"] == pytest.approx(big.std(), rel=1e-9)
    assert st["passes"] == 1 and (st["hist_min"], st["hist_max"]) == (big.min(), big.max())
    assert_quantiles(st, big)
    assert_sketch_histogram(st["hist_counts"], big, 64, big.min(), big.max())


_NEW_STATS_COLUMNS = ["p01", "p05", "p25", "p50", "p75", "p95", "p99", "phys_p01", "phys_p05", "phys_p25",
                      "phys_p50", "phys_p75", "phys_p95", "phys_p99", "hist_exact"]


def test_catalog_profiled_before_the_quantile_columns_still_opens(catalog: Any, client: Any, tmp_path: Path) -> None:
    """A stats table written with the old schema (no quantile / hist_exact columns): every reader gives the
    current columns, the missing ones null, the others unchanged; the report falls back to histogram quantiles."""
    import pyarrow.parquet as pq

    from metaextract_dask.report import build_report
    from metaextract_dask.schema import SCHEMAS

    work = tmp_path / "old"
    shutil.copytree(catalog.target, work)
    profile(open_catalog(work), client=client)
    new = open_catalog(work).to_arrow("stats")
    parts = open_catalog(work).parts("stats")
    assert parts
    for part in parts:  # as an older version wrote them
        old_table = pq.read_table(part).drop_columns(_NEW_STATS_COLUMNS)
        assert "p50" not in old_table.schema.names
        pq.write_table(old_table, part)
    old = open_catalog(work)
    table = old.to_arrow("stats")
    assert table.schema == SCHEMAS["stats"] and table.num_rows == new.num_rows
    for col in _NEW_STATS_COLUMNS:
        assert table[col].null_count == table.num_rows, col
    assert table.drop_columns(_NEW_STATS_COLUMNS).equals(new.drop_columns(_NEW_STATS_COLUMNS))
    frame = old.to_pandas("stats")
    assert frame["p50"].isna().all() and frame["valid_count"].notna().any()
    lazy = old.stats.compute()  # the dask DataFrame
    assert "p99" in lazy.columns and lazy["p99"].isna().all()
    _, figures = build_report(old)
    assert figures > 0
