"""The DICOM backend against the conformance kit: generator files plus pydicom's own (1-bit, multi-frame,
colour, big-endian)."""

from __future__ import annotations

import pytest
from typing import Any

from metaextract_dask.formats import get_backend
from metaextract_dask.testing import FormatBackendTests, reference_files

_PYDICOM_FILES = ("liver_1frame.dcm", "MR_small.dcm", "CT_small.dcm", "rtdose.dcm", "SC_rgb_small_odd.dcm",
                  "MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm")


class TestDICOMBackend(FormatBackendTests):
    backend_name = "dicom"

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls) -> list[str]:
        from pydicom.data import get_testdata_file

        return [*reference_files("dicom"), *(get_testdata_file(name) for name in _PYDICOM_FILES)]


def test_one_bit_pixels_are_u1_in_catalog_and_array() -> None:
    """BitsAllocated = 1: pydicom unpacks the bits to uint8; the catalog said |b1 while open_array opened u1."""
    from pydicom.data import get_testdata_file

    from metaextract_dask.arrays import open_array

    path = get_testdata_file("liver_1frame.dcm")
    row = get_backend("dicom").read(path).arrays[0]
    arr = open_array(path, "PixelData", decode=False)
    assert row["dtype"] == "|u1" == arr.dtype.str
    assert row["shape"] == list(arr.shape)
    values = arr.values
    assert set(values.ravel().tolist()) <= {0, 1} and values.any()


def test_units_follow_one_rule(tmp_path) -> None:
    """CT rescaled values are HU in the catalog row and in the array's attrs alike; without a rescale, neither."""
    from pydicom.data import get_testdata_file

    import pydicom

    from metaextract_dask.arrays import open_array

    ct = get_testdata_file("CT_small.dcm")
    assert get_backend("dicom").read(ct).arrays[0]["units"] == "HU"
    assert open_array(ct, "PixelData").attrs["units"] == "HU"
    ds = pydicom.dcmread(ct)
    del ds.RescaleIntercept
    del ds.RescaleSlope
    ds.save_as(tmp_path / "raw_ct.dcm")
    assert get_backend("dicom").read(str(tmp_path / "raw_ct.dcm")).arrays[0]["units"] is None
    assert "units" not in open_array(tmp_path / "raw_ct.dcm", "PixelData").attrs


def test_deflated_dataset_is_not_truncated(tmp_path) -> None:
    """Deflated Explicit VR Little Endian compresses the whole dataset, pixels included: a file far smaller
    than its pixel data is valid, not truncated."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 512
    ds.PixelData = np.zeros((512, 512), dtype=np.int16).tobytes()
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 512 * 512 * 2 // 10
    row = get_backend("dicom").read(str(path)).arrays[0]
    assert row.get("error") is None and row["shape"] == [512, 512] and row["nbytes"] == 512 * 512 * 2


def test_header_json_equals_pydicoms_own() -> None:
    """The catalog's header JSON (our own walk of the DICOM JSON model, for speed) equals pydicom's
    ``to_json_dict``, element for element, on every DICOM test file pydicom ships (nested sequences,
    PN with components, AT, binary VRs inline and bulk, IS/DS numbers, private tags)."""
    import pydicom
    from pydicom.data import get_testdata_files

    from metaextract_dask.formats.dicom import _json_header

    def bulk(elem: Any) -> str:
        return f"omitted:{elem.tag:08X}"

    compared = 0
    for path in get_testdata_files("*"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            expected = {**(ds.file_meta.to_json_dict(1024, bulk) if ds.file_meta else {}),
                        **ds.to_json_dict(1024, bulk)}
        except Exception:  # not DICOM, or pydicom's own JSON fails on it: the fallback path, tested elsewhere
            continue
        problems: list[str] = []
        assert _json_header(pydicom.dcmread(path, stop_before_pixels=True), 1024, problems) == expected, path
        assert not problems
        compared += 1
    assert compared >= 60
