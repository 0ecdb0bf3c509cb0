"""Catalog -> combined datasets (metaextract_dask.combine): search, fault-tolerant open_mfdataset, to_dataset_dict,
on real netCDF files written with netCDF4, some of them bad, scanned on the test cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import netCDF4
import numpy as np
import pytest
import xarray as xr

from metaextract_dask import scan
from metaextract_dask.arrays import ArrayProxy
from metaextract_dask.combine import SubCatalog

N_GOOD = 6


def write_member(path: Path, i: int, *, dtype: str = "f4", nlat: int = 4, units: str = "K", chunks: Any = (1, 4, 5),
                 experiment: str = "hist", model: str = "A", lat_shift: float = 0.0, ref: str = "2000-01-01",
                 offset_days: float = 0.0, with_pr: bool = True) -> np.ndarray:
    """One CF file of 3 daily steps (time = 3 i .. 3 i + 2 days since 2000-01-01) of tas(time, lat, lon)."""
    values = (np.arange(3 * nlat * 5).reshape(3, nlat, 5) + 1000 * i).astype(dtype)
    values[1, 0, 0] = -999  # one fill cell per file
    with netCDF4.Dataset(path, "w") as nc:
        nc.setncatts({"experiment_id": experiment, "source_id": model, "Conventions": "CF-1.8"})
        nc.createDimension("time", None)
        nc.createDimension("lat", nlat)
        nc.createDimension("lon", 5)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = f"days since {ref}"
        t.calendar = "standard"
        t[:] = np.arange(3) + 3 * i + offset_days
        lat = nc.createVariable("lat", "f4", ("lat",))
        lat.units = "degrees_north"
        lat[:] = np.linspace(-45, 45, nlat) + lat_shift
        lon = nc.createVariable("lon", "f4", ("lon",))
        lon.units = "degrees_east"
        lon[:] = np.linspace(0, 288, 5)
        kw: dict[str, Any] = {"chunksizes": chunks if chunks[1:] != (4, 5) else (chunks[0], nlat, 5)}
        v = nc.createVariable("tas", dtype, ("time", "lat", "lon"), fill_value=np.array(-999, dtype)[()], **kw)
        v.units = units
        v.long_name = "air temperature"
        v.set_auto_maskandscale(False)
        v[:] = values
        if with_pr:
            pr = nc.createVariable("pr", "i2", ("time", "lat", "lon"))
            pr.scale_factor = 0.5
            pr.units = "mm"
            pr[:] = np.full((3, nlat, 5), 2 * i, dtype="i2")
    return values


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory, client: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ensemble")
    good = {}
    for i in range(N_GOOD):  # written out of order: the combine sorts by time
        p = root / "hist" / f"tas_{(i * 7) % N_GOOD:02d}.nc"
        p.parent.mkdir(exist_ok=True)
        good[p] = write_member(p, (i * 7) % N_GOOD)
    bad = root / "hist"
    write_member(bad / "x_dtype.nc", 10, dtype="f8")
    write_member(bad / "x_shape.nc", 11, nlat=6)
    write_member(bad / "x_units.nc", 12, units="degC")
    write_member(bad / "x_chunks.nc", 13, chunks=(1, 2, 5))
    write_member(bad / "x_lat.nc", 14, lat_shift=1.0)
    write_member(bad / "x_nopr.nc", 15, with_pr=False)
    blob = (root / "hist" / "tas_00.nc").read_bytes()
    (bad / "x_corrupt.nc").write_bytes(blob[: len(blob) // 3])  # a truncated netCDF-4 file
    # a second experiment: another group for to_dataset_dict (its times in another reference: decoded per file)
    scen = {}
    for i in range(3):
        p = root / "ssp" / f"tas_{i}.nc"
        p.parent.mkdir(exist_ok=True)
        scen[p] = write_member(p, i, experiment="ssp585", ref="2001-01-01")
    cat = scan([root], root.parent / (root.name + "_cat"), client=client)
    return {"root": root, "cat": cat, "good": good, "scen": scen}


def _expected(files: dict[Path, np.ndarray]) -> np.ndarray:
    """The written tas values of `files` in time order (member i starts at 1000 i), fill cells as NaN."""
    ordered = np.concatenate([v for _, v in sorted(files.items(), key=lambda kv: int(kv[1][0, 0, 1]))])
    return np.where(ordered == -999, np.nan, ordered.astype(np.float64)).astype(ordered.dtype)


def test_search_returns_a_sub_catalog(ensemble: dict[str, Any]) -> None:
    cat = ensemble["cat"]
    hist = cat.search(format="netcdf", attrs={"experiment_id": "hist"})
    assert isinstance(hist, SubCatalog)
    paths = set(hist.to_pandas("files")["path"])
    assert paths == {str(p) for p in ensemble["good"]} | {
        str(ensemble["root"] / "hist" / f"x_{k}.nc") for k in ("dtype", "shape", "units", "chunks", "lat", "nopr")}
    assert len(cat.search(path="x_*.nc").to_pandas("files")) == 7  # the corrupt one too (an error row)
    tas = cat.search(name="tas", path="*/ssp/*")
    assert set(tas.to_pandas("arrays")["name"]) == {"/tas"} and len(tas.to_pandas("files")) == 3
    assert len(cat.search(attrs={"units": "degC"}).to_pandas("files")) == 1  # through an array's attrs
    assert len(cat.search(attrs={"experiment_id": ["ssp*", "nope"]}).to_pandas("files")) == 3
    assert len(cat.search(status="error").to_pandas("files")) == 1
    assert hist.files.compute().shape[0] == len(paths)  # the Catalog interface (dask tables) works
    assert len(hist.search(name="pr").to_pandas("files")) == len(paths) - 1  # searching a search


def test_open_mfdataset_skips_what_does_not_fit(ensemble: dict[str, Any]) -> None:
    cat = ensemble["cat"].search(path="*/hist/*")
    before = ArrayProxy.reads
    ds, skipped = cat.open_mfdataset(concat_dim="time")
    reads = ArrayProxy.reads - before
    reasons = dict(zip(skipped["path"].map(os.path.basename), skipped["reason"]))
    assert set(reasons) == {"x_dtype.nc", "x_shape.nc", "x_units.nc", "x_chunks.nc", "x_lat.nc", "x_nopr.nc",
                            "x_corrupt.nc"}
    assert "tas: dtype '<f8', the others' '<f4'" in reasons["x_dtype.nc"]
    assert "tas: shape beyond 'time' (6, 5), the others' (4, 5)" in reasons["x_shape.nc"]
    assert "tas: units 'degC', the others' 'K'" in reasons["x_units.nc"]
    assert reasons["x_chunks.nc"] == "tas: chunks beyond 'time' (2, 5), the others' (4, 5)"
    assert reasons["x_lat.nc"] == "lat: coordinate values differ from the other files'"
    assert reasons["x_nopr.nc"] == "missing variable 'pr'"
    assert reasons["x_corrupt.nc"].startswith("error row: ")
    # the rest combine, in time order, with xarray's decoding (fill -> NaN, packed pr unpacked, times)
    assert ds.tas.shape == (3 * N_GOOD, 4, 5) and isinstance(ds.tas.data, da.Array)
    np.testing.assert_array_equal(ds.tas.values, _expected(ensemble["good"]))
    np.testing.assert_array_equal(ds.pr.values[::3, 0, 0], np.arange(N_GOOD) * 2.0)  # netCDF4 packed on write
    assert ds.time.dtype.kind == "M" and str(ds.time.values[0])[:10] == "2000-01-01"
    assert list(ds.indexes) == ["time", "lat", "lon"] and ds.tas.attrs["units"] == "K"
    assert ds.attrs["experiment_id"] == "hist"
    # only 1-D coordinates were read: time, lat, lon of the files whose rows fit (the good ones and x_lat,
    # whose rows cannot tell), never tas or pr, nor anything of a file its rows already rule out
    assert reads == 3 * (N_GOOD + 1)
    # what xarray makes of the good files alone
    theirs = xr.open_mfdataset(sorted(ensemble["good"]), combine="by_coords")
    xr.testing.assert_identical(ds, theirs)


def test_open_mfdataset_errors_raise_and_variables(ensemble: dict[str, Any]) -> None:
    cat = ensemble["cat"].search(path="*/hist/*")
    with pytest.raises(ValueError, match="x_dtype.nc: tas: dtype"):
        cat.open_mfdataset(concat_dim="time", errors="raise")
    ds, skipped = cat.open_mfdataset("tas", concat_dim="time")
    assert set(ds.data_vars) == {"tas"}
    assert "x_nopr.nc" not in set(skipped["path"].map(os.path.basename))  # pr is not asked for
    assert len(ds.time) == 3 * (N_GOOD + 1)  # ... so that file fits
    empty, skipped = ensemble["cat"].search(path="*/x_corrupt.nc").open_mfdataset()
    assert empty is None and len(skipped) == 1
    with pytest.raises(ValueError, match="no variable of these files has the dimension 'member'"):
        cat.open_mfdataset(concat_dim="member")


def test_to_dataset_dict_by_attribute(ensemble: dict[str, Any]) -> None:
    dsets, skipped = ensemble["cat"].to_dataset_dict(groupby=["experiment_id"], concat_dim="time")
    assert set(dsets) == {"hist", "ssp585"}
    ssp = dsets["ssp585"]
    np.testing.assert_array_equal(ssp.tas.values, _expected(ensemble["scen"]))
    assert str(ssp.time.values[0])[:10] == "2001-01-01"  # each file's own time units
    assert set(skipped.loc[skipped["key"] == "hist", "path"].map(os.path.basename)) >= {"x_dtype.nc", "x_units.nc"}
    assert "None" in set(skipped["key"])  # the corrupt file has no attributes: a group of its own


def test_to_intake_esm_opens_with_intake_esm(ensemble: dict[str, Any], tmp_path: Path) -> None:
    import intake_esm  # the test extra
    good = ensemble["cat"].search(path=["tas_*.nc"])
    written = good.to_intake_esm(tmp_path / "ens", concat_dim="time")
    assert written == str(tmp_path / "ens.json") and (tmp_path / "ens.csv").exists()
    # threaded=False: xarray's netcdf4 engine reads metadata unlocked; netCDF-C in parallel threads crashes
    col = intake_esm.esm_datastore(written, threaded=False)
    df = col.df
    assert len(df) == 2 * (N_GOOD + 3)  # tas and pr of each file; coordinates are no variables
    assert set(df["variable"]) == {"tas", "pr"} and set(df["format"]) == {"netcdf"}
    assert set(df["experiment_id"]) == {"hist", "ssp585"} and set(df["dtype"]) == {"<f4", "<i2"}
    assert set(df.loc[df["variable"] == "tas", "units"]) == {"K"}
    sub = col.search(experiment_id="hist", variable="tas")
    assert len(sub.df) == N_GOOD
    dsets = sub.to_dataset_dict(xarray_open_kwargs={"engine": "netcdf4"}, progressbar=False, threaded=False)
    (ds,) = dsets.values()
    assert ds.tas.shape == (3 * N_GOOD, 4, 5)
    np.testing.assert_array_equal(ds.tas.values, _expected(ensemble["good"]))
    # the same table as Parquet
    col = intake_esm.esm_datastore(good.to_intake_esm(tmp_path / "p.json", table_format="parquet"), threaded=False)
    assert len(col.df) == len(df)


def test_drift_lists_differences_and_predicts_the_combines(ensemble: dict[str, Any]) -> None:
    report = ensemble["cat"].drift(group_by=["experiment_id"])
    d = report.differences
    d = d.assign(file=d["path"].map(os.path.basename))
    hist = d[d["group"] == "hist"]
    got = {(r["file"], r["variable"], r["aspect"]): (r["value"], r["majority"]) for r in hist.to_dict("records")}
    assert got[("x_dtype.nc", "tas", "dtype")] == ("<f8", "<f4")
    assert got[("x_units.nc", "tas", "units")] == ("degC", "K")
    assert got[("x_shape.nc", "tas", "shape")] == ("[6, 5]", "[4, 5]")
    assert got[("x_chunks.nc", "tas", "chunks")] == ("[2, 5]", "[4, 5]")
    assert got[("x_nopr.nc", "pr", "missing variable")][0] == "absent"
    # the dtype file's fill value is a float64 -999: same JSON, no attribute drift; nothing else differs
    assert {f for f, _, _ in got} == {"x_dtype.nc", "x_units.nc", "x_shape.nc", "x_chunks.nc", "x_nopr.nc"}
    assert set(d.loc[d["group"] == "ssp585", "file"]) == set()
    corrupt = d[d["aspect"] == "error"]
    assert list(corrupt["file"]) == ["x_corrupt.nc"] and list(corrupt["group"]) == ["None"]
    p = report.predictions.set_index("group")
    assert p.loc["hist", "concat_dim"] == "time" and p.loc["hist", "files"] == N_GOOD + 6
    assert p.loc["hist", "xarray_open_mfdataset"].startswith("fails: variables ['pr'] are missing")
    assert "dtype of ['tas'] differs" in p.loc["hist", "xarray_open_mfdataset"]
    assert p.loc["hist", "catalog_open_mfdataset"].startswith(f"combines {N_GOOD + 1} of {N_GOOD + 6} files, leaves out 5")
    assert p.loc["ssp585", "xarray_open_mfdataset"] == "combines"
    assert p.loc["None", "xarray_open_mfdataset"].startswith("fails: 1 file(s)")
    # the prediction holds: xarray fails on the hist files, ours leaves out what the report names
    hist_paths = sorted(ensemble["cat"].search(attrs={"experiment_id": "hist"}).to_pandas("files")["path"])
    with pytest.raises(ValueError):
        xr.open_mfdataset(hist_paths, combine="by_coords", join="outer").load()
    _, skipped = ensemble["cat"].search(attrs={"experiment_id": "hist"}).open_mfdataset(concat_dim="time")
    assert set(skipped["path"].map(os.path.basename)) == {f for f, _, _ in got} | {"x_lat.nc"}


def test_drift_cli(ensemble: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from metaextract_dask.cli import main

    assert main(["drift", ensemble["cat"].path, "--group-by", "experiment_id", "--concat-dim", "time"]) == 0
    out = capsys.readouterr().out
    assert "group 'hist': 12 files, 5 differ from the majority (concat dim 'time')" in out
    assert "x_units.nc: tas: units degC (majority: K)" in out
    assert main(["drift", ensemble["cat"].path, "--json", "--no-attrs"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the corrupt file is a netcdf4 error row (its netCDF-C marker is in the bytes left), in its group's predictions
    assert {r["group"] for r in data["predictions"]} == {"netcdf4"}
    (pred,) = data["predictions"]
    assert pred["files"] == 16 and "1 file(s) or array(s) cannot be read" in pred["xarray_open_mfdataset"]
    assert main(["drift", str(ensemble["root"])]) == 1  # not a catalog: a message, no traceback
    assert "not a metaextract catalog" in capsys.readouterr().err


def test_coordinate_cache_opens_no_file_the_second_time(tmp_path: Path, client: Any) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        write_member(root / f"m{i}.nc", i)
    cat = scan([root], tmp_path / "cat", client=client)
    before = ArrayProxy.reads
    first, _ = cat.open_mfdataset(concat_dim="time")
    assert ArrayProxy.reads - before == 3 * 3  # time, lat, lon of each file
    parts = list((tmp_path / "cat" / "_coords").iterdir())
    assert len(parts) == 1 and (parts[0].stat().st_mode & 0o777) == 0o600  # private, as the catalog
    before = ArrayProxy.reads
    again, _ = cat.open_mfdataset(concat_dim="time")
    assert ArrayProxy.reads == before  # every coordinate from the cache: no file opened
    xr.testing.assert_identical(again, first)
    before = ArrayProxy.reads
    cat.open_mfdataset(concat_dim="time", cache_coords=False)
    assert ArrayProxy.reads - before == 9
    # a file rewritten with other times (and re-scanned) is read again; the others still come from the cache
    os.remove(root / "m2.nc")
    write_member(root / "m2.nc", 7)
    os.utime(root / "m2.nc", (1, 1))  # another mtime for sure
    cat = scan([root], tmp_path / "cat", client=client)
    before = ArrayProxy.reads
    ds, skipped = cat.open_mfdataset(concat_dim="time")
    assert ArrayProxy.reads - before == 3 and len(skipped) == 0
    assert [str(t)[:10] for t in ds.time.values[-3:]] == ["2000-01-22", "2000-01-23", "2000-01-24"]
    np.testing.assert_array_equal(ds.tas.values[-1, 0, 1], 7000 + 2 * 20 + 1)


def test_open_mfdataset_of_a_group_equals_xarrays(catalog: Any, sample_tree: Any) -> None:
    root, _ = sample_tree
    path = root / "netcdf/climate_cf.nc"
    one = catalog.search(path="*/climate_cf.nc")
    ds, skipped = one.open_mfdataset(group="/forecast", concat_dim="step")
    assert len(skipped) == 0
    xr.testing.assert_identical(ds, xr.open_dataset(path, group="forecast", chunks={}))
    root_ds, _ = one.open_mfdataset(concat_dim="time")
    xr.testing.assert_identical(root_ds, xr.open_dataset(path, chunks={}))


def test_to_dataset_dict_of_mixed_formats_never_raises(catalog: Any) -> None:
    dsets, skipped = catalog.to_dataset_dict(groupby=["format"], concat_dim="time")
    assert {"netcdf4", "netcdf3"} <= set(dsets)
    assert dsets["netcdf4"].tas.shape == (12, 18, 36)
    # DICOM pixels have no time dimension: that group is listed, with the reason, not raised
    dicom = skipped[skipped["key"] == "dicom"]
    assert len(dicom) > 1 and dicom["reason"].str.contains("no variable of these files has the dimension 'time'").all()
    assert "dicom" not in dsets


def test_a_file_broken_after_the_scan_is_left_out(tmp_path: Path, client: Any) -> None:
    root = tmp_path / "data"
    root.mkdir()
    parts = {root / f"m{i}.nc": write_member(root / f"m{i}.nc", i) for i in range(3)}
    cat = scan([root], tmp_path / "cat", client=client)
    broken = root / "m1.nc"
    broken.write_bytes(broken.read_bytes()[:2000])  # truncated since the catalog was written
    ds, skipped = cat.open_mfdataset(concat_dim="time", cache_coords=False)
    assert list(skipped["path"]) == [str(broken)]
    assert skipped["reason"].iloc[0].startswith("opening its arrays: ")
    del parts[broken]
    np.testing.assert_array_equal(ds.tas.values, _expected(parts))
