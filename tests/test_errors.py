"""Bad input becomes error rows with the exception type and message; the rest of the batch is read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import loads
from metaextract_dask.discover import discover
from metaextract_dask.extract import extract_batch


@pytest.fixture()
def broken_tree(sample_tree: Any, tmp_path: Path) -> Path:
    root, _ = sample_tree
    tree = tmp_path / "broken"
    shutil.copytree(root, tree)
    # DICOM preamble and magic, then garbage
    (tree / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + os.urandom(64))
    # a FITS header cut in the middle of its first card block
    fits_bytes = (root / "fits" / "field_image.fits").read_bytes()
    (tree / "cut.fits").write_bytes(fits_bytes[:1000])
    # netCDF3 magic with a nonsense header
    (tree / "bad_classic.nc").write_bytes(b"CDF\x01" + os.urandom(200))
    # a Zarr store whose metadata is not JSON
    (tree / "bad.zarr").mkdir()
    (tree / "bad.zarr" / "zarr.json").write_text("{not json")
    # a netCDF4 file cut short (HDF5 magic, _NCProperties unreachable)
    nc4 = (root / "netcdf" / "climate_cf.nc").read_bytes()
    (tree / "cut4.nc").write_bytes(nc4[: len(nc4) // 3])
    return tree


def test_every_bad_file_is_an_error_row_and_good_files_survive(broken_tree: Path, sample_tree: Any) -> None:
    _, manifest = sample_tree
    entries = discover([broken_tree])
    # one file vanishes between listing and reading
    vanished = broken_tree / "netcdf" / "stations_classic.nc"
    vanished.unlink()
    files = extract_batch(entries)["files"].to_pandas()
    files["rel"] = [os.path.relpath(p, broken_tree) for p in files["path"]]
    files = files.set_index("rel")

    errors = files[files["status"] == "error"]
    expected_errors = {
        "bad.dcm": "dicom", "cut.fits": "fits", "bad_classic.nc": "netcdf3", "bad.zarr": "zarr",
        "misfits/truncated.h5": "hdf5", "netcdf/stations_classic.nc": "binary",
        # netCDF-C's marker attribute is in the third that is left: a netCDF-4 file, cut short
        "cut4.nc": "netcdf4",
    }
    assert dict(errors["format"]) == expected_errors
    for rel, row in errors.iterrows():
        assert row["error_type"] and row["error_message"], rel
        assert np.isnan(row["n_arrays"]), rel
    assert errors.loc["netcdf/stations_classic.nc", "error_type"] == "FileNotFoundError"
    assert errors.loc["bad.dcm", "error_type"] == "InvalidDicomError"
    assert errors.loc["bad.zarr", "error_type"] in ("JSONDecodeError", "ValueError")
    # everything else in the tree was read normally
    good = [e["path"] for e in manifest["files"] if e["status"] == "ok" and e["path"] != "netcdf/stations_classic.nc"]
    assert (files.loc[good, "status"] == "ok").all()
    assert len(files) == len(entries)


def test_unreadable_attribute_does_not_cost_the_file(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", data=np.arange(3))
        d.attrs["ref"] = f.ref  # an object reference: no JSON meaning, must not break the row
        d.attrs["ok"] = 5
    rows = extract_batch(discover([path]))
    assert rows["files"].column("status").to_pylist() == ["ok"]
    attrs = loads(rows["arrays"].column("attrs")[0].as_py())
    assert attrs["ok"] == 5 and "ref" in attrs


def test_library_warnings_are_recorded(sample_tree: Any, tmp_path: Path) -> None:
    root, _ = sample_tree
    raw = (root / "fits" / "field_image.fits").read_bytes()
    card = raw[raw.index(b"OBJECT  = "):][:80]
    assert b"'SYNTH-FIELD-01'" in card
    bad_card = card.replace(b"'SYNTH-FIELD-01'", b"SYNTH FIELD 01  ")  # unquoted string: not FITS standard
    path = tmp_path / "nonstandard.fits"
    path.write_bytes(raw.replace(card, bad_card))
    rows = extract_batch(discover([path]))
    files = rows["files"].to_pylist()[0]
    assert files["status"] == "ok"
    assert any("OBJECT" in w and "Warning" in w for w in files["warnings"]), files["warnings"]
    clean = extract_batch(discover([root / "fits" / "field_image.fits"]))["files"].to_pylist()[0]
    assert clean["warnings"] is None


def test_warnings_stay_with_their_file_within_a_batch(sample_tree: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch records warnings under one ``catch_warnings``: each row still holds its own file's warnings
    only, a filter a reader adds while reading one file (a library's import-time filter) does not silence the
    next file, and the caller's filters are as they were afterwards."""
    import warnings

    from metaextract_dask.formats.fits import FITSBackend

    root, _ = sample_tree
    for name in ("a", "b", "c"):
        shutil.copy(root / "fits" / "field_image.fits", tmp_path / f"{name}.fits")
    original = FITSBackend.read

    def read(self: Any, path: str) -> Any:
        name = os.path.basename(path)
        warnings.warn(f"about {name}", UserWarning)
        if name == "a.fits":
            warnings.filterwarnings("ignore", category=UserWarning)
        if name == "b.fits":
            warnings.warn(f"twice about {name}", UserWarning)
        return original(self, path)

    monkeypatch.setattr(FITSBackend, "read", read)
    before = list(warnings.filters)
    files = extract_batch(discover([tmp_path]))["files"].to_pylist()
    got = {os.path.basename(r["path"]): r["warnings"] for r in files}
    assert got == {"a.fits": ["UserWarning: about a.fits"],
                   "b.fits": ["UserWarning: about b.fits", "UserWarning: twice about b.fits"],
                   "c.fits": ["UserWarning: about c.fits"]}
    assert warnings.filters == before


def test_batches_in_threads_of_one_process_keep_their_own_warnings(sample_tree: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches in several threads of one worker (``dask worker --nthreads 4``): each row holds its own file's
    warnings, however the reads interleave; a warning from a thread outside any batch is not taken; the
    warnings state is as before once the last batch ends, whichever ends first."""
    import threading
    import time
    import warnings

    from metaextract_dask.formats.fits import FITSBackend

    root, _ = sample_tree
    for t in range(3):
        (tmp_path / f"t{t}").mkdir()
        for i in range(4):
            shutil.copy(root / "fits" / "field_image.fits", tmp_path / f"t{t}" / f"f{i}.fits")
    # astropy takes warnings over when first imported: done here, before the threads (a takeover during
    # another thread's read is caught by _Recorder.took_over, but not in every interleaving)
    extract_batch(discover([root / "fits" / "field_image.fits"]))
    original = FITSBackend.read

    def read(self: Any, path: str) -> Any:
        name = os.path.relpath(path, tmp_path)
        warnings.warn(f"first {name}", UserWarning)
        time.sleep(0.02)  # the other threads warn meanwhile
        warnings.warn(f"second {name}", UserWarning)
        return original(self, path)

    monkeypatch.setattr(FITSBackend, "read", read)
    outside: list[str] = []  # where warnings went before the batches: the bystander's must go there too

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        outside.append(str(message))

    monkeypatch.setattr(warnings, "showwarning", show)
    shown_before, filters_before = warnings.showwarning, list(warnings.filters)
    results: dict[int, Any] = {}
    barrier = threading.Barrier(4)

    def bystander() -> None:  # a thread of the same process that runs no batch
        barrier.wait()
        time.sleep(0.03)
        warnings.warn("from a thread without a batch", UserWarning)

    def run(t: int) -> None:
        barrier.wait()
        entries = discover([tmp_path / f"t{t}"])
        results[t] = extract_batch(entries[: 4 - t])  # batches of 4, 3 and 2 files: they end one after another

    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)] + [threading.Thread(target=bystander)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t, tables in results.items():
        for row in tables["files"].to_pylist():
            name = os.path.relpath(row["path"], tmp_path)
            assert row["status"] == "ok"
            assert row["warnings"] == [f"UserWarning: first {name}", f"UserWarning: second {name}"], row["warnings"]
    assert sum(len(tables["files"]) for tables in results.values()) == 4 + 3 + 2
    assert not [w for w in outside if "first" in w or "second" in w]
    assert not [r for tables in results.values() for r in tables["files"].to_pylist()
                if "from a thread without a batch" in str(r["warnings"])]
    assert warnings.showwarning is shown_before and warnings.filters == filters_before
