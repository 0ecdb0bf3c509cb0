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


def test_netcdf4_told_from_hdf5_in_one_open_without_head_markers(tmp_path) -> None:
    """A scan decides netCDF-4 vs plain HDF5 from the marker attributes in the head bytes; where they are not
    in the head (here: a head of 64 bytes), the HDF5 reader's own open decides and hands a netCDF-4 file to
    the netCDF backend. Both ways give the same rows; a plain HDF5 file stays hdf5."""
    import dask.config
    import h5py
    import netCDF4

    from metaextract_dask.discover import discover
    from metaextract_dask.extract import extract_batch

    nc = tmp_path / "a.nc"
    with netCDF4.Dataset(nc, "w") as ds:
        ds.createDimension("x", 3)
        ds.createVariable("x", "f8", ("x",))[:] = [1.0, 2.0, 3.0]
        ds.createVariable("v", "i4", ("x",), fill_value=-1)[:] = [4, 5, 6]
        ds.title = "netCDF-4 file"
    h5 = tmp_path / "b.h5"
    with h5py.File(h5, "w") as f:
        f["d"] = np.arange(4)
    entries = discover([tmp_path])

    def rows() -> dict[str, tuple]:
        tables = extract_batch(entries)
        files = tables["files"].to_pydict()
        arrays = tables["arrays"].to_pydict()
        return {p: (fmt, st, sorted((n, d, a) for q, n, d, a in zip(arrays["path"], arrays["name"], arrays["dims"],
                                                                    arrays["attrs"]) if q == p))
                for p, fmt, st in zip(files["path"], files["format"], files["status"])}

    assert b"_NCProperties" in nc.read_bytes()[:8192]
    with_head = rows()
    with dask.config.set({"metaextract.scan.sniff-bytes": 64}):
        in_read = rows()
    assert in_read == with_head
    assert with_head[str(nc)][:2] == ("netcdf4", "ok") and with_head[str(h5)][:2] == ("hdf5", "ok")
    assert [n for n, _, _ in with_head[str(nc)][2]] == ["/v", "/x"]
    assert [d for _, d, _ in with_head[str(nc)][2]] == [["x"], ["x"]]
