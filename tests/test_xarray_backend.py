"""The xarray engine (metaextract_dask.xarray_backend): open_dataset / open_datatree / open_mfdataset through it,
for every format, against xarray's own readers and the project's open_arrays.

The engine="metaextract" tests need the package's entry point installed (``pip install -e .``); the same code
is tested through the class itself (xarray accepts the BackendEntrypoint subclass as engine) either way.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import netCDF4
import numpy as np
import pytest
import xarray as xr

from metaextract_dask.arrays import open_arrays, open_dicom_series
from metaextract_dask.xarray_backend import MetaextractBackendEntrypoint

ENGINE = MetaextractBackendEntrypoint


def _write_month(path: Path, month: int, *, units: str = "K") -> np.ndarray:
    """A small CF file: 3 daily steps of a (4, 5) field, times in days since 2000-01-01."""
    values = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5) + 100 * month
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 4)
        nc.createDimension("lon", 5)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(3) + 3 * month
        nc.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-45, 45, 4)
        nc.createVariable("lon", "f4", ("lon",))[:] = np.linspace(0, 288, 5)
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), chunksizes=(1, 4, 5), fill_value=np.float32(-999))
        v.units = units
        v[:] = values
    return values


def test_engine_is_declared_and_installed() -> None:
    """pyproject.toml declares the engine; the installed package's metadata has it (after pip install -e .)."""
    import tomllib

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["xarray.backends"]
    target = "metaextract_dask.xarray_backend:MetaextractBackendEntrypoint"
    assert declared == {"metaextract": target}
    assert {ep.name: ep.value for ep in entry_points(group="xarray.backends")}.get("metaextract") == target
    assert "metaextract" in xr.backends.list_engines()


@pytest.mark.parametrize("engine", [ENGINE, "metaextract"], ids=["class", "entry-point"])
def test_open_dataset_every_format(engine: Any, sample_tree: Any) -> None:
    root, _ = sample_tree
    nc = xr.open_dataset(root / "netcdf/climate_cf.nc", engine=engine, chunks={})
    theirs = xr.open_dataset(root / "netcdf/climate_cf.nc", chunks={})
    xr.testing.assert_identical(nc, theirs)  # values, dims, coords, attrs
    assert isinstance(nc.tas.data, da.Array)
    h5 = xr.open_dataset(root / "hdf5/experiment.h5", engine=engine, group="timeseries", chunks={})
    xr.testing.assert_identical(h5, open_arrays(root / "hdf5/experiment.h5", group="/timeseries"))
    fits = xr.open_dataset(root / "fits/field_image.fits", engine=engine, chunks={})
    assert {"HDU0", "HDU2"} <= set(fits.data_vars) and fits.HDU0.lon.attrs["units"] == "deg"
    xr.testing.assert_identical(fits.compute(), open_arrays(root / "fits/field_image.fits").compute())
    ct = xr.open_dataset(root / "dicom/ct_series", engine=engine, chunks={})
    xr.testing.assert_identical(ct.PixelData.compute(), open_dicom_series(root / "dicom/ct_series").compute())
    zr = xr.open_dataset(root / "zarr/ocean_v2.zarr", engine=engine, chunks={})
    xr.testing.assert_identical(zr, xr.open_dataset(root / "zarr/ocean_v2.zarr", engine="zarr", chunks={},
                                                    consolidated=False))
    tree = xr.open_datatree(root / "netcdf/climate_cf.nc", engine=engine, chunks={})
    assert tree["forecast"].t2m.shape == (8, 18, 36)
    raw = xr.open_dataset(root / "netcdf/climate_cf.nc", engine=engine, decode_cf=False, chunks={})
    assert raw.time.dtype.kind == "f" and raw.psl.dtype == np.int16


def test_chunks_are_ours_and_guess_can_open(sample_tree: Any) -> None:
    root, _ = sample_tree
    with dask.config.set({"metaextract.chunk-target": 8192}):
        ds = xr.open_dataset(root / "netcdf/climate_cf.nc", engine=ENGINE, chunks={})
    # adaptive: whole multiples of the on-disk (6, 9, 18) chunks of about 8 KiB
    assert ds.tas.chunks == ((6, 6), (9, 9), (18, 18)) and ds.tas.encoding["chunks"] == (6, 9, 18)
    entry = ENGINE()
    assert entry.guess_can_open(str(root / "fits/field_image.fits"))
    assert entry.guess_can_open(str(root / "dicom/ct_series"))
    assert not entry.guess_can_open(str(root / "misfits/random.bin"))
    assert not entry.guess_can_open(str(root / "no/such/file.nc"))


@pytest.mark.parametrize("engine", [ENGINE, "metaextract"], ids=["class", "entry-point"])
def test_open_mfdataset_through_the_engine(engine: Any, tmp_path: Path) -> None:
    paths, parts = [], []
    for month in range(4):
        paths.append(tmp_path / f"m{month}.nc")
        parts.append(_write_month(paths[-1], month))
    ds = xr.open_mfdataset(paths, engine=engine, combine="by_coords")
    assert ds.tas.shape == (12, 4, 5) and isinstance(ds.tas.data, da.Array)
    np.testing.assert_array_equal(ds.tas.values, np.concatenate(parts))
    assert str(ds.time.values[3])[:10] == "2000-01-04"
    ds = ds.load()
    # Our h5py handles on these files are closed first: netCDF-C and h5py each bundle their own libhdf5, and
    # the second library to open a file another holds open can fail ("NetCDF: HDF error").
    from metaextract_dask.formats.handles import close_cached_files

    close_cached_files()
    theirs = xr.open_mfdataset(paths, combine="by_coords")
    xr.testing.assert_identical(ds, theirs)
