"""The netCDF backend (netCDF-3 and netCDF-4) against the conformance kit."""

from __future__ import annotations

import numpy as np
import pytest

from metaextract_dask.testing import FormatBackendTests, reference_files


class TestNetCDFBackend(FormatBackendTests):
    backend_name = "netcdf"

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
        import netCDF4

        path = tmp_path_factory.mktemp("netcdf") / "groups.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("t", None)
            ds.createDimension("x", 6)
            v = ds.createVariable("v", "i2", ("t", "x"), zlib=True, chunksizes=(2, 3), fill_value=-9)
            v[0:5, :] = np.arange(30).reshape(5, 6)
            g = ds.createGroup("inner")
            g.createDimension("y", 4)
            g.createVariable("w", ">f8", ("y",), endian="big")[:] = [1.5, 2.5, np.nan, 4.0]
        return [*reference_files("netcdf3", "netcdf4"), str(path)]
