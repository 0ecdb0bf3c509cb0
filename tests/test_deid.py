"""DICOM de-identification (PS3.15 Basic Profile with options): the packaged table, keys, the profile on real
pydicom datasets, copies (``deid``), catalogs (``scan --deidentify``), the leak check, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from metaextract_dask import scan
from metaextract_dask.deid import DeidKeyError, Profile, SecretKey, keygen, load_key
from metaextract_dask.deid._build import build_table
from metaextract_dask.deid.run import STATE_DIR, deidentify, read_report
from metaextract_dask.deid.verify import verify

SHARED = Path(__file__).resolve().parents[2] / "shared" / "dicom-standard" / "confidentiality_profile_attributes.json"
CLI = [sys.executable, "-m", "metaextract_dask.cli"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp("key") / "deid.key")


@pytest.fixture(scope="module")
def key(key_file: Path) -> SecretKey:
    return load_key(key_file)


def _dicoms(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if STATE_DIR not in p.parts)


def _write(path: Path, **tags: Any) -> Path:
    """A small CT object with the given top-level attributes."""
    import numpy as np

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = tags.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
    meta.MediaStorageSOPInstanceUID = tags["SOPInstanceUID"]
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "CT"
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- the table
def test_packaged_table_is_the_standard_table() -> None:
    from metaextract_dask.deid.profile import _table, table_source

    packaged = _table()
    assert len(packaged["attributes"]) == 621
    assert table_source()["source_date"] == "2025-01-28" and "MIT" in table_source()["licence"]
    notice = Path(__file__).resolve().parents[1] / "metaextract_dask" / "deid" / "NOTICE"
    assert "MIT" in notice.read_text() and "innolitics" in notice.read_text()
    if SHARED.exists():  # the package's copy is exactly what the build makes of the shared source
        assert build_table(json.loads(SHARED.read_text())) == packaged


def test_actions_follow_the_table_and_options(key: SecretKey) -> None:
    basic = Profile(key)
    assert basic.action(0x00100010) == "Z"         # Patient's Name
    assert basic.action(0x00080018) == "U"         # SOP Instance UID
    assert basic.action(0x00080080) == "X"         # Institution Name X/Z/D -> X (Type 3)
    assert basic.action(0x00080023) == "Z"         # Content Date Z/D -> Z in a General Image IOD
    assert basic.action(0x00080023, enhanced=True) == "D"  # ... Type 1 in enhanced multi-frame IODs
    assert basic.action(0x00081140) == "X"         # Referenced Image Sequence X/Z/U* -> X
    assert basic.action(0x60023000) == "X"         # Overlay Data, repeating group 60xx
    assert basic.action(0x501E0010) == "X"         # Curve Data, 50xx
    assert basic.action(0x00280010) == "K"         # Rows: not in the table
    full = Profile(key, ["retain-long-full-dates", "retain-uids", "retain-institution-identity",
                         "clean-graphics"])
    assert full.action(0x00080020) == "K" and full.action(0x00080018) == "K" and full.action(0x00080080) == "K"
    assert full.action(0x60003000) == "C"
    assert Profile(key, ["retain-long-modified-dates"]).action(0x00080020) == "C"
    with pytest.raises(ValueError, match="unknown de-identification option"):
        Profile(key, ["retain-everything"])
    with pytest.raises(ValueError, match="exclude each other"):
        Profile(key, ["retain-long-full-dates", "retain-long-modified-dates"])


# --------------------------------------------------------------------------- keys
def test_keys(tmp_path: Path) -> None:
    path = keygen(tmp_path / "k")
    assert (path.stat().st_mode & 0o777) == 0o600
    k = load_key(path)
    hex_key = "".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    assert hex_key not in repr(k) and hex_key not in str(k)
    import pickle

    assert pickle.loads(pickle.dumps(k)) == k
    with pytest.raises(FileExistsError):
        keygen(path)
    with pytest.raises(DeidKeyError, match="does not exist"):
        load_key(tmp_path / "missing")
    open_key = tmp_path / "open"
    open_key.write_text(hex_key)
    open_key.chmod(0o644)
    with pytest.raises(DeidKeyError, match="chmod 600"):
        load_key(open_key)
    for name, body, match in (("short", "ab" * 16, "too short"), ("weak", "aa" * 32, "weak"),
                              ("text", "not a key", "hex")):
        bad = tmp_path / name
        bad.write_text(body)
        bad.chmod(0o600)
        with pytest.raises(DeidKeyError, match=match):
            load_key(bad)
    other = load_key(keygen(tmp_path / "k2"))
    assert k.uid("1.2.3") == load_key(path).uid("1.2.3") != other.uid("1.2.3")
    assert k.uid("1.2.3").startswith("2.25.") and len(k.uid("1.2.3")) <= 64


# --------------------------------------------------------------------------- the profile on datasets
def test_profile_removes_nested_and_private_values(sample_tree: tuple[Path, dict[str, Any]], key: SecretKey) -> None:
    root, _ = sample_tree
    ds = pydicom.dcmread(root / "dicom" / "mr_brain.dcm")
    pixels = ds.PixelData
    Profile(key).apply(ds)
    text = str(ds) + str(ds.file_meta)
    for original in ("Roe^Richard", "Roe", "Richard", "FAKE-0002", "ACC-FAKE-0002", "19821231", "20230704",
                     "Example Imaging Center", "Sample^Referrer", "RP-FAKE-0002", "SPS-FAKE-0002",
                     "FICTITIOUS", "private copy"):
        assert original not in text, original
    assert not any(tag.is_private for tag in ds.keys())
    assert "OtherPatientIDsSequence" not in ds and "RequestAttributesSequence" not in ds
    assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PixelData == pixels


def test_retain_safe_private(tmp_path: Path, key: SecretKey) -> None:
    path = _write(tmp_path / "p.dcm", SOPInstanceUID="1.2.3.4", PatientID="SAFE-TEST-1")
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")          # B_value: safe
    block.add_new(0x10, "LO", "SAFE-TEST-1")   # not listed: removed
    own = ds.private_block(0x0011, "LAB", create=True)
    own.add_new(0x01, "LO", "lab value")
    Profile(key, ["retain-safe-private"], ["LAB (0011,xx01)"]).apply(ds)
    assert ds[0x0019100C].value == "1000" and 0x00191010 not in ds and ds[0x00190010].value == "SIEMENS MR HEADER"
    assert ds[0x00111001].value == "lab value"
    ds2 = pydicom.dcmread(path)
    ds2.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", "1000")
    Profile(key).apply(ds2)
    assert not any(tag.is_private for tag in ds2.keys())


def test_modified_dates_keep_intervals_per_patient(tmp_path: Path, key: SecretKey) -> None:
    inp = tmp_path / "in"
    for i, (pid, date) in enumerate([("PAT-A-001", "20200101"), ("PAT-A-001", "20200131"),
                                     ("PAT-B-002", "20200101"), ("PAT-B-002", "20211231")]):
        _write(inp / f"{i}.dcm", SOPInstanceUID=f"1.2.826.0.1.{i}", PatientID=pid, StudyDate=date,
               ContentDate=date, PatientName=f"Name^{pid}", StudyInstanceUID=f"1.2.826.0.2.{i}")
    out = tmp_path / "out"
    profile = Profile(key, ["retain-long-modified-dates"])
    import datetime as dt

    dates = {}
    for i in range(4):
        ds = pydicom.dcmread(inp / f"{i}.dcm")
        profile.apply(ds)
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.ContentDate == ds.StudyDate
        dates[i] = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
    assert (dates[1] - dates[0]).days == 30 and (dates[3] - dates[2]).days == 730
    assert dates[0] != dt.date(2020, 1, 1) and dates[2] != dt.date(2020, 1, 1)
    assert dates[0] != dates[2]  # another patient, another offset (keyed: 1 in ~3300 to coincide)
    assert not out.exists()


# --------------------------------------------------------------------------- copies, end to end
@pytest.fixture(scope="module")
def copies(sample_tree: tuple[Path, dict[str, Any]], client: Any, key_file: Path,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    root, _ = sample_tree
    base = tmp_path_factory.mktemp("deid")
    summary = deidentify([root], base / "out", key=key_file, map_file=base / "map.parquet", client=client)
    return base / "out", base / "map.parquet", summary


def test_deid_copies(sample_tree: tuple[Path, dict[str, Any]], copies: tuple[Path, Path, Any]) -> None:
    root, _ = sample_tree
    out, map_file, summary = copies
    originals = _dicoms(root)
    copied = _dicoms(out)
    rel = sorted(str(p.relative_to(out)) for p in copied)
    # The secondary capture is flagged for likely burned-in text and, by default, not copied.
    assert rel == sorted(str(p.relative_to(root)) for p in originals if p.name != "multiframe_sc.dcm")
    assert summary["copied"] == len(copied) and summary["flagged"] == 1 and summary["errors"] == 0
    report = read_report(out).to_pandas().set_index("rel_path")
    assert report.loc["dicom/multiframe_sc.dcm", "status"] == "flagged"
    assert "secondary capture" in report.loc["dicom/multiframe_sc.dcm", "reason"]
    assert (report.loc[report.index.str.endswith((".h5", ".nc", ".fits", ".json", ".bin")), "status"]
            == "not_dicom").all()
    for path in copied:
        src = pydicom.dcmread(root / path.relative_to(out))
        dst = pydicom.dcmread(path)
        assert dst.PixelData == src.PixelData  # byte-identical pixels
        assert dst.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert dst.PatientIdentityRemoved == "YES" and dst.DeidentificationMethod
        assert dst.SOPInstanceUID != src.SOPInstanceUID and dst.SOPInstanceUID.startswith("2.25.")
        assert dst.PatientID != src.PatientID and not any(t.is_private for t in dst.keys())

    # Study / series / instance structure is kept.
    def structure(paths: list[Path]) -> Counter[tuple[str, str]]:
        c: Counter[tuple[str, str]] = Counter()
        for p in paths:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            c[(ds.StudyInstanceUID, ds.SeriesInstanceUID)] += 1
        return c

    kept = [p for p in originals if p.name != "multiframe_sc.dcm"]
    assert sorted(structure(kept).values()) == sorted(structure(copied).values())
    assert len({s for s, _ in structure(kept)}) == len({s for s, _ in structure(copied)})

    # The mapping table: outside OUT_DIR, original -> pseudonym, consistent with the copies.
    mapping = pq.read_table(map_file).to_pandas()
    assert (map_file.stat().st_mode & 0o777) == 0o600
    pid = mapping[(mapping.kind == "patient-id") & (mapping.original == "FAKE-0001")].pseudonym.tolist()
    assert pid == [pydicom.dcmread(out / "dicom" / "ct_series" / "CT_000.dcm").PatientID]
    assert not list(out.rglob("*map*"))


def test_deid_verify_finds_no_leak_and_catches_one(sample_tree: tuple[Path, dict[str, Any]],
                                                   copies: tuple[Path, Path, Any], tmp_path: Path) -> None:
    root, _ = sample_tree
    out, _, _ = copies
    report = verify(out, [root])
    assert report.ok, report.format()
    assert report.originals == 7 and report.values > 50
    # A copy with an identifier put back in a private tag deep inside: caught, exit status 1.
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    victim = bad / "dicom" / "ct_series" / "CT_002.dcm"
    ds = pydicom.dcmread(victim)
    item = Dataset()
    item.private_block(0x0041, "LEAKY", create=True).add_new(0x01, "LO", "ACC-FAKE-0001")
    ds.ReferencedImageSequence = [item]
    ds.save_as(victim)
    (bad / "notes.txt").write_text("patient FAKE-0002 was here")
    result = subprocess.run([*CLI, "deid-verify", str(bad), "--original", str(root)], capture_output=True,
                            text=True, env=ENV, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CT_002.dcm" in result.stdout and "notes.txt" in result.stdout
    assert "ACC-FAKE-0001" not in result.stdout  # hits are shown masked


def test_deid_same_key_same_bytes_other_key_differs(sample_tree: tuple[Path, dict[str, Any]], client: Any,
                                                    copies: tuple[Path, Path, Any], key_file: Path,
                                                    tmp_path: Path) -> None:
    root, _ = sample_tree
    out, _, _ = copies
    again = tmp_path / "again"
    deidentify([root / "dicom"], again, key=key_file, client=client)  # another run, other worker processes
    assert len(_dicoms(again)) == 6
    for path in _dicoms(again):
        assert path.read_bytes() == (out / "dicom" / path.relative_to(again)).read_bytes()
    other = tmp_path / "other"
    deidentify([root / "dicom"], other, key=load_key(keygen(tmp_path / "other.key")), client=client)
    a = pydicom.dcmread(other / "mr_brain.dcm")
    b = pydicom.dcmread(out / "dicom" / "mr_brain.dcm")
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.PatientID != b.PatientID
    assert a.PixelData == b.PixelData
    with pytest.raises(ValueError, match="other settings"):  # one OUT_DIR, one key and profile
        deidentify([root / "dicom"], other, key=key_file, client=client)


def test_map_file_inside_output_is_refused(sample_tree: tuple[Path, dict[str, Any]], key_file: Path,
                                           tmp_path: Path) -> None:
    root, _ = sample_tree
    with pytest.raises(ValueError, match="must not be inside OUT_DIR"):
        deidentify([root / "dicom"], tmp_path / "o", key=key_file, map_file=tmp_path / "o" / "m.parquet")


def test_bad_inputs_are_reported_not_copied(tmp_path: Path, key_file: Path, client: Any) -> None:
    inp = tmp_path / "in"
    _write(inp / "good.dcm", SOPInstanceUID="1.2.3.9", PatientID="GOOD-PATIENT")
    (inp / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(300))
    (inp / "text.dcm").write_text("not dicom at all")
    summary = deidentify([inp], tmp_path / "out", key=key_file, client=client)
    report = read_report(tmp_path / "out").to_pandas().set_index("rel_path")["status"].to_dict()
    assert report == {"good.dcm": "copied", "garbage.dcm": "error", "text.dcm": "not_dicom"}
    assert summary["errors"] == 1 and [p.name for p in _dicoms(tmp_path / "out")] == ["good.dcm"]


# --------------------------------------------------------------------------- catalogs
def test_scan_deidentify_catalog_has_no_phi(sample_tree: tuple[Path, dict[str, Any]], client: Any,
                                            key_file: Path, copies: tuple[Path, Path, Any], tmp_path: Path) -> None:
    root, _ = sample_tree
    cat = scan(root / "dicom", tmp_path / "cat", client=client, deidentify=Profile(load_key(key_file)))
    dicom = cat.dicom.compute()
    assert len(dicom) == 7 and set(dicom.PatientID) == {
        pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in _dicoms(copies[0])}
    assert set(dicom.PatientName) == {"ANON^" + pid[:12] for pid in dicom.PatientID}
    assert dicom.StudyDate.isna().all() and dicom.PatientBirthDate.isna().all()
    assert verify(tmp_path / "none", [root / "dicom"], catalogs=[tmp_path / "cat"], options=[]).ok
    assert cat.scan_summary["deidentify"]["key_fingerprint"] == load_key(key_file).fingerprint
    # The same check on a plain catalog finds the identities (the check works on catalogs).
    plain = scan(root / "dicom", tmp_path / "plain", client=client)
    leaks = verify(tmp_path / "none", [root / "dicom"], catalogs=[plain.path], options=[])
    assert not leaks.ok and len(leaks.leaks) > 7
    # Re-scanning the plain catalog with --deidentify replaces every row (no identity left behind).
    scan(root / "dicom", tmp_path / "plain", client=client, deidentify=Profile(load_key(key_file)))
    assert verify(tmp_path / "none", [root / "dicom"], catalogs=[plain.path], options=[]).ok


def test_cli_keygen_deid_scan(sample_tree: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = sample_tree
    key = tmp_path / "cli.key"
    run = lambda *a: subprocess.run([*CLI, *a], capture_output=True, text=True, env=ENV, timeout=300)  # noqa: E731
    assert run("keygen", str(key)).returncode == 0
    again = run("keygen", str(key))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    res = run("scan", str(root / "dicom"), "-o", str(tmp_path / "cat"), "--deidentify", "--workers", "1",
              "--no-progress")
    assert res.returncode == 2 and "--key-file" in res.stderr
    res = run("deid", str(root / "dicom"), "-o", str(tmp_path / "out"), "--key-file", str(key), "--workers", "2",
              "--option", "retain-long-modified-dates", "--option", "clean-descriptors", "--copy-flagged",
              "--catalog", str(tmp_path / "outcat"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "de-identified 7 of 7" in res.stdout
    secret = "".join(line for line in key.read_text().splitlines() if not line.startswith("#"))
    for path in [*(tmp_path / "out").rglob("*"), *(tmp_path / "outcat").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes()
    assert secret not in res.stdout + res.stderr
    ds = pydicom.dcmread(tmp_path / "out" / "ct_series" / "CT_000.dcm")
    assert ds.StudyDescription == "SYNTHETIC CT CHEST (TEST DATA)"  # clean-descriptors keeps clean text
    assert ds.StudyDate != "20240115" and ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} == {"113100", "113107", "113105"}
    res = run("deid-verify", str(tmp_path / "out"), "--original", str(root / "dicom"),
              "--catalog", str(tmp_path / "outcat"))
    assert res.returncode == 0 and "no leak" in res.stdout, res.stdout
    bad = run("deid", str(root / "dicom"), "-o", str(tmp_path / "o2"), "--key-file", str(tmp_path / "nokey"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr


# --------------------------------------------------------------------------- pydicom's own files
@pytest.mark.slow
def test_pydicom_test_files_do_not_leak(tmp_path: Path, key_file: Path, client: Any) -> None:
    from pydicom.data import get_testdata_files

    inp = tmp_path / "pydicom"
    inp.mkdir()
    for f in get_testdata_files("*"):
        if os.path.isfile(f):
            shutil.copy(f, inp / os.path.basename(f))
    summary = deidentify([inp], tmp_path / "out", key=key_file, client=client, copy_flagged=True)
    assert summary["copied"] > 40
    report = verify(tmp_path / "out", [inp])
    assert report.ok, report.format()
    cat = scan(inp, tmp_path / "cat", client=client, deidentify=Profile(load_key(key_file)))
    assert len(cat.dicom.compute()) > 40
    report = verify(tmp_path / "none", [inp], catalogs=[tmp_path / "cat"], options=[])
    assert report.ok, report.format()


# --------------------------------------------------------------------------- resume after SIGKILL
@pytest.mark.slow
def test_deid_resumes_after_sigkill(tmp_path: Path, key_file: Path) -> None:
    from metaextract_dask.sample import _CT_STORAGE, _dicom_write

    import numpy as np

    inp = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(600):
        tags = {"PatientName": f"Resume^Patient{i % 7}", "PatientID": f"RES-{i % 7:04d}",
                "StudyInstanceUID": f"1.2.826.0.1.3680043.99.{i // 50}", "SeriesInstanceUID":
                f"1.2.826.0.1.3680043.98.{i // 10}", "StudyDate": "20240115", "Modality": "CT",
                "InstanceNumber": i % 10 + 1, "Rows": 16, "Columns": 16}
        _dicom_write(inp / f"d{i // 100}" / f"f{i:04d}.dcm", sop_class=_CT_STORAGE,
                     sop_instance=f"1.2.826.0.1.3680043.97.{i}", tags=tags,
                     pixels=rng.integers(0, 2000, (16, 16), dtype=np.int16), phi=True)
    cmd = [*CLI, "deid", str(inp), "-o", str(tmp_path / "out"), "--key-file", str(key_file), "--workers", "2",
           "--no-progress"]
    cfg = tmp_path / "small-batches.yaml"
    cfg.write_text("metaextract:\n  scan:\n    batch-max-files: 20\n    batch-min-files: 5\n")
    proc = subprocess.Popen([*CLI, "--config", str(cfg), *cmd[len(CLI):]], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "out" / STATE_DIR / "report"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(parts.glob("part-*"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("part-*")))
    assert done_before >= 1
    # Nothing half-written is visible: every .dcm in OUT_DIR parses completely.
    for p in _dicoms(tmp_path / "out"):
        assert pydicom.dcmread(p).PixelData
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "already done: " in res.stdout and "already done: 0 " not in res.stdout
    fresh = subprocess.run([*cmd[:6], str(tmp_path / "fresh"), *cmd[7:]], capture_output=True, text=True,
                           env=ENV, timeout=600)
    assert fresh.returncode == 0, fresh.stderr
    resumed, clean = _dicoms(tmp_path / "out"), _dicoms(tmp_path / "fresh")
    assert len(resumed) == len(clean) == 600
    for a, b in zip(resumed, clean):
        assert a.read_bytes() == b.read_bytes()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and STATE_DIR not in p.parts
                and p.suffix != ".dcm"]
