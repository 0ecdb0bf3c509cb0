"""Reader robustness on files we did not write: the test data that ships inside pydicom, astropy, h5py and
xarray, plus truncated and bit-flipped copies of each, scanned on the real 2-process cluster.

Every file its own library opens must be an ``ok`` row whose values equal the library's; every input (copies
included) must be exactly one row; an invalid element value is a warning and a null column, never a lost file.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import dask.config
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

# Compressed wrappers (.gz, .Z, ...) are the remote-and-compressed issue's; here the formats themselves.
_WRAPPERS = (".gz", ".bz2", ".z", ".zip", ".xz")


def _library_files() -> list[Path]:
    import astropy
    import h5py
    import pydicom
    import xarray

    roots = [Path(pydicom.__file__).parent / "data" / "test_files",
             Path(astropy.__file__).parent / "io" / "fits" / "tests" / "data",
             Path(h5py.__file__).parent / "tests" / "data_files",
             Path(xarray.__file__).parent / "tests" / "data"]
    out = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix not in (".py", ".pyc") and not p.name.lower().endswith(_WRAPPERS):
                out.append(p)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The libraries' files copied into one tree, plus for each a truncated and a bit-flipped copy."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1234)
    originals, damaged = [], []
    for i, src in enumerate(_library_files()):
        dst = root / "orig" / f"{i:03d}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        originals.append(str(dst))
        data = src.read_bytes()
        if not data:
            continue
        cut = root / "truncated" / dst.name
        cut.parent.mkdir(parents=True, exist_ok=True)
        cut.write_bytes(data[: max(1, len(data) * rng.randint(5, 95) // 100)])
        flipped = bytearray(data)
        for _ in range(max(1, len(data) // 2000)):
            pos = rng.randrange(len(flipped))
            flipped[pos] ^= 1 << rng.randrange(8)
        flip = root / "flipped" / dst.name
        flip.parent.mkdir(parents=True, exist_ok=True)
        flip.write_bytes(bytes(flipped))
        damaged += [str(cut), str(flip)]
    return {"root": root, "originals": originals, "damaged": damaged}


@pytest.fixture(scope="module")
def scanned(corpus: dict[str, Any], client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from metaextract_dask import scan

    out = tmp_path_factory.mktemp("robust") / "cat"
    with dask.config.set({"metaextract.scan.file-timeout": 60}):
        return scan([corpus["root"]], out, client=client)


def _dicom_opens(path: str) -> Any:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            list(ds.iterall())  # every element parsed as far as pydicom goes
            ts = ds.file_meta.get("TransferSyntaxUID")
            # a transfer syntax that is not a UID: nothing after the file meta was decoded meaningfully
            return ds if ts is None or ts.is_valid else None
        except Exception:
            return None


def _fits_opens(path: str) -> Any:
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with fits.open(path, memmap=False) as hdul:
                return [len(h.header.cards) for h in hdul]
        except Exception:
            return None


def _h5_names(path: str) -> list[str] | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names: list[str] = []
            f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None)
            return names
    except Exception:
        return None


def _nc_names(path: str) -> list[str] | None:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as ds:
            names: list[str] = []

            def walk(g: Any) -> None:
                prefix = "" if g.path == "/" else g.path
                names.extend(f"{prefix}/{v}" for v in g.variables)
                for sub in g.groups.values():
                    walk(sub)

            walk(ds)
            return names
    except Exception:
        return None


def test_every_input_is_exactly_one_row(corpus: dict[str, Any], scanned: Any) -> None:
    files = scanned.to_pandas("files")
    assert sorted(files["path"]) == sorted(corpus["originals"] + corpus["damaged"])
    assert files["path"].is_unique
    assert set(files["status"]) <= {"ok", "error"}
    errors = files[files["status"] == "error"]
    assert errors["error_type"].notna().all() and errors["error_message"].notna().all()


def test_files_the_libraries_open_are_ok_rows_with_their_values(corpus: dict[str, Any], scanned: Any) -> None:
    files = scanned.to_pandas("files").set_index("path")
    arrays = scanned.to_pandas("arrays")
    hdus = scanned.to_pandas("hdus")
    dicom = scanned.to_pandas("dicom").set_index("path")
    checked = {"dicom": 0, "fits": 0, "hdf5": 0, "netcdf": 0}
    for path in corpus["originals"] + corpus["damaged"]:
        row = files.loc[path]
        head = Path(path).read_bytes()[:132]
        if len(head) >= 132 and head[128:132] == b"DICM" and (ds := _dicom_opens(path)) is not None:
            assert (row["format"], row["status"]) == ("dicom", "ok"), (path, row["error_message"])
            d = dicom.loc[path]
            for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"):
                value = ds.get(kw)
                assert (d[kw] if isinstance(d[kw], str) else None) == (str(value) if value not in (None, "") else None), (path, kw)
            for kw in ("Rows", "Columns"):
                value = ds.get(kw)
                assert (None if pd.isna(d[kw]) else int(d[kw])) == (int(value) if value not in (None, "") else None), (path, kw)
            header = json.loads(d["header"])
            assert all(f"{e.tag:08X}" in header for e in ds), path  # every top-level element is in the JSON
            checked["dicom"] += 1
        elif head.startswith(b"SIMPLE  =") and (cards := _fits_opens(path)) is not None:
            assert (row["format"], row["status"]) == ("fits", "ok"), (path, row["error_message"])
            mine = hdus[hdus["path"] == path].sort_values("index")
            assert list(mine["n_cards"]) == cards, path
            checked["fits"] += 1
        elif head[:4] in (b"CDF\x01", b"CDF\x02", b"CDF\x05") or head.startswith(b"\x89HDF"):
            nc = _nc_names(path)
            h5 = _h5_names(path) if nc is None or head.startswith(b"\x89HDF") else None
            if nc is None and h5 is None:
                continue
            assert row["status"] == "ok", (path, row["error_message"])
            names = list(arrays.loc[arrays["path"] == path, "name"])
            if row["format"] in ("netcdf3", "netcdf4"):
                assert nc is not None and names == nc, path
                checked["netcdf"] += 1
            else:
                assert row["format"] == "hdf5" and names == h5, path
                checked["hdf5"] += 1
    assert checked["dicom"] > 100 and checked["fits"] > 20 and checked["hdf5"] >= 3 and checked["netcdf"] >= 2, checked


def test_invalid_dicom_value_is_a_warning_and_a_null(corpus: dict[str, Any], scanned: Any) -> None:
    """badVR.dcm: NumberOfFrames is the IS value '1A'. The file is catalogued; the value is a warning, the
    typed column null, the pixel array an error of its own (its frame count is unknown)."""
    path = next(p for p in corpus["originals"] if p.endswith("_badVR.dcm"))
    row = scanned.to_pandas("files").set_index("path").loc[path]
    assert row["status"] == "ok"
    assert any("NumberOfFrames" in w or "1A" in w for w in row["warnings"])
    d = scanned.to_pandas("dicom").set_index("path").loc[path]
    assert pd.isna(d["NumberOfFrames"])  # null
    assert d["SOPInstanceUID"] == "1.9.999.999.99.9.9999.9999.20030818153516"
    header = json.loads(d["header"])
    assert header["00280008"] == {"vr": "IS"}  # the element is there, without its unparsable value
    pixels = scanned.to_pandas("arrays").set_index("path").loc[path]
    assert "NumberOfFrames" in pixels["error"] or "1A" in pixels["error"]


def test_dicm_file_without_sop_uids_is_a_dicom_row(tmp_path: Path) -> None:
    """As pydicom reads it: a Part 10 file lacking its SOP UIDs is catalogued, with a warning."""
    import pydicom
    from pydicom.data import get_testdata_file

    from metaextract_dask.discover import FileEntry
    from metaextract_dask.extract import extract_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SOPInstanceUID
    del ds.file_meta.MediaStorageSOPInstanceUID
    path = tmp_path / "no_uid.dcm"
    ds.save_as(path, enforce_file_format=False)
    rows = extract_file(FileEntry(str(path), path.stat().st_size, 0))
    row = rows["files"][0]
    assert (row["format"], row["status"]) == ("dicom", "ok")
    assert any("SOP Instance UID" in w for w in row["warnings"])
    assert rows["dicom"][0]["SOPInstanceUID"] is None and rows["dicom"][0]["Modality"] == "CT"
