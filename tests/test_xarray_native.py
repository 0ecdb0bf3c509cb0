"""xarray-native views (metaextract_dask.datasets via arrays.open_array/open_arrays/open_datatree) against
xarray's own readers on the sample files, FITS WCS and DICOM millimetre coordinates."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from metaextract_dask.arrays import ArrayProxy, open_array, open_arrays, open_datatree, open_dicom_series
from metaextract_dask.jsonutil import to_jsonable

# (file, xarray engine) of every sample netCDF/HDF5/Zarr file; plain HDF5 through netCDF-C, which reads it
HIERARCHICAL = [("netcdf/climate_cf.nc", "netcdf4"), ("netcdf/stations_classic.nc", "netcdf4"),
                ("zarr/ocean_v2.zarr", "zarr"), ("zarr/ocean_v3.zarr", "zarr"), ("hdf5/experiment.h5", "netcdf4")]


def _theirs_tree(path: Path, engine: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: "no consolidated metadata"
        return xr.open_datatree(path, engine=engine, chunks={})


def _assert_same_variable(ours: xr.Variable, theirs: xr.Variable, where: str, *, phony: bool) -> None:
    assert ours.shape == theirs.shape, where
    if not phony:  # netCDF-C names unlabelled HDF5 axes phony_dim_<n>, we dim_<axis>: sizes still agree
        assert ours.dims == theirs.dims, where
    assert to_jsonable(ours.attrs) == to_jsonable(theirs.attrs), where
    if ours.dtype.names:
        # (netCDF-C pads compound types to C alignment; h5py keeps the stored packed layout: fields agree)
        assert [(f, ours.dtype[f]) for f in ours.dtype.names] == [(f, theirs.dtype[f]) for f in theirs.dtype.names]
        a, b = np.asarray(ours.values), np.asarray(theirs.values)
        for field in ours.dtype.names:
            np.testing.assert_array_equal(a[field], b[field], err_msg=where)
        return
    a, b = np.asarray(ours.values), np.asarray(theirs.values)
    fill = ours.encoding.get("_FillValue")
    if phony and fill is not None and "_FillValue" not in theirs.encoding:
        # an HDF5 fill value set by the writer (creation property) masks here; netCDF-C does not report it
        b = np.where(b == fill, np.nan, b).astype(a.dtype)
    if b.dtype.kind == "U":  # netCDF-C gives HDF5 variable-length strings as fixed-width str
        a = a.astype(b.dtype)
    assert a.dtype == b.dtype, where
    if a.dtype.kind in "fc":
        np.testing.assert_array_equal(a, b, err_msg=where)  # NaN == NaN for assert_array_equal
    else:
        assert np.array_equal(a, b), where


@pytest.mark.parametrize(("rel", "engine"), HIERARCHICAL, ids=[r for r, _ in HIERARCHICAL])
def test_datatree_equals_xarrays(rel: str, engine: str, sample_tree: Any) -> None:
    root, _ = sample_tree
    ours = open_datatree(root / rel)
    theirs = _theirs_tree(root / rel, engine)
    phony = rel.endswith(".h5")
    assert sorted(ours.groups) == sorted(theirs.groups)
    n = 0
    for group in theirs.groups:
        o, t = ours[group].to_dataset(inherit=False), theirs[group].to_dataset(inherit=False)
        assert sorted(o.variables) == sorted(t.variables), group
        assert sorted(o.coords) == sorted(t.coords), group
        assert set(o.xindexes) == set(t.xindexes), group
        assert to_jsonable(o.attrs) == to_jsonable(t.attrs), group
        for name in t.variables:
            _assert_same_variable(o[name].variable, t[name].variable, f"{rel}:{group}/{name}", phony=phony)
            if name in o.data_vars:
                assert isinstance(o[name].data, da.Array), name
            n += 1
    assert n >= 3


@pytest.mark.parametrize(("rel", "engine"), HIERARCHICAL, ids=[r for r, _ in HIERARCHICAL])
def test_open_arrays_equals_open_dataset(rel: str, engine: str, sample_tree: Any) -> None:
    root, _ = sample_tree
    ours = open_arrays(root / rel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = xr.open_dataset(root / rel, engine=engine, chunks={})
    assert sorted(ours.variables) == sorted(theirs.variables)
    assert sorted(ours.coords) == sorted(theirs.coords)
    assert to_jsonable(ours.attrs) == to_jsonable(theirs.attrs)
    for name in theirs.variables:
        _assert_same_variable(ours[name].variable, theirs[name].variable, f"{rel}:{name}", phony=rel.endswith(".h5"))


def test_cf_file_reads_as_xarray_users_expect(sample_tree: Any) -> None:
    root, _ = sample_tree
    path = root / "netcdf/climate_cf.nc"
    ds = open_arrays(path)
    assert set(ds.data_vars) == {"tas", "psl"} and list(ds.indexes) == ["time", "lat", "lon"]
    assert ds.time.dtype.kind == "M" and str(ds.time.values[0])[:10] == "2000-01-16"
    near = ds.tas.sel(lat=0, method="nearest")  # an index: selection by coordinate value works
    assert near.lat.item() in (-5.0, 5.0)
    # "tas" and "/tas" are the same array; the array itself is lazy and not read by opening
    with dask.config.set(scheduler="synchronous"):
        before = ArrayProxy.reads
        a = open_array(path, "tas")
        opened = ArrayProxy.reads
        # only 1-D index coordinates were read: time, lat, lon, and time's first and last values once more
        # (xarray's time decoder reads them to choose the dtype)
        assert opened - before == len(a.indexes) + 2
        b = open_array(path, "/tas")
        np.testing.assert_array_equal(a.values, b.values)
        assert ArrayProxy.reads > opened
    assert a.name == "tas" and a.encoding["variable"] == "/tas" and a.encoding["source"] == str(path)
    t2m = open_array(path, "/forecast/t2m")
    assert list(t2m.indexes) == ["step", "lat", "lon"]  # lat/lon found in the parent group (netCDF scoping)
    raw = open_array(path, "tas", decode=False)
    assert raw.time.dtype.kind == "f" and "_FillValue" in raw.attrs
    partial = open_array(path, "tas", decode={"decode_times": False})
    assert partial.time.dtype.kind == "f" and np.isnan(partial.values).sum() == 7


def test_group_argument_and_drop_variables(sample_tree: Any) -> None:
    root, _ = sample_tree
    path = root / "netcdf/climate_cf.nc"
    fc = open_arrays(path, group="forecast")
    theirs = xr.open_dataset(path, group="forecast", chunks={})
    assert list(fc.data_vars) == ["t2m"] and fc.attrs == theirs.attrs
    np.testing.assert_array_equal(fc.t2m.values, theirs.t2m.values)
    assert "psl" not in open_arrays(path, drop_variables="psl")


def test_fits_wcs_coordinates_are_lazy_and_right(sample_tree: Any) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    root, _ = sample_tree
    path = root / "fits/field_image.fits"
    img = open_array(path, "HDU0", memory_limit=40_000)  # several blocks
    assert img.lon.dims == ("y", "x") and img.lat.attrs["units"] == "deg"
    assert isinstance(img.lon.data, da.Array) and img.lon.data.npartitions > 1
    assert img.lon.attrs["long_name"] == "RA" and img.lat.attrs["long_name"] == "DEC"
    with fits.open(path) as hdul:
        wcs = WCS(hdul[0].header)
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    lon, lat = wcs.pixel_to_world_values(xx, yy)
    np.testing.assert_allclose(img.lon.values, lon, rtol=0, atol=1e-9)
    np.testing.assert_allclose(img.lat.values, lat, rtol=0, atol=1e-9)
    # at the reference pixel (CRPIX 64.5, 48.5, 1-based) the world position is CRVAL
    assert abs(float(img.lat.interp(y=47.5, x=63.5)) - 2.2) < 1e-6
    # the HDU by EXTNAME (any case) is the HDU by index
    by_name = open_array(path, "sci_rice")
    np.testing.assert_array_equal(by_name.values, open_array(path, "HDU2").values)
    assert "lon" not in by_name.coords  # no WCS keywords in that header
    ds = open_arrays(path)
    assert ds["HDU0"].lon.shape == (ny, nx)


def test_dicom_series_millimetre_coordinates(sample_tree: Any) -> None:
    import pydicom

    root, _ = sample_tree
    vol = open_dicom_series(root / "dicom/ct_series")
    first = pydicom.dcmread(vol.path.values[0], stop_before_pixels=True)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    np.testing.assert_allclose(vol.y.values, np.arange(vol.sizes["row"]) * row_mm)
    np.testing.assert_allclose(vol.x.values, np.arange(vol.sizes["column"]) * col_mm)
    assert vol.x.attrs["units"] == vol.y.attrs["units"] == vol.z.attrs["units"] == "mm"
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    for z, p in zip(vol.z.values, vol.path.values):
        ipp = np.asarray(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient, dtype=float)
        assert z == pytest.approx(float(normal @ ipp))
    assert np.all(np.diff(vol.z.values) > 0)
