"""Per-format values: what the generator wrote (its manifest) is what the catalog says."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers import assert_subset, by_relpath, loads, none

FORMATS = ["hdf5", "netcdf4", "netcdf3", "zarr", "fits", "dicom"]


@pytest.fixture(scope="module")
def tables(catalog: Any, sample_tree: Any) -> dict[str, Any]:
    root, _ = sample_tree
    return {name: by_relpath(catalog.to_pandas(name), root) for name in catalog.tables}


def _entries(manifest: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    found = [e for e in manifest["files"] if e["format"] == fmt and e["status"] == "ok"]
    assert found, f"sample tree has no {fmt} file"
    return found


def test_one_files_row_per_file_with_format_and_status(tables: dict[str, Any], sample_tree: Any) -> None:
    _, manifest = sample_tree
    files = tables["files"].set_index("rel")
    assert files.index.is_unique
    assert set(files.index) == {e["path"] for e in manifest["files"]}  # the sample's manifest.json is not data
    for e in manifest["files"]:
        row = files.loc[e["path"]]
        assert (row["format"], row["status"]) == (e["format"], e["status"]), e["path"]
        if e["status"] == "ok":
            assert row["n_arrays"] == len(e["arrays"]), e["path"]
        else:
            assert row["n_arrays"] is pd.NA, e["path"]  # unknown for a file that could not be read
    assert set(files["format"]) >= set(FORMATS) | {"binary"}


def test_sizes_and_mtimes_are_the_files(tables: dict[str, Any], sample_tree: Any) -> None:
    root, _ = sample_tree
    for _, row in tables["files"].iterrows():
        if row["format"] == "zarr":
            continue  # a store's size is the sum of its files (tests/test_discover.py)
        st = (root / row["rel"]).stat()
        assert row["size_bytes"] == st.st_size
        assert row["mtime"].value // 1000 == st.st_mtime_ns // 1000  # exact, in microseconds


@pytest.mark.parametrize("fmt", FORMATS)
def test_arrays_match_manifest(fmt: str, tables: dict[str, Any], sample_tree: Any) -> None:
    _, manifest = sample_tree
    arrays = tables["arrays"]
    for entry in _entries(manifest, fmt):
        rows = arrays[arrays["rel"] == entry["path"]].set_index("name")
        assert sorted(rows.index) == sorted(a["name"] for a in entry["arrays"]), entry["path"]
        for exp in entry["arrays"]:
            row = rows.loc[exp["name"]]
            where = f"{entry['path']}:{exp['name']}"
            assert list(row["shape"]) == exp["shape"], where
            assert none(row["error"]) is None, where
            if exp["dtype"] == "compound":
                fields = json.loads(row["dtype"])
                assert [f[0] for f in fields] == [f[0] for f in exp["fields"]], where
                assert [np.dtype(f[1]) == np.dtype(g[1]) or np.dtype(f[1]).newbyteorder("=") ==
                        np.dtype(g[1]).newbyteorder("=") for f, g in zip(fields, exp["fields"])], where
            elif fmt == "fits" and exp["compression"]:
                # a tile-compressed image has no on-disk byte order: compare the type only
                assert np.dtype(row["dtype"]).newbyteorder("=") == np.dtype(exp["dtype"]).newbyteorder("="), where
            else:
                assert row["dtype"] == exp["dtype"], where
            if exp["dims"] is not None:
                assert list(row["dims"]) == exp["dims"], where
            expected_chunks = exp["chunks"]
            if fmt == "dicom" and len(exp["shape"]) == 3:
                expected_chunks = [1, *exp["shape"][1:]]  # one frame per chunk
            assert (None if row["chunks"] is None else list(row["chunks"])) == expected_chunks, where
            assert none(row["compression"]) == exp["compression"], where
            if exp["fill_value"] is not None:
                assert_subset(exp["fill_value"], loads(row["fill_value"]), where + ".fill_value")
            assert none(row["units"]) == exp["units"] or (exp["units"] is None and fmt in ("dicom", "fits")), where
            if fmt not in ("fits", "dicom"):
                assert_subset(exp["attrs"], loads(row["attrs"]), where + ".attrs")
            if exp.get("compression_level") and fmt == "hdf5":
                gzip = [f for f in loads(row["filters"]) if f["name"] == "gzip"]
                assert gzip[0]["options"] == [exp["compression_level"]], where
            if exp.get("shuffle") and fmt in ("hdf5", "netcdf4"):
                assert "shuffle" in row["filters"], where
            if exp["dtype"] == "vlen-str":
                assert none(row["nbytes"]) is None, where  # unknown without reading the strings
            if exp["dtype"] not in ("compound", "vlen-str"):
                assert row["nbytes"] == int(np.prod(exp["shape"])) * np.dtype(exp["dtype"]).itemsize, where


@pytest.mark.parametrize("fmt", ["hdf5", "netcdf4", "netcdf3", "zarr", "fits"])
def test_file_attrs_match_manifest(fmt: str, tables: dict[str, Any], sample_tree: Any) -> None:
    _, manifest = sample_tree
    files = tables["files"].set_index("rel")
    for entry in _entries(manifest, fmt):
        assert_subset(entry["attrs"], loads(files.loc[entry["path"], "attrs"]), entry["path"])


@pytest.mark.parametrize("fmt", ["hdf5", "netcdf4", "netcdf3", "zarr"])
def test_groups_match_manifest(fmt: str, tables: dict[str, Any], sample_tree: Any) -> None:
    _, manifest = sample_tree
    files = tables["files"].set_index("rel")
    for entry in _entries(manifest, fmt):
        groups = loads(files.loc[entry["path"], "groups"])
        assert set(groups) == set(entry["groups"]), entry["path"]
        for gpath, exp in entry["groups"].items():
            if gpath == "/":  # the root's attributes are stored once: in files.attrs
                assert "attrs" not in groups[gpath], entry["path"]
                assert_subset(exp["attrs"], loads(files.loc[entry["path"], "attrs"]), entry["path"])
            else:
                assert_subset(exp["attrs"], groups[gpath]["attrs"], f"{entry['path']}{gpath}")
            if "dimensions" in exp:
                assert groups[gpath]["dims"] == exp["dimensions"], f"{entry['path']}{gpath}"
                assert sorted(groups[gpath]["unlimited"]) == sorted(exp.get("unlimited", [])), gpath
    if fmt == "zarr":
        versions = files[files["format"] == "zarr"]["format_version"]
        assert sorted(versions) == sorted(str(e["zarr_format"]) for e in _entries(manifest, "zarr"))


def test_fits_hdus(tables: dict[str, Any], sample_tree: Any) -> None:
    _, manifest = sample_tree
    hdus = tables["hdus"]
    for entry in _entries(manifest, "fits"):
        rows = hdus[hdus["rel"] == entry["path"]].set_index("index")
        assert list(rows.index) == [h["index"] for h in entry["hdus"]]
        for exp in entry["hdus"]:
            row = rows.loc[exp["index"]]
            where = f"{entry['path']}[{exp['index']}]"
            assert none(row["extname"]) == exp["extname"] and none(row["xtension"]) == exp["xtension"], where
            assert row["hdu_type"] == ("CompImageHDU" if exp["compressed"] else row["hdu_type"]), where
            header = loads(row["header"])
            assert row["n_cards"] >= len(exp["keywords"])
            assert_subset(exp["keywords"], header, where)
            if exp["wcs_footprint"] is None:
                assert row["wcs_footprint"] is None, where
            else:
                got = np.array([list(c) for c in row["wcs_footprint"]])
                np.testing.assert_allclose(got, np.array(exp["wcs_footprint"]), atol=1e-9, err_msg=where)
        # HIERARCH keywords keep their full name
        primary = loads(rows.loc[0, "header"])
        assert primary["ESO DET CHIP NAME"] == entry["hdus"][0]["keywords"]["ESO DET CHIP NAME"]


def _as_date(text: str | None) -> dt.date | None:
    return None if not text else dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def test_dicom_typed_columns_and_header(tables: dict[str, Any], sample_tree: Any) -> None:
    _, manifest = sample_tree
    dicom = tables["dicom"].set_index("rel")
    entries = _entries(manifest, "dicom")
    assert sorted(dicom.index) == sorted(e["path"] for e in entries)
    for entry in entries:
        row = dicom.loc[entry["path"]]
        exp = dict(entry["dicom"])
        for key in ("StudyDate",):
            assert row[key] == _as_date(exp.pop(key)), entry["path"]
        assert row["PatientBirthDate"] == _as_date(entry["attrs"]["PatientBirthDate"])
        for key in ("PatientSex", "AccessionNumber", "StudyDescription", "SeriesNumber", "StudyTime"):
            assert row[key] == entry["attrs"][key], (entry["path"], key)
        for key, value in exp.items():
            got = row[key]
            if isinstance(value, list):
                np.testing.assert_allclose(np.asarray(got, dtype=float), value, err_msg=key)
            elif value is None:
                assert none(got) is None, (entry["path"], key, got)
            else:
                assert_subset(value, got.item() if hasattr(got, "item") else got, f"{entry['path']}.{key}")
        header = loads(row["header"])
        assert header["00100010"]["Value"][0]["Alphabetic"] == exp["PatientName"]
        assert header["00080018"]["Value"] == [exp["SOPInstanceUID"]]
        assert header["00020010"]["Value"] == [exp["TransferSyntaxUID"]]  # file meta included
        assert "7FE00010" not in header  # pixel data never read


def test_dicom_series_shares_uids(tables: dict[str, Any]) -> None:
    ct = tables["dicom"][tables["dicom"]["Modality"] == "CT"]
    assert len(ct) == 5
    assert ct["StudyInstanceUID"].nunique() == 1 and ct["SeriesInstanceUID"].nunique() == 1
    assert ct["SOPInstanceUID"].nunique() == 5
    assert sorted(ct["InstanceNumber"]) == [1, 2, 3, 4, 5]
    z = sorted(float(p[2]) for p in ct["ImagePositionPatient"])
    assert len(set(np.round(np.diff(z), 6))) == 1  # evenly spaced slices


def test_misfits(tables: dict[str, Any], sample_tree: Any) -> None:
    files = tables["files"].set_index("rel")
    empty = files.loc["misfits/empty.h5"]
    assert (empty["format"], empty["status"], empty["size_bytes"]) == ("binary", "ok", 0)
    assert loads(empty["attrs"]) == {"content": "empty", "suffix_mismatch": "name suggests hdf5, content is empty"}
    text = files.loc["misfits/notes.nc"]
    assert (text["format"], text["status"]) == ("binary", "ok")
    assert loads(text["attrs"])["content"] == "text" and "netcdf" in loads(text["attrs"])["suffix_mismatch"]
    rand = files.loc["misfits/random.bin"]
    assert (rand["format"], loads(rand["attrs"])) == ("binary", {"content": "binary"})
    assert rand["size_bytes"] == 4096
    trunc = files.loc["misfits/truncated.h5"]
    assert (trunc["format"], trunc["status"], trunc["error_type"]) == ("hdf5", "error", "OSError")
    assert "truncated" in trunc["error_message"]
    assert (tables["arrays"]["rel"] == "misfits/truncated.h5").sum() == 0


def test_fast_readers_give_the_library_readers_rows(sample_tree: Any, tmp_path: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``metaextract.scan.fast-readers: false`` sends every file through its library (no fast path is entered),
    and a scan's rows are the same either way: on the sample tree and on the benchmark's small files, whose
    HDF5, netCDF-3/4, FITS and DICOM files all take the fast paths."""
    import dask.config

    from metaextract_dask.discover import discover
    from metaextract_dask.extract import extract_batch
    from metaextract_dask.formats import dicom, fits, hdf5, netcdf
    from metaextract_dask.sample import generate_many

    root, _ = sample_tree
    generate_many(tmp_path / "many", n_files=120, seed=3)
    entries = discover([root, tmp_path / "many"])
    fast = extract_batch(entries)

    def entered(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fast path was entered")

    for module, name in ((fits, "_read_fast"), (netcdf, "_read_fast"), (hdf5, "_records_fast"),
                         (hdf5, "_netcdf4_marked_fast"), (dicom, "_Fast")):
        monkeypatch.setattr(module, name, entered)
    with dask.config.set({"metaextract.scan.fast-readers": False}):
        slow = extract_batch(entries)
    assert fast["files"].num_rows == len(entries)
    for name in fast:
        a, b = fast[name], slow[name]
        if "read_seconds" in a.column_names:
            a, b = a.drop_columns(["read_seconds"]), b.drop_columns(["read_seconds"])
        assert a.equals(b), name
    formats = set(fast["files"].column("format").to_pylist())
    assert {"hdf5", "netcdf3", "netcdf4", "fits", "dicom"} <= formats
