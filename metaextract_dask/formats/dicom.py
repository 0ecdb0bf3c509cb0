"""DICOM reader (pydicom): typed columns for common keywords plus the whole header as DICOM JSON.

Pixel data is never read (``stop_before_pixels``); its shape and type come from the image pixel module.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from metaextract_dask.config import get as config_get
from metaextract_dask.formats.base import FormatReader, Records
from metaextract_dask.jsonutil import dumps

__all__ = ["DICOMReader", "DICOM_COLUMNS", "parse_da"]

#: Typed columns of the ``dicom`` table: keyword -> kind (str, int, float, date, floats).
DICOM_COLUMNS: dict[str, str] = {
    "SOPInstanceUID": "str", "SOPClassUID": "str", "StudyInstanceUID": "str", "SeriesInstanceUID": "str",
    "FrameOfReferenceUID": "str", "PatientID": "str", "PatientName": "str", "PatientBirthDate": "date",
    "PatientSex": "str", "Modality": "str", "StudyDate": "date", "StudyTime": "str", "SeriesDate": "date",
    "AccessionNumber": "str", "StudyDescription": "str", "SeriesDescription": "str", "SeriesNumber": "int",
    "InstanceNumber": "int", "Manufacturer": "str", "InstitutionName": "str", "BodyPartExamined": "str",
    "Rows": "int", "Columns": "int", "NumberOfFrames": "int", "SamplesPerPixel": "int",
    "BitsAllocated": "int", "BitsStored": "int", "PixelRepresentation": "int",
    "PhotometricInterpretation": "str", "PixelSpacing": "floats", "SliceThickness": "float",
    "SpacingBetweenSlices": "float", "ImagePositionPatient": "floats", "ImageOrientationPatient": "floats",
    "SliceLocation": "float", "RescaleSlope": "float", "RescaleIntercept": "float",
}


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def parse_da(value: Any) -> dt.date | None:
    """DICOM DA (``YYYYMMDD``, or the old ``YYYY.MM.DD``) to a date; None if empty or invalid."""
    text = str(value or "").strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _typed(kind: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        if kind == "str":
            return str(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "date":
            return parse_da(value)
        if kind == "floats":
            seq = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else value
            return [float(v) for v in seq]
    except (TypeError, ValueError):  # malformed values stay in the header JSON; the column is null
        return None
    raise ValueError(kind)


def _pixel_array_row(ds: Any, ts: Any) -> dict[str, Any] | None:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols or "BitsAllocated" not in ds:
        return None
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    shape = ([frames] if frames > 1 else []) + [int(rows), int(cols)] + ([samples] if samples > 1 else [])
    dims = (["frame"] if frames > 1 else []) + ["row", "column"] + (["sample"] if samples > 1 else [])
    itemsize = 1 if bits <= 8 else max(2, bits // 8)
    dtype = f"{'<' if itemsize > 1 else '|'}{'i' if signed else 'u'}{itemsize}" if bits != 1 else "|b1"
    attrs = {k: _typed("float" if k.startswith("Rescale") else "str", ds.get(k))
             for k in ("PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "RescaleType")
             if k in ds}
    attrs.update({k: int(ds.get(k)) for k in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                                               "SamplesPerPixel") if ds.get(k) is not None})
    compressed = bool(ts is not None and ts.is_compressed)
    return {
        "name": "PixelData",
        "kind": "dicom-pixels",
        "shape": shape,
        "dtype": dtype,
        "dims": dims,
        # Frames are stored (and decoded) one at a time: a frame is the natural on-disk chunk.
        "chunks": [1, *shape[1:]] if frames > 1 else None,
        "compression": (ts.keyword or ts.name) if compressed else None,
        "fill_value": None,
        "units": str(ds.get("RescaleType")) if ds.get("RescaleType") else ("HU" if ds.get("Modality") == "CT" else None),
        "nbytes": frames * int(rows) * int(cols) * samples * itemsize,
        "attrs": dumps(attrs),
    }


class DICOMReader(FormatReader):
    """DICOM Part 10 files (128-byte preamble then ``DICM``)."""

    name = "dicom"
    priority = 20

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return len(head) >= 132 and head[128:132] == b"DICM"

    def read(self, path: str) -> Records:  # noqa: D102
        import pydicom
        from pydicom.errors import InvalidDicomError

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ts = getattr(ds.file_meta, "TransferSyntaxUID", None)
        # pydicom is lenient: garbage after the magic can still "parse". Every DICOM object names its SOP
        # class and instance (in the dataset, or in the file meta for DICOMDIR-like files).
        if ts is not None and not _UID.fullmatch(str(ts)):
            raise InvalidDicomError(f"invalid TransferSyntaxUID {str(ts)[:64]!r}")
        if not (ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")) or not (
                ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")):
            raise InvalidDicomError("no SOP Class UID / SOP Instance UID: not a DICOM object")
        threshold = int(config_get("scan.dicom-json-bulk-threshold", 1024))

        def bulk(elem: Any) -> str:
            # Large binary values (icons, overlays, private blobs) are referenced, not inlined.
            return f"omitted:{elem.tag:08X}"

        header = ds.file_meta.to_json_dict(threshold, bulk) if ds.file_meta else {}
        header.update(ds.to_json_dict(threshold, bulk))
        row: dict[str, Any] = {kw: _typed(kind, ds.get(kw)) for kw, kind in DICOM_COLUMNS.items()}
        if row["NumberOfFrames"] is None and row["Rows"]:
            row["NumberOfFrames"] = 1  # single-frame images omit the tag; 1 keeps sums over frames right
        row["TransferSyntaxUID"] = str(ts) if ts else None
        row["header"] = dumps(header)
        rec = Records(format="dicom", format_version=ts.name if ts else None, dicom=[row])
        rec.attrs = {k: str(ds.get(k)) for k in ("SOPClassUID", "Modality", "StudyInstanceUID",
                                                  "SeriesInstanceUID") if ds.get(k) is not None}
        pixels = _pixel_array_row(ds, ts)
        if pixels is not None:
            rec.arrays.append(pixels)
        return rec
