"""Tests for the synthetic sample-tree generator (``metaextract_dask.sample``).

The manifest is the generator's own record of what it passed to the writing
libraries; here it is checked against what the real libraries read back.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pydicom
import pytest
import zarr
from astropy.io import fits
from astropy.wcs import WCS

from metaextract_dask.sample import generate, generate_many

FORMATS = {"hdf5", "netcdf4", "netcdf3", "zarr", "fits", "dicom", "binary"}
# Attributes that the libraries add on their own (not in the manifest).
H5_LIBRARY_ATTRS = {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Three small trees: seed 0 twice (determinism) and seed 1."""
    out = {}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        root = tmp_path_factory.mktemp(f"sample_{key}")
        out[key] = (root, generate(root, "small", seed=seed))
    return out


@pytest.fixture(scope="module")
def tree(trees: dict[str, tuple[Path, dict]]) -> tuple[Path, dict]:
    return trees["a"]


def _entry(manifest: dict, path: str) -> dict:
    (entry,) = [e for e in manifest["files"] if e["path"] == path]
    return entry


def _by_format(manifest: dict, fmt: str) -> list[dict]:
    return [e for e in manifest["files"] if e["format"] == fmt and e["status"] == "ok"]


def _same_dtype(on_disk: str, read: np.dtype) -> bool:
    """Compare dtypes ignoring byte order (libraries report native order)."""
    a = np.dtype(on_disk)
    return a.kind == read.kind and a.itemsize == read.itemsize


# --------------------------------------------------------------------------- #
# manifest / tree structure
# --------------------------------------------------------------------------- #
def test_manifest_structure(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    assert manifest["seed"] == 0 and manifest["preset"] == "small"
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert {e["format"] for e in manifest["files"]} == FORMATS
    paths = [e["path"] for e in manifest["files"]]
    assert len(paths) == len(set(paths))
    for e in manifest["files"]:
        p = root / e["path"]
        assert p.exists(), e["path"]
        assert "\\" not in e["path"] and not e["path"].startswith("/")
        assert e["status"] in {"ok", "error"}
        assert (p.is_dir()) == (e["format"] == "zarr")
        for a in e["arrays"]:
            assert set(a) >= {"name", "shape", "dtype", "dims", "chunks", "compression", "fill_value", "units", "attrs"}
    assert {e["path"].split("/")[0] for e in manifest["files"]} == {
        "hdf5", "netcdf", "zarr", "fits", "dicom", "misfits"
    }
    assert sum(e["format"] == "dicom" for e in manifest["files"]) == 7
    assert sum(e["format"] == "zarr" for e in manifest["files"]) == 2
    # Total size well under 20 MB.
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 20e6


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        generate(tmp_path / "x", "huge")
    assert not (tmp_path / "x").exists()


def _read_values(root: Path) -> dict[str, np.ndarray]:
    vals = {}
    with h5py.File(root / "hdf5/experiment.h5") as f:
        vals["h5_counts"] = f["instrument/detector/counts"][...]
        vals["h5_events"] = f["events/triggers"][...]
    with netCDF4.Dataset(root / "netcdf/climate_cf.nc") as nc:
        nc.set_auto_maskandscale(False)
        vals["nc_tas"] = nc["tas"][...]
        vals["nc_psl"] = nc["psl"][...]
    with netCDF4.Dataset(root / "netcdf/stations_classic.nc") as nc:
        vals["nc3_temp"] = nc["temperature"][...].data
    with fits.open(root / "fits/field_image.fits") as hdul:
        vals["fits_img"] = hdul[0].data.copy()
        vals["fits_comp"] = hdul[2].data.copy()
    vals["zarr_v3"] = zarr.open_group(root / "zarr/ocean_v3.zarr", mode="r")["analysis/anomaly"][...]
    vals["dicom"] = pydicom.dcmread(root / "dicom/mr_brain.dcm").pixel_array
    return vals


def test_deterministic(trees: dict[str, tuple[Path, dict]]) -> None:
    (ra, ma), (rb, mb) = trees["a"], trees["b"]
    assert ma == mb
    va, vb = _read_values(ra), _read_values(rb)
    for key in va:
        np.testing.assert_array_equal(va[key], vb[key], err_msg=key)
    # The libraries are deterministic for the options used: identical bytes.
    for e in ma["files"]:
        if e["format"] != "zarr":
            assert (ra / e["path"]).read_bytes() == (rb / e["path"]).read_bytes(), e["path"]


def test_different_seed_changes_values(trees: dict[str, tuple[Path, dict]]) -> None:
    (ra, ma), (rc, mc) = trees["a"], trees["c"]
    assert mc["seed"] == 1 and ma != mc
    assert [e["path"] for e in ma["files"]] == [e["path"] for e in mc["files"]]
    va, vc = _read_values(ra), _read_values(rc)
    for key in va:
        assert not np.array_equal(va[key], vc[key]), key
    assert _entry(ma, "dicom/mr_brain.dcm")["dicom"]["SOPInstanceUID"] != _entry(mc, "dicom/mr_brain.dcm")[
        "dicom"]["SOPInstanceUID"]


# --------------------------------------------------------------------------- #
# per-format spot checks against the real libraries
# --------------------------------------------------------------------------- #
def test_hdf5_matches_manifest(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    e = _entry(manifest, "hdf5/experiment.h5")
    with h5py.File(root / e["path"]) as f:
        assert f.attrs["title"] == e["attrs"]["title"]
        assert f.attrs["scan_number"] == e["attrs"]["scan_number"]
        np.testing.assert_array_equal(f.attrs["wavelengths_nm"], e["attrs"]["wavelengths_nm"])
        # np.bytes_ -> fixed-length ASCII; Python bytes -> vlen ASCII (read back as str).
        assert f.attrs["signature"] == e["attrs"]["signature"].encode()
        assert f.attrs.get_id("signature").dtype == np.dtype("S10")
        assert f["instrument/detector"].attrs["firmware"] == e["groups"]["/instrument/detector"]["attrs"]["firmware"]
        assert "instrument/detector" in f
        for gname, ginfo in e["groups"].items():
            assert set(f[gname].attrs) == set(ginfo["attrs"])
        kinds = set()
        for a in e["arrays"]:
            ds = f[a["name"]]
            assert list(ds.shape) == a["shape"], a["name"]
            if a["dtype"] == "compound":
                kinds.add("compound")
                assert [[n, s] for n, s in ds.dtype.descr] == a["fields"]
            elif a["dtype"] == "vlen-str":
                kinds.add("vlen")
                assert h5py.check_string_dtype(ds.dtype) is not None
            else:
                assert ds.dtype.str == a["dtype"], a["name"]
            assert (list(ds.chunks) if ds.chunks else None) == a["chunks"], a["name"]
            assert ds.compression == a["compression"], a["name"]
            if a["compression"]:
                assert ds.compression_opts == a["compression_level"]
            assert bool(ds.shuffle) == a["shuffle"]
            if a["fill_value"] is not None:
                assert ds.fillvalue == a["fill_value"]
            assert set(ds.attrs) - H5_LIBRARY_ATTRS == set(a["attrs"]), a["name"]
            if a["dims"] is not None:
                for i, dim in enumerate(a["dims"]):
                    names = list(ds.dims[i].keys()) or ([ds.attrs["NAME"].decode()] if ds.is_scale else [])
                    assert names == [dim], a["name"]
            if a["shape"] == []:
                kinds.add("scalar")
            if a["chunks"] is None:
                kinds.add("contiguous")
        assert kinds == {"compound", "vlen", "scalar", "contiguous"}
        counts = _entry(manifest, "hdf5/experiment.h5")["arrays"][0]
        assert counts["name"] == "/instrument/detector/counts"
        assert counts["compression"] == "gzip" and counts["compression_level"] == 4 and counts["shuffle"]
        data = f["instrument/detector/counts"][...]
        valid = data[data != counts["fill_value"]]
        assert valid.size == counts["stats"]["count"]
        assert float(valid.min()) == counts["stats"]["min"] and float(valid.max()) == counts["stats"]["max"]
        assert list(f["events/triggers"].dtype.names) == ["time", "id", "flag"]
        assert f["log/messages"].asstr()[2] == "temperature stable ✓"


def test_netcdf4_matches_manifest(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    e = _entry(manifest, "netcdf/climate_cf.nc")
    with netCDF4.Dataset(root / e["path"]) as nc:
        assert nc.data_model == "NETCDF4"
        assert {k: nc.getncattr(k) for k in nc.ncattrs()} == e["attrs"]
        assert nc.Conventions == "CF-1.8"
        for gname, ginfo in e["groups"].items():
            grp = nc if gname == "/" else nc[gname.lstrip("/")]
            assert {k: len(d) for k, d in grp.dimensions.items()} == ginfo["dimensions"]
            assert [k for k, d in grp.dimensions.items() if d.isunlimited()] == ginfo["unlimited"]
            assert set(grp.ncattrs()) == set(ginfo["attrs"])
        for a in e["arrays"]:
            v = nc[a["name"].lstrip("/")]
            assert list(v.shape) == a["shape"] and list(v.dimensions) == a["dims"], a["name"]
            assert v.dtype.str == a["dtype"], a["name"]
            chunking = v.chunking()
            assert (None if chunking == "contiguous" else list(chunking)) == a["chunks"], a["name"]
            filters = v.filters()
            assert ("zlib" if filters["zlib"] else None) == a["compression"], a["name"]
            if a["compression"]:
                assert filters["complevel"] == a["compression_level"]
                assert filters["shuffle"] == a["shuffle"]
            attrs = set(v.ncattrs()) - {"_FillValue"}
            assert attrs == set(a["attrs"]), a["name"]
            if a["fill_value"] is not None:
                assert v.getncattr("_FillValue") == a["fill_value"]
            else:
                assert "_FillValue" not in v.ncattrs()
            assert (v.getncattr("units") if "units" in v.ncattrs() else None) == a["units"]
        assert nc["time"].calendar == "standard"
        assert nc["time"].units == "days since 2000-01-01"
        psl = _entry(manifest, e["path"])["arrays"][4]
        assert psl["name"] == "/psl" and psl["dtype"] == "<i2"
        assert nc["psl"].scale_factor == psl["attrs"]["scale_factor"]
        assert nc["psl"].dtype == np.int16
        # Unpacked values are floats near 1013 hPa.
        assert 950 < float(nc["psl"][...].mean()) < 1080
        tas = _entry(manifest, e["path"])["arrays"][3]
        masked = nc["tas"][...]
        assert int(masked.count()) == tas["stats"]["count"] < masked.size


def test_netcdf3_matches_manifest(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    e = _entry(manifest, "netcdf/stations_classic.nc")
    raw = (root / e["path"]).read_bytes()
    assert raw[:4] == b"CDF\x01"
    with netCDF4.Dataset(root / e["path"]) as nc:
        assert nc.file_format == "NETCDF3_CLASSIC"
        assert {k: nc.getncattr(k) for k in nc.ncattrs()} == e["attrs"]
        assert {k: len(d) for k, d in nc.dimensions.items()} == e["groups"]["/"]["dimensions"]
        for a in e["arrays"]:
            v = nc[a["name"].lstrip("/")]
            assert list(v.shape) == a["shape"] and list(v.dimensions) == a["dims"]
            assert a["dtype"][0] == ">" and _same_dtype(a["dtype"], v.dtype)  # big-endian on disk
            assert a["chunks"] is None and a["compression"] is None
            assert set(v.ncattrs()) - {"_FillValue"} == set(a["attrs"])


def test_zarr_matches_manifest(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    stores = {e["zarr_format"]: e for e in _by_format(manifest, "zarr")}
    assert set(stores) == {2, 3}
    for fmt, e in stores.items():
        g = zarr.open_group(root / e["path"], mode="r")
        assert g.metadata.zarr_format == fmt
        assert dict(g.attrs) == e["attrs"]
        for gname, ginfo in e["groups"].items():
            sub = g if gname == "/" else g[gname.lstrip("/")]
            assert dict(sub.attrs) == ginfo["attrs"]
        for a in e["arrays"]:
            arr = g[a["name"].lstrip("/")]
            assert list(arr.shape) == a["shape"] and list(arr.chunks) == a["chunks"], a["name"]
            assert arr.dtype.str == a["dtype"]
            fill = arr.fill_value
            assert (None if fill is None else fill.item()) == a["fill_value"], a["name"]
            assert dict(arr.attrs) == a["attrs"]
            if fmt == 3:
                assert list(arr.metadata.dimension_names) == a["dims"]
                names = [type(c).__name__.replace("Codec", "").lower() for c in arr.compressors]
            else:
                assert arr.attrs["_ARRAY_DIMENSIONS"] == a["dims"]
                names = [c.codec_id for c in arr.compressors]
            assert names == ([a["compression"]] if a["compression"] else []), a["name"]
            data = arr[...]
            if a["stats"]:
                valid = data if a["fill_value"] is None else data[data != a["fill_value"]]
                assert valid.size == a["stats"]["count"]
                assert float(valid.max()) == a["stats"]["max"]
    assert "/analysis/anomaly" in [a["name"] for a in stores[3]["arrays"]]


def test_fits_matches_manifest(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    e = _entry(manifest, "fits/field_image.fits")
    with fits.open(root / e["path"]) as hdul:
        assert len(hdul) == len(e["hdus"]) == 3
        for info in e["hdus"]:
            hdu = hdul[info["index"]]
            assert hdu.header.get("XTENSION") == info["xtension"]
            if info["extname"]:
                assert hdu.name == info["extname"]
            for key, value in info["keywords"].items():
                expected = pytest.approx(value) if isinstance(value, float) else value
                assert hdu.header[key] == expected, key
        assert hdul[0].header["ESO DET CHIP NAME"] == "SYNTH-CCD-A"
        assert "ESO DET CHIP NAME" in e["hdus"][0]["keywords"]
        footprint = WCS(hdul[0].header).calc_footprint()
        np.testing.assert_allclose(footprint, e["hdus"][0]["wcs_footprint"], rtol=0, atol=1e-9)
        img, table, comp = (a for a in e["arrays"])
        assert list(hdul[0].data.shape) == img["shape"] and hdul[0].data.dtype.str == img["dtype"]
        assert float(hdul[0].data.max()) == img["stats"]["max"]
        assert [[n, s] for n, s in hdul[1].data.dtype.descr] == table["fields"]
        assert len(hdul[1].data) == table["shape"][0]
        assert isinstance(hdul[2], fits.CompImageHDU)
        assert hdul[2]._bintable.header["ZCMPTYPE"] == comp["compression"].upper()
        assert [hdul[2]._bintable.header["ZTILE2"], hdul[2]._bintable.header["ZTILE1"]] == comp["chunks"]
        assert list(hdul[2].data.shape) == comp["shape"]
        assert float(hdul[2].data.mean(dtype=np.float64)) == pytest.approx(comp["stats"]["mean"])


def test_dicom_matches_manifest(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    entries = _by_format(manifest, "dicom")
    for e in entries:
        raw = (root / e["path"]).read_bytes()
        assert raw[128:132] == b"DICM"
        ds = pydicom.dcmread(root / e["path"])
        info = e["dicom"]
        assert ds.file_meta.TransferSyntaxUID == info["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
        assert ds.file_meta.MediaStorageSOPInstanceUID == info["SOPInstanceUID"]
        for key in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                    "Modality", "StudyDate", "Rows", "Columns", "InstanceNumber"):
            assert ds[key].value == info[key], (e["path"], key)
        assert str(ds.PatientName) == info["PatientName"]
        assert int(ds.get("NumberOfFrames", 1)) == info["NumberOfFrames"]
        assert [float(v) for v in ds.PixelSpacing] == info["PixelSpacing"]
        assert (float(ds.SliceThickness) if "SliceThickness" in ds else None) == info["SliceThickness"]
        ipp = ds.get("ImagePositionPatient")
        assert ([float(v) for v in ipp] if ipp is not None else None) == info["ImagePositionPatient"]
        for key, value in e["attrs"].items():
            assert ds[key].value == value
        pix = ds.pixel_array
        (arr,) = e["arrays"]
        assert list(pix.shape) == arr["shape"] and pix.dtype.str == arr["dtype"]
        assert int(pix.min()) == arr["stats"]["min"] and int(pix.max()) == arr["stats"]["max"]

    ct = [e for e in entries if e["dicom"]["Modality"] == "CT"]
    assert len(ct) == 5
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        assert len({e["dicom"][key] for e in ct}) == 1
    assert len({e["dicom"]["SOPInstanceUID"] for e in ct}) == 5
    for_uids = {str(pydicom.dcmread(root / e["path"]).FrameOfReferenceUID) for e in ct}
    assert len(for_uids) == 1
    ct_sorted = sorted(ct, key=lambda e: e["path"])
    instance_order = [e["dicom"]["InstanceNumber"] for e in ct_sorted]
    assert sorted(instance_order) == [1, 2, 3, 4, 5] and instance_order != [1, 2, 3, 4, 5]
    z = {e["dicom"]["InstanceNumber"]: e["dicom"]["ImagePositionPatient"][2] for e in ct}
    assert [z[i + 1] - z[i] for i in range(1, 5)] == [2.5] * 4
    classes = {e["dicom"]["Modality"]: e["dicom"]["SOPClassUID"] for e in entries}
    assert classes["CT"] == "1.2.840.10008.5.1.4.1.1.2" and classes["MR"] == "1.2.840.10008.5.1.4.1.1.4"
    mr = _entry(manifest, "dicom/mr_brain.dcm")
    assert mr["arrays"][0]["dtype"] == "<u2" and mr["dicom"]["StudyInstanceUID"] != ct[0]["dicom"]["StudyInstanceUID"]
    mf = _entry(manifest, "dicom/multiframe_sc.dcm")
    assert mf["dicom"]["NumberOfFrames"] == 4 and mf["arrays"][0]["shape"][0] == 4


def test_misfits(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    d = root / "misfits"
    assert (d / "empty.h5").stat().st_size == 0
    trunc = (d / "truncated.h5").read_bytes()
    assert trunc[:8] == b"\x89HDF\r\n\x1a\n" and 1024 <= len(trunc) <= 2048
    with pytest.raises(OSError):
        h5py.File(d / "truncated.h5", "r")
    assert _entry(manifest, "misfits/truncated.h5")["status"] == "error"
    assert _entry(manifest, "misfits/truncated.h5")["format"] == "hdf5"
    with pytest.raises(OSError):
        netCDF4.Dataset(d / "notes.nc")
    (d / "notes.nc").read_text(encoding="utf-8")
    rnd = (d / "random.bin").read_bytes()
    assert len(rnd) == 4096
    assert not rnd.startswith((b"\x89HDF", b"CDF", b"SIMPLE")) and rnd[128:132] != b"DICM"
    for name in ("empty.h5", "notes.nc", "random.bin"):
        e = _entry(manifest, f"misfits/{name}")
        assert e["format"] == "binary" and e["status"] == "ok"


# --------------------------------------------------------------------------- #
# generate_many
# --------------------------------------------------------------------------- #
def _sniff(path: Path) -> str:
    if path.is_dir():
        return "zarr"
    head = path.read_bytes()[:132]
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"CDF"):
        return "netcdf3"
    if head.startswith(b"SIMPLE"):
        return "fits"
    if head[128:132] == b"DICM":
        return "dicom"
    return "other"


def test_generate_many(tmp_path: Path) -> None:
    paths = generate_many(tmp_path, n_files=300, seed=3)
    assert len(paths) == 300 == len(set(paths))
    kinds = collections.Counter(p.split("/")[-1].split("_")[0] for p in paths)
    assert kinds["zarr"] == 6 and kinds["misfit"] == 3
    for k in ("hdf5", "nc4", "nc3", "fits", "dicom"):
        assert 55 <= kinds[k] <= 61
    sniffed = collections.Counter()
    checked: set[str] = set()
    for rel in paths:
        p = tmp_path / rel
        assert p.exists(), rel
        kind = rel.split("/")[-1].split("_")[0]
        fmt = _sniff(p)
        sniffed[fmt] += 1
        if kind in {"hdf5", "nc4"}:
            assert fmt == "hdf5"
        elif kind == "nc3":
            assert fmt == "netcdf3"
        elif kind in {"fits", "dicom", "zarr"}:
            assert fmt == kind
        if kind != "misfit":
            assert p.is_dir() or 1000 < p.stat().st_size < 100_000, rel
        if kind not in checked:  # open one of each with its real library
            checked.add(kind)
            if kind == "hdf5":
                with h5py.File(p) as f:
                    assert f["data/values"].shape == (16, 32)
            elif kind in {"nc4", "nc3"}:
                with netCDF4.Dataset(p) as nc:
                    assert nc["tas"].shape == (16, 32)
            elif kind == "fits":
                with fits.open(p) as hdul:
                    assert hdul[0].data.shape == (32, 32)
            elif kind == "dicom":
                assert pydicom.dcmread(p).pixel_array.shape == (32, 32)
            elif kind == "zarr":
                assert zarr.open_group(p, mode="r")["values"].shape == (16, 32)
    assert checked == {"hdf5", "nc4", "nc3", "fits", "dicom", "zarr", "misfit"}
    assert sniffed["hdf5"] >= kinds["hdf5"] + kinds["nc4"]
    # Files of one format differ from each other.
    h5 = [tmp_path / p for p in paths if "/hdf5_" in p][:2]
    assert h5[0].read_bytes() != h5[1].read_bytes()


def test_generate_many_subdirs_and_determinism(tmp_path: Path) -> None:
    a = generate_many(tmp_path / "a", n_files=60, seed=5, files_per_dir=25)
    b = generate_many(tmp_path / "b", n_files=60, seed=5, files_per_dir=25)
    assert a == b
    assert collections.Counter(p.split("/")[0] for p in a) == {"part_000": 25, "part_001": 25, "part_002": 10}
    for rel in a:
        if not rel.endswith(".zarr"):
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
