"""The netCDF backend's own readers (netCDF-3 headers, netCDF-4 through h5py) against netCDF4-python's records.

Every file here is written by netCDF4-python, scipy or xarray (or is one of those, damaged); the fast readers
must give exactly the records netCDF4-python gives, or decline the file so that netCDF4-python reads it.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from metaextract_dask.formats import netcdf as N
from metaextract_dask.testing import reference_files

netCDF4 = pytest.importorskip("netCDF4")


def _same(path: str | Path) -> None:
    """The fast reader reads `path` (does not decline) and gives netCDF4-python's records."""
    fast = N._read_fast(str(path))
    assert fast is not None, f"{path}: the fast reader declined"
    assert fast == N._read_netcdf4python(str(path))


def _equal_or_declined(path: str | Path) -> bool:
    """The fast reader's records equal netCDF4-python's, or it declined; True where it read the file."""
    fast = N._read_fast(str(path))
    if fast is None:
        return False
    assert fast == N._read_netcdf4python(str(path)), path
    return True


# --- netCDF-3 ------------------------------------------------------------------------------------------------

_NC3_FORMATS = ("NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA")
_CLASSIC_TYPES = ("i1", "S1", "i2", "i4", "f4", "f8")
_CDF5_TYPES = ("u1", "u2", "u4", "i8", "u8")


def _write_nc3(path: Path, fmt: str, nrec: int = 3) -> None:
    types = _CLASSIC_TYPES + (_CDF5_TYPES if fmt == "NETCDF3_64BIT_DATA" else ())
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension("time", None)
        ds.createDimension("x", 3)
        ds.createDimension("y", 5)
        ds.createDimension("empty", 0 if False else 1)
        ds.title = "h\u00e9llo w\u00f6rld \u2603"
        ds.history = ""
        ds.setncattr("empty_ints", np.array([], "i4"))
        ds.setncattr("pi", np.float64(np.pi))
        ds.setncattr("nan", np.float32("nan"))
        ds.setncattr("many", np.arange(7, dtype="f4") / 3)
        for code in types:
            if code != "S1":
                ds.setncattr(f"one_{code}", np.array([np.iinfo(code).max if code[0] in "iu" else 1.5], code))
                ds.setncattr(f"two_{code}", np.array([1, 2], code))
        for code in types:
            fill = b"z" if code == "S1" else np.array(7, code)
            v = ds.createVariable(f"v_{code}", code, ("x", "y"), fill_value=fill)
            v.units = "m s-1"
            v.long_name = f"a {code} variable"
            if code != "S1":
                v.valid_range = np.array([0, 9], code)
            r = ds.createVariable(f"r_{code}", code, ("time", "x"))
            r.units = np.float32(3.0)  # not text: no units column
            if code == "S1":
                v[:] = np.full((3, 5), b"q")
                r[:nrec] = np.full((nrec, 3), b"w")
            else:
                v[:] = np.arange(15).reshape(3, 5).astype(code)
                r[:nrec] = np.ones((nrec, 3), code)
        ds.createVariable("scalar", "f8", ())[...] = 4.5
        ds.createVariable("rec1d", "i1", ("time",))
        ds.createVariable("time", "f8", ("time",))[:nrec] = np.arange(nrec)
        ds.createVariable("x", "i4", ("x",))[:] = [1, 2, 3]
        ds.createVariable("\u00e9t\u00e9", "i2", ("empty",))[:] = [1]


@pytest.mark.parametrize("fmt", _NC3_FORMATS)
@pytest.mark.parametrize("nrec", [0, 1, 17])
def test_nc3_every_type_and_attribute_kind(tmp_path: Path, fmt: str, nrec: int) -> None:
    path = tmp_path / "all.nc"
    _write_nc3(path, fmt, nrec)
    _same(path)
    rec = N._read_fast(str(path))
    assert rec.format == "netcdf3" and rec.format_version == fmt
    assert rec.groups["/"] == {"dims": {"time": nrec, "x": 3, "y": 5, "empty": 1}, "unlimited": ["time"]}
    assert rec.attrs["title"] == "h\u00e9llo w\u00f6rld \u2603" and rec.attrs["empty_ints"] == []
    rows = {r["name"]: r for r in rec.arrays}
    assert rows["/r_i2"]["shape"] == [nrec, 3] and rows["/r_i2"]["dtype"] == ">i2"
    assert rows["/v_S1"]["fill_value"] == '"z"' and rows["/v_f4"]["units"] == "m s-1"
    assert rows["/scalar"]["shape"] == [] and rows["/scalar"]["nbytes"] == 8
    assert [r["name"] for r in rec.arrays][-4:] == ["/rec1d", "/time", "/x", "/\u00e9t\u00e9"]


def test_nc3_without_record_dimension_or_anything(tmp_path: Path) -> None:
    with netCDF4.Dataset(tmp_path / "fixed.nc", "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("a", 2)
        ds.createDimension("b", 3)
        ds.createVariable("m", "i1", ("a", "b"))[:] = 1  # 6 bytes, padded to 8
        ds.createVariable("n", "i1", ("b",))[:] = 2
    with netCDF4.Dataset(tmp_path / "nothing.nc", "w", format="NETCDF3_64BIT_OFFSET"):
        pass
    with netCDF4.Dataset(tmp_path / "onerec.nc", "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createDimension("b", 3)
        ds.createVariable("only", "i1", ("t", "b"))[:5] = 1  # one record variable: records not padded
    for name in ("fixed.nc", "nothing.nc", "onerec.nc"):
        _same(tmp_path / name)
    assert N._read_fast(str(tmp_path / "nothing.nc")).groups == {"/": {"dims": {}, "unlimited": []}}


def test_nc3_scipy_and_xarray_files(tmp_path: Path) -> None:
    """Char attributes with trailing and inner NULs and invalid UTF-8 (written by scipy as given), and an
    xarray dataset written as netCDF-3 by both of its writers."""
    from scipy.io import netcdf_file

    with netcdf_file(tmp_path / "scipy.nc", "w", version=2) as f:
        f.createDimension("t", None)
        f.createDimension("x", 4)
        f.nul = b"ab\x00\x00"
        f.inner = b"a\x00b"
        f.bad = b"caf\xe9 \xff"
        f.empty = b""
        v = f.createVariable("v", "f4", ("t", "x"))
        v[:] = np.zeros((6, 4), "f4")
        v._FillValue = np.float32(-1)
        w = f.createVariable("w", "i2", ("t",))
        w[:] = np.arange(6)
        w.units = b"K\x00"
        f.createVariable("c", "c", ("x",))[:] = np.array(list(b"abcd"), "S1")
        f.variables["c"]._FillValue = b"\x00"
    _same(tmp_path / "scipy.nc")
    rec = N._read_fast(str(tmp_path / "scipy.nc"))
    assert rec.attrs["nul"] == "ab" and rec.attrs["inner"] == "ab" and rec.attrs["bad"] == "caf\ufffd \ufffd"
    assert {r["name"]: r["units"] for r in rec.arrays}["/w"] == "K"

    xr = pytest.importorskip("xarray")
    ds = xr.Dataset({"temp": (("time", "lat"), np.random.default_rng(0).random((4, 3)), {"units": "K"})},
                    coords={"time": np.arange(4), "lat": [10.0, 20.0, 30.0]}, attrs={"source": "test"})
    for engine, fmt in (("netcdf4", "NETCDF3_64BIT"), ("scipy", "NETCDF3_CLASSIC")):
        path = tmp_path / f"xr_{engine}.nc"
        ds.to_netcdf(path, engine=engine, format=fmt, unlimited_dims=["time"])
        _same(path)


def test_nc3_sample_files() -> None:
    paths = [p for p in reference_files("netcdf3", "netcdf4") if open(p, "rb").read(3) == b"CDF"]
    assert paths
    for path in paths:
        _same(path)


def test_nc3_long_header_is_read_again_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("x", 2)
        for i in range(300):
            v = ds.createVariable(f"variable_number_{i}", "f4", ("x",))
            v.setncattr("description", "x" * 200)
    assert path.stat().st_size > N._NC3_HEAD
    _same(path)


def test_nc3_damaged_headers_are_read_identically_or_declined(tmp_path: Path) -> None:
    """Bytes of a header changed at random or cut: what the fast reader reads is what netCDF4-python reads
    (and netCDF4-python opens it); the rest it declines, so their errors stay netCDF4-python's."""
    good = tmp_path / "good.nc"
    _write_nc3(good, "NETCDF3_CLASSIC", 2)
    data = good.read_bytes()
    header_end = N._nc3_header_end(data)
    rng = random.Random(7)
    path = tmp_path / "bad.nc"
    read = declined = 0
    for i in range(400):
        buf = bytearray(data)
        if i % 4 == 0:
            buf = buf[:rng.randrange(4, len(buf))]
        else:
            for _ in range(rng.choice((1, 1, 2, 3))):
                buf[rng.randrange(4, header_end)] = rng.choice((0, 1, 2, 0x7F, 0xFF, rng.randrange(256)))
        path.write_bytes(bytes(buf))
        if _equal_or_declined(path):
            read += 1
        else:
            declined += 1
    assert read > 50 and declined > 50


def test_nc3_fallback_keeps_errors(tmp_path: Path) -> None:
    from metaextract_dask.formats import get_backend

    backend = get_backend("netcdf")
    good = tmp_path / "good.nc"
    _write_nc3(good, "NETCDF3_64BIT_OFFSET", 4)
    cut = tmp_path / "cut.nc"
    cut.write_bytes(good.read_bytes()[:200])  # inside the header
    streaming = tmp_path / "streaming.nc"
    streaming.write_bytes(good.read_bytes()[:4] + b"\xff\xff\xff\xff" + good.read_bytes()[8:])
    nonsense = tmp_path / "nonsense.nc"
    nonsense.write_bytes(b"CDF\x01" + bytes(range(200)))
    for path in (cut, streaming, nonsense, tmp_path / "missing.nc"):
        assert N._read_fast(str(path)) is None
        try:
            reference: object = N._read_netcdf4python(str(path))
        except Exception as exc:
            reference = (type(exc), str(exc))
        try:
            ours: object = backend.read(str(path))
        except Exception as exc:
            ours = (type(exc), str(exc))
        assert ours == reference
    assert isinstance(reference, tuple) and reference[0] is FileNotFoundError
    data_cut = tmp_path / "data_cut.nc"
    data_cut.write_bytes(good.read_bytes()[:-50])  # the header whole, the last record short
    assert N._read_fast(str(data_cut)) is None
    assert backend.read(str(data_cut)) == N._read_netcdf4python(str(data_cut))


def test_plain_files_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """netCDF4-python is not used for plain files (so the fast path cannot silently stop being taken)."""
    from metaextract_dask.formats import get_backend

    paths = []
    for fmt in _NC3_FORMATS:
        paths.append(tmp_path / f"{fmt}.nc")
        _write_nc3(paths[-1], fmt, 2)
    expected = [N._read_netcdf4python(str(p)) for p in paths]

    def refuse(path: str) -> None:
        raise AssertionError(f"netCDF4-python read {path}")

    monkeypatch.setattr(N, "_read_netcdf4python", refuse)
    assert [get_backend("netcdf").read(str(p)) for p in paths] == expected
