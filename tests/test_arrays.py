"""Lazy array access (metaextract_dask.arrays): values against the generator's manifest, laziness, pickling."""

from __future__ import annotations

import math
import posixpath
import random
import shutil
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import distributed  # noqa: F401  (its config defaults must exist before the autouse config reset saves them)
import numpy as np
import pytest

from helpers import assert_subset, by_relpath, loads
from metaextract_dask.arrays import ArrayProxy, close_cached_files, list_arrays, open_array, open_arrays, \
    open_datatree, open_dicom_series
from metaextract_dask.jsonutil import to_jsonable

FORMATS = ["hdf5", "netcdf4", "netcdf3", "zarr", "fits", "dicom"]

# One array per reader path (plain, chunked+compressed, classic, Zarr v2/v3, FITS plain/tiled, DICOM).
SAMPLES = [
    ("hdf5/experiment.h5", "/instrument/detector/counts"),
    ("hdf5/experiment.h5", "/timeseries/spectrum"),
    ("netcdf/climate_cf.nc", "/tas"),
    ("netcdf/climate_cf.nc", "/psl"),
    ("netcdf/climate_cf.nc", "/forecast/t2m"),
    ("netcdf/stations_classic.nc", "/temperature"),
    ("zarr/ocean_v2.zarr", "/temperature"),
    ("zarr/ocean_v3.zarr", "/analysis/anomaly"),
    ("fits/field_image.fits", "HDU0"),
    ("fits/field_image.fits", "HDU2"),
    ("dicom/multiframe_sc.dcm", "PixelData"),
    ("dicom/mr_brain.dcm", "PixelData"),
]
_IDS = [f"{p}:{n}" for p, n in SAMPLES]

# Arrays with on-disk chunks smaller than a few KB, for the chunk-alignment test.
CHUNKED = [
    ("hdf5/experiment.h5", "/instrument/detector/counts"),  # (2, 32, 32) f4 = 8 KiB
    ("netcdf/climate_cf.nc", "/tas"),                       # (6, 9, 18) f4
    ("netcdf/climate_cf.nc", "/forecast/t2m"),              # (4, 18, 36) f4
    ("zarr/ocean_v2.zarr", "/temperature"),                 # (3, 20, 30) f4
    ("zarr/ocean_v2.zarr", "/salinity"),                    # (20, 20) f8
    ("zarr/ocean_v3.zarr", "/temperature"),                 # (2, 20, 30) f4
    ("fits/field_image.fits", "HDU2"),                      # RICE tiles (16, 96) i2
    ("dicom/multiframe_sc.dcm", "PixelData"),               # one frame (1, 32, 48) u2
]

_HANDLE_MODULES = (b"h5py._hl", b"h5py.h5", b"netCDF4._netCDF4", b"astropy.io.fits.hdu", b"astropy.io.fits.file",
                   b"pydicom.dataset", b"pydicom.filereader")


def _local(x: Any) -> np.ndarray:
    """Compute in this process with threads, whatever client exists."""
    return np.asarray(dask.compute(x, scheduler="threads")[0])


def _entry(manifest: dict[str, Any], rel: str) -> dict[str, Any]:
    return next(e for e in manifest["files"] if e["path"] == rel)


def _manifest_array(manifest: dict[str, Any], rel: str, name: str) -> dict[str, Any]:
    return next(a for a in _entry(manifest, rel)["arrays"] if a["name"] == name)


def _numeric(manifest: dict[str, Any], fmt: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    found = [(e, a) for e in manifest["files"] if e["format"] == fmt and e["status"] == "ok"
             for a in e["arrays"] if a["stats"]]
    assert found, f"sample tree has no numeric {fmt} array"
    return found


def _assert_stats(values: np.ndarray, fill: Any, stats: dict[str, Any], where: str) -> None:
    if fill is not None:
        values = values[values != fill]
    assert values.size == stats["count"], where
    assert values.min() == stats["min"], where
    assert values.max() == stats["max"], where
    assert math.isclose(float(values.mean(dtype=np.float64)), stats["mean"], rel_tol=1e-6), where


# --------------------------------------------------------------------------- #
# values
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("fmt", FORMATS)
def test_raw_values_match_manifest(fmt: str, sample_tree: Any) -> None:
    root, manifest = sample_tree
    for entry, spec in _numeric(manifest, fmt):
        where = f"{entry['path']}:{spec['name']}"
        arr = open_array(root / entry["path"], spec["name"], decode=False)
        assert isinstance(arr.data, da.Array), where
        assert arr.shape == tuple(spec["shape"]), where
        assert arr.dtype.newbyteorder("=") == np.dtype(spec["dtype"]).newbyteorder("="), where
        values = _local(arr.data)
        assert values.shape == tuple(spec["shape"]) and values.dtype == arr.dtype, where
        _assert_stats(values, spec["fill_value"], spec["stats"], where)
        if spec["fill_value"] is not None:
            assert arr.attrs["_FillValue"] == spec["fill_value"], where


@pytest.mark.parametrize("fmt", ["hdf5", "netcdf4", "netcdf3", "zarr", "fits"])
def test_dims_attrs_and_disk_chunks_match_manifest(fmt: str, sample_tree: Any) -> None:
    root, manifest = sample_tree
    for entry in (e for e in manifest["files"] if e["format"] == fmt and e["status"] == "ok"):
        for spec in entry["arrays"]:
            if spec["name"] == "HDU1":  # FITS table: not an image
                continue
            where = f"{entry['path']}:{spec['name']}"
            arr = open_array(root / entry["path"], spec["name"], decode=False)
            assert arr.shape == tuple(spec["shape"]), where
            if spec["dims"] is not None:
                assert list(arr.dims) == spec["dims"], where
            expected_attrs = {k: v for k, v in spec["attrs"].items() if k != "_ARRAY_DIMENSIONS"}
            assert_subset(expected_attrs, to_jsonable(arr.attrs), where)
            disk = arr.encoding["chunks"]
            assert (list(disk) if disk else None) == spec["chunks"], where
            if disk:
                assert arr.encoding["preferred_chunks"] == dict(zip(arr.dims, disk)), where
            assert arr.encoding["source"] == str(root / entry["path"])
    if fmt == "fits":
        assert open_array(root / "fits/field_image.fits", "HDU0").dims == ("y", "x")
    if fmt == "hdf5":  # no labels, no scales: phony names
        assert open_array(root / "hdf5/experiment.h5", "/instrument/detector/counts").dims == (
            "dim_0", "dim_1", "dim_2")


def test_names_are_the_catalogs(catalog: Any, sample_tree: Any) -> None:
    """Every catalogued array (but FITS tables) opens by its catalog name, with the catalog's shape and dims."""
    root, _ = sample_tree
    arrays = by_relpath(catalog.to_pandas("arrays"), root)
    arrays = arrays[(arrays["kind"] != "fits-table") & arrays["error"].isna()]
    assert len(arrays) > 30
    for _, row in arrays.iterrows():
        arr = open_array(row["path"], row["name"])
        assert list(arr.shape) == list(row["shape"]), row["rel"]
        if row["dims"] is not None:
            assert list(arr.dims) == list(row["dims"]), row["rel"]
        if row["chunks"] is not None and row["kind"] != "dicom-pixels":
            assert list(arr.encoding["chunks"]) == list(row["chunks"]), row["rel"]
        fill = loads(row["fill_value"])
        if fill is not None and "_FillValue" not in arr.encoding:  # as xarray: a Zarr v3 fill value masks nothing
            assert "v3" in row["rel"] and row["kind"] == "zarr-array", row["rel"]
            assert open_array(row["path"], row["name"], decode=False).attrs["_FillValue"] == fill, row["rel"]
        elif fill is not None:
            assert arr.encoding["_FillValue"] == fill, row["rel"]


def test_unknown_name_lists_available(sample_tree: Any) -> None:
    root, _ = sample_tree
    cases = [("netcdf/climate_cf.nc", "/nope", "/forecast/t2m"),
             ("hdf5/experiment.h5", "/instrument", "/instrument/detector/counts"),
             ("zarr/ocean_v3.zarr", "/analysis", "/analysis/anomaly"),
             ("fits/field_image.fits", "HDU1", "HDU2"),  # a table, not an image
             ("dicom/mr_brain.dcm", "Pixels", "PixelData")]
    for rel, name, listed in cases:
        with pytest.raises(KeyError) as info:
            open_array(root / rel, name)
        assert listed in str(info.value), rel
    with pytest.raises(ValueError):
        open_array(root / "misfits/random.bin", "/x")


def test_open_datatree_is_one_lazy_tree_per_file(sample_tree: Any) -> None:
    """Every catalogued array is in the file's tree (group path + name), lazy, with the manifest's values."""
    root, manifest = sample_tree
    for entry in manifest["files"]:
        if entry["status"] != "ok" or entry["format"] == "binary":
            continue
        tree = open_datatree(root / entry["path"], decode=False)
        flat = entry["format"] in ("fits", "dicom")
        found = {}
        for node in tree.subtree:
            for name, var in node.to_dataset(inherit=False).data_vars.items():
                found[name if flat else posixpath.join(node.path, str(name))] = var
        for node in tree.subtree:  # dimension coordinates (HDF5 scales, netCDF coordinate variables)
            for name, var in node.to_dataset(inherit=False).coords.items():
                if not flat:
                    found[posixpath.join(node.path, str(name))] = var
        assert sorted(a["name"] for a in entry["arrays"] if a["name"] != "HDU1") == sorted(found)
        assert sorted(list_arrays(root / entry["path"])) == sorted(found)
        for spec in entry["arrays"]:
            if spec["stats"]:
                var = found[spec["name"]]
                assert var.shape == tuple(spec["shape"]), spec["name"]
                _assert_stats(np.asarray(var.values), spec["fill_value"], spec["stats"], spec["name"])
    ds = open_arrays(root / "fits/field_image.fits")
    assert ds["HDU0"].dims == ("y", "x") and ds["HDU2"].dims == ("y_1", "x_1")  # same names, other sizes
    before = ArrayProxy.reads
    open_arrays(root / "hdf5/experiment.h5", group="/instrument/detector", decode=False)
    assert ArrayProxy.reads == before  # no dimension coordinates there: nothing read


# --------------------------------------------------------------------------- #
# decoding
# --------------------------------------------------------------------------- #
def test_netcdf_packed_variable_is_unpacked(sample_tree: Any) -> None:
    root, manifest = sample_tree
    path = root / "netcdf/climate_cf.nc"
    raw = open_array(path, "/psl", decode=False)
    assert raw.dtype == np.int16
    assert raw.attrs["scale_factor"] == 0.01 and raw.attrs["add_offset"] == 1000.0
    assert raw.attrs["_FillValue"] == -32767
    psl = open_array(path, "/psl")
    assert psl.dtype.kind == "f" and isinstance(psl.data, da.Array)
    assert "scale_factor" not in psl.attrs and psl.encoding["scale_factor"] == 0.01
    r = _local(raw.data)
    expected = np.where(r == -32767, np.nan, r * 0.01 + 1000.0)
    np.testing.assert_allclose(_local(psl.data), expected, rtol=1e-12, equal_nan=True)
    stats = _manifest_array(manifest, "netcdf/climate_cf.nc", "/psl")["stats"]
    assert math.isclose(float(np.nanmean(_local(psl.data))), stats["mean"] * 0.01 + 1000.0, rel_tol=1e-9)


def test_netcdf_fill_cells_become_nan(sample_tree: Any) -> None:
    root, manifest = sample_tree
    path = root / "netcdf/climate_cf.nc"
    tas = _local(open_array(path, "/tas").data)
    raw = _local(open_array(path, "/tas", decode=False).data)
    spec = _manifest_array(manifest, "netcdf/climate_cf.nc", "/tas")
    # The generator overwrites 7 distinct random cells with the fill value (rng.choice(size=7, replace=False)).
    assert np.isnan(tas).sum() == 7 == math.prod(spec["shape"]) - spec["stats"]["count"]
    assert np.array_equal(np.isnan(tas), raw == np.float32(1.0e20))
    assert np.array_equal(tas[~np.isnan(tas)], raw[raw != np.float32(1.0e20)])
    # valid_range is left to the profiler: an attribute, not a mask.
    assert list(open_array(path, "/tas").attrs["valid_range"]) == [150.0, 350.0]


def test_other_fill_values_are_masked(sample_tree: Any) -> None:
    root, _ = sample_tree
    cases = [("netcdf/stations_classic.nc", "/temperature", 1),   # temp[3, 2] = fill
             ("hdf5/experiment.h5", "/instrument/detector/counts", 64 * 64),  # last frame never written
             ("zarr/ocean_v2.zarr", "/temperature", 6 * 3 * 5)]   # land mask [:, :3, :5]
    for rel, name, n_fill in cases:
        decoded = _local(open_array(root / rel, name).data)
        assert np.isnan(decoded).sum() == n_fill, rel
    rh = open_array(root / "netcdf/stations_classic.nc", "/relative_humidity", decode=False)
    assert rh.attrs["valid_min"] == 0 and rh.attrs["valid_max"] == 100


def test_fits_primary_decoded_equals_raw_and_tiles_match_manifest(sample_tree: Any) -> None:
    root, manifest = sample_tree
    path = root / "fits/field_image.fits"
    raw = open_array(path, "HDU0", decode=False)
    assert not {"scale_factor", "add_offset", "_FillValue"} & set(raw.attrs)  # float image, no BSCALE/BZERO
    assert raw.attrs["units"] == "adu" and raw.attrs["OBJECT"] == "SYNTH-FIELD-01"
    np.testing.assert_array_equal(_local(open_array(path, "HDU0").data), _local(raw.data))
    spec = _manifest_array(manifest, "fits/field_image.fits", "HDU2")
    tiles = open_array(path, "HDU2", decode=False, chunks=(8, 40))  # sections cutting across RICE tiles
    assert tiles.dtype == np.int16 and tiles.encoding["chunks"] == (16, 96)
    values = _local(tiles.data)
    _assert_stats(values, None, spec["stats"], "HDU2")
    from astropy.io import fits

    with fits.open(path) as hdul:
        np.testing.assert_array_equal(values, hdul[2].data)


def test_fits_bscale_bzero_blank(tmp_path: Path) -> None:
    from astropy.io import fits

    raw = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    raw[1, 1] = -32768
    path = tmp_path / "scaled.fits"
    fits.PrimaryHDU(raw).writeto(path)
    with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:
        hdul[0].header.update(BSCALE=0.5, BZERO=100.0, BLANK=-32768)
    arr = open_array(path, "HDU0", decode=False)
    assert arr.dtype == np.int16
    assert (arr.attrs["scale_factor"], arr.attrs["add_offset"], arr.attrs["_FillValue"]) == (0.5, 100.0, -32768)
    np.testing.assert_array_equal(_local(arr.data), raw)
    decoded = _local(open_array(path, "HDU0").data)
    np.testing.assert_allclose(decoded, np.where(raw == -32768, np.nan, raw * 0.5 + 100.0), equal_nan=True)
    with fits.open(path) as hdul:  # astropy's own scaling agrees
        np.testing.assert_allclose(decoded, hdul[0].data, equal_nan=True)


# --------------------------------------------------------------------------- #
# DICOM
# --------------------------------------------------------------------------- #
def test_dicom_ct_series_is_sorted_along_the_normal(sample_tree: Any) -> None:
    import pydicom

    root, manifest = sample_tree
    files = sorted((root / "dicom/ct_series").glob("*.dcm"))
    shuffled = list(files)
    random.Random(1).shuffle(shuffled)
    vol = open_dicom_series(shuffled, decode=False)
    assert vol.shape == (5, 64, 64) and vol.dims == ("slice", "row", "column") and vol.dtype == np.int16
    z = vol["z"].values
    assert np.all(np.diff(z) > 0)
    assert list(vol["instance_number"].values) == [1, 2, 3, 4, 5]
    order = [Path(p).name for p in vol["path"].values]
    assert order != sorted(order)  # file names are not in slice order on disk
    values = _local(vol.data)
    for i, p in enumerate(vol["path"].values):
        rel = Path(p).relative_to(root).as_posix()
        entry = _entry(manifest, rel)
        assert entry["dicom"]["ImagePositionPatient"][2] == z[i]
        _assert_stats(values[i], None, entry["arrays"][0]["stats"], rel)
        np.testing.assert_array_equal(values[i], pydicom.dcmread(p).pixel_array)
    np.testing.assert_array_equal(_local(open_dicom_series(root / "dicom/ct_series", decode=False).data), values)

    ct = open_dicom_series(files)
    assert (vol.attrs["scale_factor"], vol.attrs["add_offset"]) == (1.0, -1024.0)
    np.testing.assert_allclose(_local(ct.data), values * 1.0 - 1024.0)
    single = open_array(files[0], "PixelData")
    np.testing.assert_allclose(_local(single.data), _local(open_array(files[0], "PixelData", decode=False).data)
                               - 1024.0)


def test_dicom_series_without_positions_uses_instance_number(sample_tree: Any, tmp_path: Path) -> None:
    import pydicom

    root, _ = sample_tree
    copies = []
    for p in sorted((root / "dicom/ct_series").glob("*.dcm")):
        ds = pydicom.dcmread(p)
        del ds.ImagePositionPatient
        out = tmp_path / p.name
        ds.save_as(out)
        copies.append(out)
    vol = open_dicom_series(copies[::-1], decode=False)
    assert list(vol["instance_number"].values) == [1, 2, 3, 4, 5]
    assert np.isnan(vol["z"].values).all()
    reference = open_dicom_series(sorted((root / "dicom/ct_series").glob("*.dcm")), decode=False)
    np.testing.assert_array_equal(_local(vol.data), _local(reference.data))


def test_dicom_series_rejects_mixed_files(sample_tree: Any) -> None:
    root, _ = sample_tree
    files = sorted((root / "dicom/ct_series").glob("*.dcm"))
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        open_dicom_series([*files, root / "dicom/mr_brain.dcm"])
    with pytest.raises(ValueError):
        open_dicom_series([])


def test_dicom_multiframe_reads_frame_by_frame(sample_tree: Any) -> None:
    root, manifest = sample_tree
    path = root / "dicom/multiframe_sc.dcm"
    spec = _manifest_array(manifest, "dicom/multiframe_sc.dcm", "PixelData")
    whole = open_array(path, "PixelData", decode=False)
    assert whole.shape == (4, 32, 48) and whole.dims == ("frame", "row", "column")
    assert whole.encoding["chunks"] == (1, 32, 48)
    frames = open_array(path, "PixelData", decode=False, chunks={"frame": 1})
    assert frames.data.chunks == ((1, 1, 1, 1), (32,), (48,))
    values = _local(frames.data)
    np.testing.assert_array_equal(values, _local(whole.data))
    _assert_stats(values, None, spec["stats"], "multiframe")
    # Basic indexing the proxies support beyond dask's slices: steps, negative steps, ints.
    np.testing.assert_array_equal(_local(whole[::-1, 5:1:-2, ::3].data), values[::-1, 5:1:-2, ::3])
    np.testing.assert_array_equal(_local(whole[2].data), values[2])


# --------------------------------------------------------------------------- #
# laziness, recipes, distributed
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize(("rel", "name"), SAMPLES, ids=_IDS)
def test_opening_reads_no_data(rel: str, name: str, decode: bool, sample_tree: Any) -> None:
    root, _ = sample_tree
    with dask.config.set(scheduler="synchronous"):  # reads counted in this process
        before = ArrayProxy.reads
        arr = open_array(root / rel, name, decode=decode, coords=False)
        assert isinstance(arr.data, da.Array)
        assert ArrayProxy.reads == before
        arr.compute()
        assert ArrayProxy.reads > before
        # with coordinates: only the 1-D values of index coordinates are read (a CF time's first and last
        # value once more, xarray's time decoder chooses its dtype from them)
        before = ArrayProxy.reads
        arr = open_array(root / rel, name, decode=decode)
        assert isinstance(arr.data, da.Array)
        assert ArrayProxy.reads - before <= len(arr.indexes) + (2 if "time" in arr.indexes else 0)


def test_dicom_series_opening_reads_no_pixels(sample_tree: Any) -> None:
    root, _ = sample_tree
    with dask.config.set(scheduler="synchronous"):
        before = ArrayProxy.reads
        vol = open_dicom_series(root / "dicom/ct_series")
        assert ArrayProxy.reads == before
        vol.compute()
        assert ArrayProxy.reads > before


@pytest.mark.parametrize(("rel", "name"), SAMPLES, ids=_IDS)
def test_graph_pickles_as_a_recipe(rel: str, name: str, sample_tree: Any) -> None:
    root, _ = sample_tree
    arr = open_array(root / rel, name)
    arr.compute(scheduler="threads")  # handles now open in this process's cache: still none in the graph
    blob = cloudpickle.dumps(arr.data.__dask_graph__())
    assert len(blob) < 20_000
    for module in _HANDLE_MODULES:
        assert module not in blob, module
    # The unpickled graph computes (after this process dropped its handles).
    close_cached_files()
    graph = cloudpickle.loads(blob)
    again = da.Array(graph, arr.data.name, arr.data.chunks, meta=arr.data._meta)
    np.testing.assert_array_equal(_local(again), _local(arr.data))


def test_distributed_compute_equals_local(client: Any, sample_tree: Any) -> None:
    root, _ = sample_tree
    arrays = [open_array(root / rel, name, decode=decode, memory_limit=20_000)  # several tasks per array
              for rel, name in SAMPLES for decode in (False, True)]
    arrays.append(open_dicom_series(root / "dicom/ct_series", memory_limit=20_000))
    assert any(a.data.npartitions > 1 for a in arrays)
    futures = client.compute([a.data for a in arrays])
    for arr, future in zip(arrays, futures):
        np.testing.assert_array_equal(future.result(), _local(arr.data), err_msg=arr.name)


# --------------------------------------------------------------------------- #
# chunks
# --------------------------------------------------------------------------- #
def _on_disk_boundaries(chunks: tuple[tuple[int, ...], ...], disk: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    for sizes, step, n in zip(chunks, disk, shape):
        edges = np.cumsum(sizes)
        if not all(e % step == 0 or e == n for e in edges):
            return False
    return True


@pytest.mark.parametrize(("rel", "name"), CHUNKED, ids=[f"{p}:{n}" for p, n in CHUNKED])
def test_dask_chunks_are_whole_disk_chunks(rel: str, name: str, sample_tree: Any) -> None:
    root, _ = sample_tree
    whole = open_array(root / rel, name)
    disk = whole.encoding["chunks"]
    assert disk is not None and whole.data.npartitions == 1  # small: one chunk under the default target
    # A target of a few KB, at least one disk chunk (a smaller one would split stored chunks, see chunking.py).
    target = max(8192, math.prod(disk) * whole.dtype.itemsize)
    with dask.config.set({"metaextract.chunk-target": target}):
        arr = open_array(root / rel, name)
    assert arr.data.npartitions > 1, arr.data.chunks
    assert _on_disk_boundaries(arr.data.chunks, disk, arr.shape), (arr.data.chunks, disk)
    # The same through a worker memory cap instead (chunk-memory-fraction 0.1 of it).
    capped = open_array(root / rel, name, memory_limit=10 * target)
    assert capped.data.chunks == arr.data.chunks
    np.testing.assert_array_equal(_local(arr.data), _local(whole.data))


def test_default_and_explicit_chunks(sample_tree: Any) -> None:
    root, _ = sample_tree
    path = root / "hdf5/experiment.h5"
    whole = open_array(path, "/instrument/detector/counts")
    assert whole.data.numblocks == (1, 1, 1)  # 160 kB: one chunk under the default target
    explicit = open_array(path, "/instrument/detector/counts", chunks=(5, 64, 16))
    assert explicit.data.chunks == ((5, 5), (64,), (16, 16, 16, 16))
    by_dim = open_array(root / "netcdf/climate_cf.nc", "/tas", chunks={"time": 4})
    assert by_dim.data.chunks[0] == (4, 4, 4)
    np.testing.assert_array_equal(_local(explicit.data), _local(whole.data))
    scalar = open_array(path, "/calibration/gain", decode=False)
    assert scalar.shape == () and float(_local(scalar.data)) > 0.8


# --------------------------------------------------------------------------- #
# corrupt input
# --------------------------------------------------------------------------- #
def test_corrupt_zarr_chunk_raises_at_compute(sample_tree: Any, tmp_path: Path) -> None:
    root, _ = sample_tree
    store = tmp_path / "ocean_v3.zarr"
    shutil.copytree(root / "zarr/ocean_v3.zarr", store)
    chunk = store / "temperature" / "c" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))
    for decode in (False, True):
        arr = open_array(store, "/temperature", decode=decode)  # metadata is intact: opening works
        with pytest.raises(Exception):
            arr.compute(scheduler="threads")
    intact = open_array(store, "/velocity", decode=False)  # other arrays of the store still read
    assert _local(intact.data).shape == (40, 60)


def test_corrupt_hdf5_chunk_raises_at_compute(sample_tree: Any, tmp_path: Path) -> None:
    import h5py

    root, _ = sample_tree
    path = tmp_path / "experiment.h5"
    shutil.copy(root / "hdf5/experiment.h5", path)
    with h5py.File(path, "r") as f:
        info = f["/instrument/detector/counts"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    arr = open_array(path, "/instrument/detector/counts", decode=False)
    with pytest.raises(Exception):
        arr.compute(scheduler="threads")


def test_hdf5_plain_storage_is_read_through_a_memory_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unfiltered, native-order datasets give their values straight from the file (each element once);
    everything else (filters, byte order, edge or unwritten chunks, non-contiguous regions) says None."""
    import h5py

    from metaextract_dask.formats import hdf5 as hdf5_mod
    from metaextract_dask.arrays import _open_raw

    monkeypatch.setattr(hdf5_mod, "_MIN_MAPPED_PIECE", 0)
    path = tmp_path / "plain.h5"
    values = np.arange(70 * 64, dtype="f4").reshape(70, 64)
    with h5py.File(path, "w") as f:
        f["contiguous"] = values
        f.create_dataset("chunked", data=values, chunks=(16, 64))
        f.create_dataset("gzip", data=values, chunks=(16, 64), compression="gzip")
        f.create_dataset("big_endian", data=values.astype(">f4"), chunks=(16, 64))
        sparse = f.create_dataset("sparse", shape=(64, 64), dtype="f4", chunks=(16, 64))
        sparse[:16] = 1.0  # chunks 1..3 never written: fill values, not in the file

    def pieces(name: str, region: tuple[slice, ...]) -> Any:
        _, proxy = _open_raw(path, name)
        it = proxy.iter_region(region)
        return None if it is None else np.sort(np.concatenate([p.copy() for p in it]))

    rows = (slice(16, 48), slice(0, 64))
    np.testing.assert_array_equal(pieces("/contiguous", rows), np.sort(values[rows].ravel()))
    np.testing.assert_array_equal(pieces("/chunked", rows), np.sort(values[rows].ravel()))
    assert pieces("/contiguous", (slice(0, 10), slice(0, 32))) is None  # not one byte range
    assert pieces("/chunked", (slice(8, 40), slice(0, 64))) is None  # not on the chunk grid
    assert pieces("/chunked", (slice(64, 70), slice(0, 64))) is None  # the edge chunk is stored whole
    assert pieces("/gzip", rows) is None and pieces("/big_endian", rows) is None
    assert pieces("/sparse", (slice(0, 16), slice(0, 64))) is not None
    assert pieces("/sparse", (slice(0, 32), slice(0, 64))) is None  # an unwritten chunk


def test_netcdf4_plain_variables_are_read_through_a_memory_map(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A netCDF-4 file is HDF5 underneath: uncompressed variables come from the map too (each element once);
    zlib ones and netCDF-3 files do not."""
    import netCDF4

    from metaextract_dask.formats import hdf5 as hdf5_mod
    from metaextract_dask.arrays import _open_raw

    monkeypatch.setattr(hdf5_mod, "_MIN_MAPPED_PIECE", 0)
    values = np.random.default_rng(2).normal(size=(40, 30)).astype("f4")
    for fmt in ("NETCDF4", "NETCDF3_CLASSIC"):
        path = tmp_path / f"{fmt}.nc"
        with netCDF4.Dataset(path, "w", format=fmt) as ds:
            ds.createDimension("y", 40)
            ds.createDimension("x", 30)
            grp = ds.createGroup("g") if fmt == "NETCDF4" else ds
            grp.createVariable("plain", "f4", ("y", "x"))[:] = values
            if fmt == "NETCDF4":
                grp.createVariable("zipped", "f4", ("y", "x"), zlib=True)[:] = values
        name = "/g/plain" if fmt == "NETCDF4" else "/plain"
        _, proxy = _open_raw(path, name)
        pieces = proxy.iter_region((slice(0, 40), slice(0, 30)))
        if fmt == "NETCDF4":
            assert pieces is not None
            np.testing.assert_array_equal(np.sort(np.concatenate(list(pieces))), np.sort(values.ravel()))
            assert _open_raw(path, "/g/zipped")[1].iter_region((slice(0, 40), slice(0, 30))) is None
        else:
            assert pieces is None
