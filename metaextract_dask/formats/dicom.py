"""DICOM backend (pydicom): typed columns for common keywords plus the whole header as DICOM JSON (the
``dicom`` table), and lazy pixel data of one file or of a series of single-frame files.

Pixel data is never read while cataloguing (``stop_before_pixels``); its shape and type come from the image
pixel module, by the same rules that open it (:func:`pixel_layout`).

Cataloguing converts each raw element straight from its bytes (the fast path, :class:`_Fast`) wherever the
result provably equals pydicom's own conversion, value and warnings alike (none: a value pydicom would warn
about, or one whose conversion the fast path does not replicate, is converted by pydicom, element by
element). pydicom's per-element machinery cost more than reading the file. ``FAST_PATH = False`` turns it off.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import datetime as dt
import functools
import math
import operator
import os
import re
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaextract_dask.config import get as config_get
from metaextract_dask.formats.base import ArrayProxy, ArraySpec, FormatBackend, Records, fast_readers, \
    missing_array, truncation
from metaextract_dask.jsonutil import dumps

__all__ = ["DICOMBackend", "DeidentifiedReadError", "deidentifying", "DICOMFile", "DICOMSeries", "DICOM", "DICOM_COLUMNS", "parse_da", "pixel_layout",
           "series_spec", "series_files", "FAST_PATH"]

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

_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "date": pa.date32(),
                "floats": pa.list_(pa.float64())}
#: The ``dicom`` table: one row per DICOM file.
DICOM = pa.schema(
    [pa.field("path", pa.string(), nullable=False)]
    + [(kw, _ARROW_TYPES[kind]) for kw, kind in DICOM_COLUMNS.items()]
    + [("TransferSyntaxUID", pa.string()), ("header", pa.string())]  # header: DICOM JSON model (PS3.18 F.2)
)

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# The VRs of PS3.5 (a garbled VR is reported as UN in the header JSON).
_JSON_VRS = frozenset("AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
                      "UR US UT UV".split())
# Pixel-module keywords kept as array attributes.
_PIXEL_ATTRS = ("Modality", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
                "PixelRepresentation", "SamplesPerPixel", "RescaleType", "PixelSpacing", "SliceThickness",
                "ImageOrientationPatient", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")


# The de-identification profile in force for reads in this context (scan --deidentify), None: off.
_DEID: contextvars.ContextVar[Any] = contextvars.ContextVar("metaextract_dicom_deid", default=None)


@contextlib.contextmanager
def deidentifying(profile: Any) -> Iterator[None]:
    """Within the block, :meth:`DICOMBackend.read` de-identifies each object with `profile` (a
    :class:`metaextract_dask.deid.Profile`; None: no change) before any value reaches a row."""
    token = _DEID.set(profile)
    try:
        yield
    finally:
        _DEID.reset(token)


class DeidentifiedReadError(ValueError):
    """A read that failed while de-identifying; its message has the object's identifiers masked."""


def parse_da(value: Any) -> dt.date | None:
    """DICOM DA (``YYYYMMDD``, or the old ``YYYY.MM.DD``) to a date; None if empty or invalid."""
    text = str(value or "").strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


_TAGS: dict[str, Any] = {}


@functools.cache
def _data_element() -> type:
    from pydicom.dataelem import DataElement

    return DataElement


def _value(ds: Any, keyword: str) -> Any:
    """``ds.get(keyword)`` through the element's tag: pydicom's keyword lookup (``__getattr__``, the data
    dictionary, ``Tag()``) costs more than the element itself, 30 times a file."""
    if type(ds) is _Fast:
        return ds.value(keyword)
    tag = _TAGS.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword
        from pydicom.tag import BaseTag

        tag = _TAGS.setdefault(keyword, BaseTag(tag_for_keyword(keyword)))
    elem = getattr(ds, "_dict", {}).get(tag)  # after the header JSON, elements are converted already
    if elem is not None and isinstance(elem, _data_element()):
        return elem.value
    try:
        return ds[tag].value  # not converted yet (or a pydicom without _dict): pydicom's own path
    except KeyError:
        return None


def _meta(ds: Any) -> Any:
    """The file meta of a dataset or of a fast view."""
    return ds.meta if type(ds) is _Fast else ds.file_meta


def _get(ds: Any, keyword: str, problems: list[str] | None = None) -> Any:
    """``ds.get(keyword)``, None when the stored value does not parse (noted in `problems`)."""
    try:
        return _value(ds, keyword)
    except Exception as exc:  # pydicom converts on access: an IS of '1A' raises here
        if problems is not None:
            problems.append(f"invalid {keyword} value: {type(exc).__name__}: {exc}")
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


def pixel_layout(ds: Any) -> tuple[tuple[int, ...], np.dtype, list[str], int] | None:
    """(shape, dtype, dims, frames) of a dataset's pixel data as pydicom decodes it (``raw=True``), or None
    when the image pixel module is absent. The one rule for the catalog row and the lazy array: 1-bit
    pixels are unpacked to ``u1``; otherwise the smallest of 1/2/4/8 bytes holding BitsAllocated, signed
    where PixelRepresentation is 1.

    Raises
    ------
    ValueError
        If NumberOfFrames or SamplesPerPixel is present but not a positive integer.
    """
    rows, cols, bits = _value(ds, "Rows"), _value(ds, "Columns"), _value(ds, "BitsAllocated")
    if not rows or not cols or not bits:
        return None
    frames = int(_value(ds, "NumberOfFrames") or 1)
    samples = int(_value(ds, "SamplesPerPixel") or 1)
    if frames < 1 or samples < 1:
        raise ValueError(f"invalid NumberOfFrames {frames} / SamplesPerPixel {samples}")
    bits = int(bits)
    signed = int(_value(ds, "PixelRepresentation") or 0) == 1 and bits > 1
    itemsize = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
    dtype = np.dtype(f"{'i' if signed else 'u'}{itemsize}").newbyteorder("<")
    shape = ((frames,) if frames > 1 else ()) + (int(rows), int(cols)) + ((samples,) if samples > 1 else ())
    dims = (["frame"] if frames > 1 else []) + ["row", "column"] + (["sample"] if samples > 1 else [])
    return shape, dtype, dims, frames


def _units(ds: Any) -> str | None:
    """RescaleType, else Hounsfield units for CT (whose rescale gives HU by definition)."""
    units = _value(ds, "RescaleType")
    if units:
        return str(units)
    return "HU" if _value(ds, "Modality") == "CT" and _value(ds, "RescaleIntercept") not in (None, "") else None


def _plain(value: Any) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSfloat

    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, DSfloat):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def pixel_attrs(ds: Any) -> dict[str, Any]:
    """Attributes of the pixel array: pixel-module keywords, the modality rescale as ``scale_factor`` /
    ``add_offset`` and ``units``."""
    attrs = {}
    for k in _PIXEL_ATTRS:
        value = _get(ds, k)
        if value not in (None, ""):
            attrs[k] = _plain(value)
    slope, intercept = _typed("float", _get(ds, "RescaleSlope")), _typed("float", _get(ds, "RescaleIntercept"))
    if slope is not None:
        attrs["scale_factor"] = slope
    if intercept is not None:
        attrs["add_offset"] = intercept
    units = _units(ds)
    if units:
        attrs["units"] = units
    return attrs


def _pixel_row(ds: Any, ts: Any, file_size: int) -> dict[str, Any] | None:
    try:
        layout = pixel_layout(ds)
    except (TypeError, ValueError) as exc:  # an unparsable frame count: the array is known, its shape is not
        return {"name": "PixelData", "kind": "dicom-pixels", "error": f"{type(exc).__name__}: {exc}"}
    if layout is None:
        return None
    shape, dtype, dims, frames = layout
    compressed = bool(ts is not None and ts.is_compressed)
    if compressed:  # encapsulated: every frame is at least one 8-byte item header
        problem = truncation(8 * frames, file_size, f"an encapsulated pixel module of {frames:,} frames")
    elif ts is not None and ts.is_deflated:  # the whole dataset is zlib-compressed: no bound from the size
        problem = None
    else:
        packed = -(-math.prod(shape) * int(_value(ds, "BitsAllocated")) // 8)
        problem = truncation(packed, file_size, f"the pixel module ({'x'.join(map(str, shape))})")
    if problem:
        return {"name": "PixelData", "kind": "dicom-pixels", "shape": list(shape), "dtype": dtype.str,
                "dims": dims, "error": problem}
    attrs = {k: _typed("float" if k.startswith("Rescale") else "str", _get(ds, k))
             for k in ("PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "RescaleType") if k in ds}
    attrs.update({k: int(v) for k in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                                      "SamplesPerPixel") if (v := _value(ds, k)) is not None})
    return {
        "name": "PixelData",
        "kind": "dicom-pixels",
        "shape": list(shape),
        "dtype": dtype.str,
        "dims": dims,
        # Frames are stored (and decoded) one at a time: a frame is the natural on-disk chunk.
        "chunks": [1, *shape[1:]] if frames > 1 else None,
        "compression": (ts.keyword or ts.name) if compressed else None,
        "fill_value": None,
        "units": _units(ds),
        "nbytes": math.prod(shape) * dtype.itemsize,
        "attrs": dumps(attrs),
    }


@functools.cache
def _vr_sets() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """VRs whose JSON value is binary (InlineBinary / BulkDataURI), integers, floats (as pydicom has them)."""
    from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, FLOAT_VR, INT_VR, VR

    return (frozenset(BYTES_VR | AMBIGUOUS_VR) - {VR.US_SS}, frozenset(INT_VR - {VR.AT}) | {VR.US_SS},
            frozenset(FLOAT_VR))


def _vm(value: Any) -> int:
    """pydicom's ``DataElement.VM`` of a non-sequence value."""
    from pydicom.valuerep import PersonName

    if value is None:
        return 0
    if isinstance(value, (str, bytes, PersonName)):
        return 1 if value else 0
    try:
        iter(value)
    except TypeError:
        return 1
    return len(value)


def _element_json(elem: Any, threshold: int, bulk: Any, sets: Any) -> dict[str, Any]:
    """pydicom's ``DataElement.to_json_dict`` (the DICOM JSON model, PS3.18 F.2), value for value, without
    its per-element property lookups and logging: the header JSON of a small object cost more than reading
    it. ``tests/test_backend_dicom.py`` checks it equals pydicom's on pydicom's own test files."""
    binary, ints, floats = sets
    vr = elem.VR
    out: dict[str, Any] = {"vr": vr}
    value = elem.value
    if vr in binary:
        if _vm(value):
            if len(value) > (threshold // 4) * 3:
                out["BulkDataURI"] = bulk(elem)
            else:
                out["InlineBinary"] = base64.b64encode(value).decode("utf-8")
        return out
    if vr == "SQ":
        out["Value"] = [_dataset_json(item, threshold, bulk, sets) for item in value]
        return out
    vm = _vm(value)
    if not vm:
        return out
    if vr == "PN":
        items = []
        for v in (value if vm > 1 else [value]):
            comps = v.components
            entry = {"Alphabetic": comps[0]}
            if len(comps) > 1:
                entry["Ideographic"] = comps[1]
            if len(comps) > 2:
                entry["Phonetic"] = comps[2]
            items.append(entry)
        out["Value"] = items
        return out
    if vr == "AT":
        out["Value"] = [format(v, "08X") for v in (value if vm > 1 else [value])]
        return out
    values = list(value) if vm > 1 else [value]
    number = int if vr in ints else float if vr in floats else None
    if number is not None:
        from pydicom.dataelem import empty_value_for_VR

        values = [number(v) if v is not None else empty_value_for_VR(vr) for v in values]
    out["Value"] = values
    return out


def _dataset_json(ds: Any, threshold: int, bulk: Any, sets: Any) -> dict[str, Any]:
    """pydicom's ``Dataset.to_json_dict`` through :func:`_element_json` (raises where pydicom would)."""
    return {f"{tag:08X}": _element_json(ds[tag], threshold, bulk, sets) for tag in ds.keys()}


def _bulk(elem: Any) -> str:
    # Large binary values (icons, overlays, private blobs) are referenced, not inlined.
    return f"omitted:{elem.tag:08X}"


def _json_header(ds: Any, threshold: int, problems: list[str]) -> dict[str, Any]:
    """The DICOM JSON model of `ds` (file meta included), element by element: an element whose value does
    not parse keeps its VR without a value, and is reported."""

    if type(ds) is _Fast:
        return _fast_json_header(ds, threshold, problems)
    bulk = _bulk
    sets = _vr_sets()
    out: dict[str, Any] = {}
    for part in (ds.file_meta, ds) if ds.file_meta else (ds,):
        try:
            out.update(_dataset_json(part, threshold, bulk, sets))
            continue
        except Exception:  # find the elements at fault, keep the others
            pass
        for tag in list(part.keys()):
            key = f"{tag:08X}"
            raw = part.get_item(tag)
            vr = getattr(raw, "VR", None) or "UN"
            try:
                out[key] = _element_json(part[tag], threshold, bulk, sets)
            except Exception as exc:  # the element's value (or its VR) does not parse
                out[key] = {"vr": vr if vr in _JSON_VRS else "UN"}
                problems.append(f"invalid value of {key} ({vr}): {type(exc).__name__}: {exc}")
    return out


# --------------------------------------------------------------------------- #
# fast path: raw elements straight from their bytes
# --------------------------------------------------------------------------- #
#: Convert raw elements from their bytes where the outcome provably equals pydicom's (tests force it off).
FAST_PATH = True

# Marker: the element's column value is pydicom's own object (read through ``ds[tag]``).
_SLOW = object()
_ISO8859 = "iso8859"  # pydicom's default_encoding, for the DEFAULT_CHARSET_VRs and UI/UR/AE
# Single-byte or UTF-8 codecs without code extensions: with no ESC in a value, pydicom's decode_bytes is
# ``value.decode(codec)`` and a PN re-encodes to the same bytes (its encode/decode round trip is exact).
_SIMPLE_CODECS = frozenset({"iso8859", "latin_1", "UTF8", "utf_8"})
_UI_VALUE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # pydicom's UI regex, anchored both ends
_IS_VALUE = re.compile(r" *[+\-]?[0-9]+ *")  # pydicom's IS regex with ASCII digits (stricter)
# Text VRs decoded with the dataset's character set, with pydicom's maximum value length (0: none).
_TEXT_MAX = {"LO": 64, "SH": 16, "UC": 0}
_SINGLE_TEXT_MAX = {"LT": 10240, "ST": 1024, "UT": 0}
_NUMBERS = {"US": (2, "H"), "SS": (2, "h"), "UL": (4, "L"), "SL": (4, "l"), "UV": (8, "Q"), "SV": (8, "q"),
            "FL": (4, "f"), "FD": (8, "d")}
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
# keyword -> (tag, VR of the data dictionary); columns read a fast value only where the VR is this one.
_KEYWORDS: dict[str, tuple[int, str]] = {}
_UNPACK: dict[tuple[str, int, bool], Any] = {}  # (struct code, count, little endian) -> unpack
_KEYS: dict[int, str] = {}  # tag -> its header key ("00100010"), for the first 4096 tags met
_RAW: list[type] = []  # pydicom's RawDataElement, imported on first use


@functools.cache
def _pydicom_defaults() -> tuple[Any, ...]:
    """pydicom's config, hooks, default VR and value hooks, ``empty_value_for_VR`` and ``MultiValue``."""
    import pydicom.hooks
    from pydicom import config
    from pydicom.dataelem import empty_value_for_VR
    from pydicom.multival import MultiValue

    return (config, pydicom.hooks.hooks, pydicom.hooks.raw_element_vr, pydicom.hooks.raw_element_value,
            empty_value_for_VR, MultiValue)


def _fast_enabled() -> bool:
    """Whether pydicom is configured as the fast path assumes: its default hooks and value types, no element
    callback, and WARN validation (the mode whose silence the fast path's checks prove)."""
    if not FAST_PATH or not fast_readers():
        return False
    config, hooks, vr_hook, value_hook, _, _ = _pydicom_defaults()
    converters, pick, defaults = _pydicom_converters()
    try:
        same_converters = pick(converters) == defaults
    except KeyError:
        return False
    return (same_converters and config.data_element_callback is None and not hooks.raw_element_kwargs
            and hooks.raw_element_vr is vr_hook and hooks.raw_element_value is value_hook
            and config.settings.reading_validation_mode == config.WARN
            and not config.datetime_conversion and not config.use_DS_numpy and not config.use_IS_numpy
            and not config.use_DS_decimal and not config.use_none_as_empty_text_VR_value)


@functools.cache
def _pydicom_converters() -> tuple[dict[str, Any], Any, tuple[Any, ...]]:
    """pydicom's value converters, a getter of those of the VRs the fast path converts, and what it gets in
    pydicom 3.0 (a converter replaced by the user turns the fast path off)."""
    from pydicom import values as v

    strings = dict.fromkeys(("AS", "CS"), v.convert_string)
    numbers = {vr: (v.convert_numbers, code) for vr, (_, code) in _NUMBERS.items()}
    defaults = {
        **strings, "DA": v.convert_DA_string, "DT": v.convert_DT_string, "TM": v.convert_TM_string,
        "AE": v.convert_AE_string, "UR": v.convert_UR_string, "UI": v.convert_UI, "DS": v.convert_DS_string,
        "IS": v.convert_IS_string, "LO": v.convert_text, "SH": v.convert_text, "UC": v.convert_text,
        "LT": v.convert_single_string, "ST": v.convert_single_string, "UT": v.convert_single_string,
        "PN": v.convert_PN, "AT": v.convert_ATvalue, **numbers, "OB": v.convert_OBvalue, "OD": v.convert_OBvalue,
        "OF": v.convert_OWvalue, "OL": v.convert_OBvalue, "OV": v.convert_OVvalue, "OW": v.convert_OWvalue,
        "SQ": v.convert_SQ,
    }
    return v.converters, operator.itemgetter(*defaults), tuple(defaults.values())


def _keyword(keyword: str) -> tuple[int, str]:
    """(tag, data-dictionary VR) of a keyword."""
    info = _KEYWORDS.get(keyword)
    if info is None:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(keyword)
        info = _KEYWORDS.setdefault(keyword, (tag, dictionary_VR(tag)))
    return info


class _Fast:
    """A read dataset seen through the fast path: each raw element is converted once, on first use (in the
    order pydicom would convert it, so that its warnings keep their order), from its bytes when the result
    provably equals pydicom's, else by pydicom (``ds[tag]``).

    A record is ``(vr, json, value)``: `json` the DICOM JSON model's ``Value`` list (the bytes for binary
    VRs; None: no value), `value` what the columns read (pydicom's value, or an equivalent for the keyword's
    dictionary VR: ``str`` for UI and PN, ``float`` / list of float for DS, ``int`` for IS; ``_SLOW`` where
    only pydicom's object will do).
    """

    __slots__ = ("ds", "raw", "text", "done", "fallbacks", "meta", "plain")

    def __init__(self, ds: Any, meta: _Fast | None = None) -> None:
        self.ds = ds
        self.meta = meta
        d = ds._dict
        self.raw: dict[int, Any] = dict(zip(map(int, d), d.values()))
        self.done: dict[int, tuple[str, Any, Any] | None] = {}
        self.fallbacks: list[int] = []  # tags of raw elements pydicom converted (for tests and profiling)
        self.plain = True  # the header JSON holds only str, int, finite float, list and dict (so far)
        if not _RAW:
            from pydicom.dataelem import RawDataElement

            _RAW.append(RawDataElement)
        # The codec of the text VRs (LO, SH, UC, LT, ST, UT, PN), as Dataset.__getitem__ picks it, when it
        # is one simple codec; else None (text VRs go through pydicom).
        enc = ds.original_character_set
        enc = [enc] if isinstance(enc, str) else enc
        self.text = enc[0] if enc and len(enc) == 1 and enc[0] in _SIMPLE_CODECS else None

    def record(self, tag: int) -> tuple[str, Any, Any] | None:
        """The fast record of `tag` (converting it now if it is new), or None: pydicom's element it is."""
        rec = self.done.get(tag, _SLOW)
        if rec is not _SLOW:
            return rec
        raw, rec = self.raw.get(tag), None
        if type(raw) is _RAW[0]:
            if tag & 0x10000 and not self._creator_done(tag):
                self.fallbacks.append(tag)
            else:
                rec = _convert(raw, self.text, tag)
                if rec is None:
                    self.fallbacks.append(tag)
        if rec is None and type(raw) is not _data_element():  # (a DataElement: converted while reading)
            if raw is not None:
                self.ds[tag]  # noqa: B018 - pydicom converts (and warns) now, where it would have without us
        self.done[tag] = rec
        return rec

    def _creator_done(self, tag: int) -> bool:
        """Whether pydicom, converting private `tag`, would convert nothing else: Dataset.__setitem__
        converts the block's private creator first, where it is present and still raw."""
        creator = (tag & 0xFFFF0000) | ((tag & 0xFFFF) >> 8)
        return creator == tag or creator in self.done or type(self.raw.get(creator)) is not _RAW[0]

    def value(self, keyword: str) -> Any:
        """``ds.get(keyword)``: the fast value where the element's VR is the keyword's, else pydicom's."""
        tag, vr = _KEYWORDS.get(keyword) or _keyword(keyword)
        if tag not in self.raw:
            return None
        try:
            rec = self.record(tag)
            if rec is not None and rec[0] == vr and rec[2] is not _SLOW:
                return rec[2]
            elem = self.raw[tag]
            if rec is None and type(elem) is _data_element():  # converted while reading (the transfer syntax)
                return elem.value
            return self.ds[tag].value
        except KeyError:  # as _value: pydicom's KeyError (a VR lookup failing in RAISE mode) reads as absent
            return None

    def __contains__(self, keyword: str) -> bool:
        return _keyword(keyword)[0] in self.raw




def _convert(raw: Any, text: str | None, tag: int) -> tuple[str, Any, Any] | None:
    """pydicom's conversion of `raw` (``convert_raw_data_element`` with the default hooks, then
    ``Dataset.__getitem__``'s fix-ups) as a fast record, or None where it cannot be shown equal and silent."""
    vr = raw.VR
    if vr is None:  # implicit VR: the raw_element_vr hook's dictionary lookup (private tags go to pydicom)
        if tag & 0x10000:
            return None
        from pydicom.datadict import dictionary_VR

        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    if tag in _LUT_DESCRIPTORS:
        return None  # the raw_element_value hook edits their first value
    value = raw.value
    if value is None or raw.is_buffered or raw.length != len(value):
        return None  # deferred, buffered or undefined length
    if not value:
        conv = _CONVERTERS.get(vr)
        if conv is None:
            return None
        empty = _pydicom_defaults()[4](vr)
        return vr, None, "" if vr == "PN" else empty
    conv = _CONVERTERS.get(vr)
    return None if conv is None else conv(vr, value, raw, text)


def _c_string(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any]:
    # AS CS DA DT TM (datetime_conversion off): convert_string -> multi_string
    items = b.decode(_ISO8859).rstrip(" \x00").split("\\")
    if len(items) == 1:
        v = items[0]
        return vr, [v] if v else None, v
    return vr, items, _pydicom_defaults()[5](str, items)


def _c_ae(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any]:
    items = [s.strip() for s in b.decode(_ISO8859).split("\\")]
    if len(items) == 1:
        v = items[0]
        return vr, [v] if v else None, v
    return vr, items, _pydicom_defaults()[5](str, items)


def _c_ur(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any]:
    v = b.decode(_ISO8859).rstrip()
    return vr, [v] if v else None, v


def _c_ui(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    items = b.decode(_ISO8859).rstrip("\0 ").split("\\")
    for v in items:  # UID() warns about a value over 64 characters or not of digits and dots
        if v and (len(v) > 64 or not _UI_VALUE.fullmatch(v)):
            return None
    if len(items) == 1:
        v = items[0]
        return vr, [v] if v else None, v
    return vr, items, _SLOW


def _c_ds(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    items = b.decode(_ISO8859).strip().rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0]:
        return vr, None, ""  # DSfloat('') is ''
    try:  # DSfloat(v) is float(v) (no check in WARN mode); a blank item fails the JSON: pydicom's path
        numbers = [float(v) for v in items]
    except ValueError:
        return None
    return vr, numbers, numbers[0] if len(numbers) == 1 else numbers


def _c_is(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    items = b.decode(_ISO8859).rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0]:
        return vr, None, ""  # IS('') is ''
    for v in items:  # IS() warns about more than 12 characters or not an integer ("3.0", "1A")
        if len(v) > 12 or not _IS_VALUE.fullmatch(v):
            return None
    numbers = [int(v) for v in items]
    return vr, numbers, numbers[0] if len(numbers) == 1 else _SLOW


def _c_number(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    size, code = _NUMBERS[vr]
    count, extra = divmod(len(b), size)
    if extra:
        return None  # pydicom raises (or, configured so, warns and makes it UN)
    key = (code, count, raw.is_little_endian)
    unpack = _UNPACK.get(key)
    if unpack is None:
        unpack = struct.Struct(f"{'<' if key[2] else '>'}{count}{code}").unpack
        if count <= 16:  # the usual VMs; long arrays are unpacked without keeping their format
            _UNPACK[key] = unpack
    values = list(unpack(b))
    return vr, values, values[0] if count == 1 else values


def _c_at(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    count, extra = divmod(len(b), 4)
    if extra:
        return None  # pydicom logs and drops the tail
    key = ("H", 2 * count, raw.is_little_endian)
    unpack = _UNPACK.get(key)
    if unpack is None:
        unpack = struct.Struct(f"{'<' if key[2] else '>'}{2 * count}H").unpack
        if count <= 16:
            _UNPACK[key] = unpack
    half = unpack(b)
    return vr, [f"{half[i] << 16 | half[i + 1]:08X}" for i in range(0, 2 * count, 2)], _SLOW


def _c_binary(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any]:
    return vr, b, b


def _c_text(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    # LO SH UC: convert_text (decode, split, length check of each unstripped value, rstrip)
    if text is None or b"\x1b" in b:
        return None
    try:
        items = b.decode(text).split("\\")
    except UnicodeDecodeError:
        return None  # pydicom warns and decodes with replacement characters
    limit = _TEXT_MAX[vr]
    if limit and len(b) > limit and max(map(len, items)) > limit:  # a character is at least one byte
        return None
    items = [v.rstrip("\0 ") for v in items]
    if len(items) == 1:
        v = items[0]
        return vr, [v] if v else None, v
    return vr, items, _pydicom_defaults()[5](str, items)


def _c_single_text(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    # LT ST UT: convert_single_string (no split)
    if text is None or b"\x1b" in b:
        return None
    try:
        v = b.decode(text)
    except UnicodeDecodeError:
        return None
    limit = _SINGLE_TEXT_MAX[vr]
    if limit and len(v) > limit:
        return None
    v = v.rstrip("\0 ")
    return vr, [v] if v else None, v


def _c_pn(vr: str, b: bytes, raw: Any, text: str | None) -> tuple[str, Any, Any] | None:
    # convert_PN: strip, decode, split; PersonName(str) checks (<= 3 groups of <= 64 characters) and drops
    # trailing empty groups; its str() is the groups joined by '='.
    b = b.rstrip(b"\x00 ")
    if text is None or b"\x1b" in b:
        return None
    try:
        items = b.decode(text).split("\\")
    except UnicodeDecodeError:
        return None
    names = []
    for v in items:
        groups = v.split("=")
        if len(groups) > 3 or (len(v) > 64 and max(map(len, groups)) > 64):
            return None
        while groups and not groups[-1]:
            groups.pop()
        names.append(groups)
    if len(names) == 1:
        groups = names[0]
        return vr, [_pn_json(groups)] if groups else None, "=".join(groups)
    if not all(names):
        return None  # a multi-valued PN with an empty name: the JSON model fails in pydicom's path
    return vr, [_pn_json(g) for g in names], _SLOW


def _pn_json(groups: list[str]) -> dict[str, str]:
    out = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        out["Ideographic"] = groups[1]
    if len(groups) > 2:
        out["Phonetic"] = groups[2]
    return out


_CONVERTERS: dict[str, Any] = {
    "AS": _c_string, "CS": _c_string, "DA": _c_string, "DT": _c_string, "TM": _c_string, "AE": _c_ae,
    "UR": _c_ur, "UI": _c_ui, "DS": _c_ds, "IS": _c_is, "LO": _c_text, "SH": _c_text, "UC": _c_text,
    "LT": _c_single_text, "ST": _c_single_text, "UT": _c_single_text, "PN": _c_pn,
    "AT": _c_at, **{vr: _c_number for vr in _NUMBERS}, **{vr: _c_binary for vr in _BINARY},
}


def _fast_json_header(view: _Fast, threshold: int, problems: list[str]) -> dict[str, Any]:
    """:func:`_json_header` of a fast view: fast records directly, every other element exactly as there
    (including which VR a failing element is reported with, and the retry of the first failure)."""
    limit = (threshold // 4) * 3
    sets = _vr_sets()
    out: dict[str, Any] = {}
    plain = True
    parts = (view.meta, view) if view.meta is not None and view.ds.file_meta else (view,)
    for part in parts:
        ds = part.ds
        # _json_header walks a part whole and, at its first failure, once more element by element, taking
        # each element's VR before converting it: the first failure is retried, later ones are not.
        failed = False
        for tag in ds.keys():
            itag = int(tag)
            key = _KEYS.get(itag)
            if key is None:
                key = f"{itag:08X}"
                if len(_KEYS) < 4096:
                    _KEYS[itag] = key
            raw = ds.get_item(tag) if failed else None
            try:
                rec = part.record(itag)
                if rec is None:
                    entry, flat = _converted_json(ds[tag], threshold, sets)
                    out[key] = entry
                    plain = plain and flat
                    continue
            except Exception as exc:
                error = exc
                if not failed:
                    failed = True
                    raw = ds.get_item(tag)
                    try:
                        out[key] = _element_json(ds[tag], threshold, _bulk, sets)
                        continue
                    except Exception as again:
                        error = again
                vr = getattr(raw, "VR", None) or "UN"
                out[key] = {"vr": vr if vr in _JSON_VRS else "UN"}
                problems.append(f"invalid value of {key} ({vr}): {type(error).__name__}: {error}")
                continue
            out[key] = _record_json(rec, key, limit)
            if plain and rec[0] in _FLOAT_VRS and rec[1] is not None and not all(map(math.isfinite, rec[1])):
                plain = False  # NaN / Infinity: strings in strict JSON, by to_jsonable
    view.plain = plain
    return out


def _record_json(rec: tuple[str, Any, Any], key: str, limit: int) -> dict[str, Any]:
    """The JSON-model entry of a fast record (`limit`: the most bytes inlined)."""
    vr, values, _ = rec
    if values is None:
        return {"vr": vr}
    if vr in _BINARY:
        return ({"vr": vr, "BulkDataURI": f"omitted:{key}"} if len(values) > limit else
                {"vr": vr, "InlineBinary": base64.b64encode(values).decode("utf-8")})
    return {"vr": vr, "Value": values}


def _converted_json(elem: Any, threshold: int, sets: Any) -> tuple[dict[str, Any], bool]:
    """:func:`_element_json` of an element pydicom converted, its sequence items' elements through the fast
    path (pydicom parsed the items; their elements are still raw); and whether the entry is plain JSON.
    Raises where :func:`_element_json` would (the first failing element of the first failing item)."""
    if elem.VR != "SQ":
        entry = _element_json(elem, threshold, _bulk, sets)
        return entry, _plain_entry(entry)
    items = []
    plain = True
    limit = (threshold // 4) * 3
    for item in elem.value:
        view = _Fast(item)
        out: dict[str, Any] = {}
        for tag in item.keys():  # as _dataset_json: in order, no recovery (a failure fails the sequence)
            itag = int(tag)
            key = _KEYS.get(itag) or f"{itag:08X}"
            rec = view.record(itag)
            if rec is None:
                entry, flat = _converted_json(item[tag], threshold, sets)
                out[key] = entry
                plain = plain and flat
                continue
            out[key] = _record_json(rec, key, limit)
            if plain and rec[0] in _FLOAT_VRS and rec[1] is not None and not all(map(math.isfinite, rec[1])):
                plain = False
        items.append(out)
    return {"vr": elem.VR, "Value": items}, plain


def _plain_entry(entry: dict[str, Any]) -> bool:
    """Whether ``to_jsonable`` leaves this JSON-model entry as it is (so orjson writes the same text): values
    of str (subclasses too: UID), exact int and finite float, PN dicts of str (a sequence's items are dicts
    of entries: not plain here)."""
    values = entry.get("Value")
    if values is None:
        return True
    for v in values:
        t = type(v)
        if t is int or (t is float and math.isfinite(v)) or isinstance(v, str):
            continue
        if t is dict and all(type(c) is str for c in v.values()):
            continue
        return False
    return True


def _header_text(header: dict[str, Any], plain: bool) -> str:
    """``dumps(header)``; a header of plain JSON values (as the fast path builds) skips ``to_jsonable``,
    which returns such a value unchanged."""
    from metaextract_dask import jsonutil

    if plain and jsonutil.orjson is not None:
        try:
            return jsonutil.orjson.dumps(header).decode()  # type: ignore[no-any-return]
        except (TypeError, jsonutil.orjson.JSONEncodeError):  # as dumps: json does what orjson cannot
            pass
    return dumps(header)


class DICOMBackend(FormatBackend):
    """DICOM Part 10 files (128-byte preamble then ``DICM``)."""

    name = "dicom"
    priority = 20
    supports_arrays = True
    extra_tables = {"dicom": DICOM}
    suffixes = (".dcm", ".dicom")
    requires = ("pydicom",)

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return len(head) >= 132 and head[128:132] == b"DICM"

    def read(self, path: str) -> Records:  # noqa: D102
        profile = _DEID.get()
        if profile is None:
            return self._read(path, None)
        # Warnings and errors may quote values: they are caught here and masked before they leave.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome: list[Any] = []
            try:
                rec = self._read(path, profile, outcome)
            except Exception as exc:
                if not outcome:  # failed before any value was decoded: nothing to mask
                    raise
                raise DeidentifiedReadError(profile.scrub(f"{type(exc).__name__}: {exc}", outcome[0])) from None
        for w in caught:
            warnings.warn(profile.scrub(str(w.message), outcome[0]) if outcome else "a warning (masked: "
                          "raised before de-identification)", stacklevel=1)
        return rec

    def _read(self, path: str, profile: Any, outcome: list[Any] | None = None, fast: bool | None = None
              ) -> Records:
        import pydicom
        from pydicom.errors import InvalidDicomError

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if profile is not None and outcome is not None:
            outcome.append(profile.apply(ds, collect=True))
        if profile is None and (_fast_enabled() if fast is None else fast):
            # the same reads below, each element converted from its bytes where that provably equals pydicom
            ds = _Fast(ds, _Fast(ds.file_meta) if ds.file_meta is not None else None)
        problems: list[str] = []
        ts = _get(_meta(ds), "TransferSyntaxUID", problems)
        if type(ts) is str:
            from pydicom.uid import UID

            ts = UID(ts)  # a fast value (a valid UID): pydicom's type, for .name and .is_compressed
        # pydicom is lenient: garbage after the magic can still "parse"; with a transfer syntax that is not a
        # UID, nothing after the file meta was decoded meaningfully.
        if ts is not None and not _UID.fullmatch(str(ts)):
            raise InvalidDicomError(f"invalid TransferSyntaxUID {str(ts)[:64]!r}")
        meta = _meta(ds)
        if not (_get(ds, "SOPClassUID") or _get(meta, "MediaStorageSOPClassUID")) or not (
                _get(ds, "SOPInstanceUID") or _get(meta, "MediaStorageSOPInstanceUID")):
            problems.append("no SOP Class UID / SOP Instance UID (not a complete DICOM object)")
        threshold = int(config_get("scan.dicom-json-bulk-threshold", 1024))
        header = _json_header(ds, threshold, problems)
        row: dict[str, Any] = {kw: _typed(kind, _get(ds, kw, problems)) for kw, kind in DICOM_COLUMNS.items()}
        if row["NumberOfFrames"] is None and row["Rows"] and "NumberOfFrames" not in ds:
            row["NumberOfFrames"] = 1  # single-frame images omit the tag; 1 keeps sums over frames right
        row["TransferSyntaxUID"] = str(_get(meta, "TransferSyntaxUID") or "") or None
        row["header"] = _header_text(header, type(ds) is _Fast and ds.plain)
        if outcome:
            problems = [profile.scrub(p, outcome[0]) for p in problems]
        rec = Records(format="dicom", format_version=ts.name if ts else None, tables={"dicom": [row]},
                      warnings=list(dict.fromkeys(problems)))
        rec.attrs = {k: str(v) for k in ("SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID")
                     if (v := _get(ds, k)) is not None}
        pixels = _pixel_row(ds, ts, os.path.getsize(path))
        if pixels is not None:
            rec.arrays.append(pixels)
        return rec

    def list_arrays(self, path: str) -> list[str]:  # noqa: D102
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return ["PixelData"] if pixel_layout(ds) is not None else []

    def open_array(self, path: str, name: str) -> ArraySpec:  # noqa: D102
        import pydicom

        from metaextract_dask.sources import local_path

        # a URL or compressed file: its header from the local copy; the proxy keeps `path` (its own reads localise)
        ds = pydicom.dcmread(local_path(path), stop_before_pixels=True)
        layout = pixel_layout(ds)
        if name != "PixelData" or layout is None:
            raise missing_array("DICOM", path, name, ["PixelData"] if layout is not None else [])
        shape, dtype, dims, frames = layout
        chunks = (1, *shape[1:]) if frames > 1 else None
        return ArraySpec(DICOMFile(path, shape, dtype, multiframe=frames > 1), dims, pixel_attrs(ds), chunks)

    def file_attrs(self, path: str) -> dict[str, Any]:  # noqa: D102
        return dict(self.read(path).attrs)


# --------------------------------------------------------------------------- #
# lazy pixel data
# --------------------------------------------------------------------------- #
def _pixels(path: str, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    # raw=True: stored values as decoded from the transfer syntax, no colour-space conversion; pydicom never
    # applies the modality LUT here. `index` reads one frame of a multi-frame file.
    from metaextract_dask.sources import local_path

    path = local_path(path)  # a URL or a compressed file: its whole content, fetched / decompressed once
    return pixel_array(path, index=index, raw=True)


class DICOMFile(ArrayProxy):
    """Pixel data of one DICOM file; for a multi-frame file axis 0 is the frame, read frame by frame."""

    def __init__(self, path: str, shape: Sequence[int], dtype: Any, *, multiframe: bool) -> None:
        super().__init__(path, shape, dtype)
        self.multiframe = multiframe

    def _read(self, key: tuple[slice, ...]) -> Any:
        if not self.multiframe:
            return _pixels(self.path, None)[key]
        frames = key[0]
        if frames.start == 0 and frames.stop == self.shape[0]:
            return _pixels(self.path, None).reshape(self.shape)[key]
        return np.stack([_pixels(self.path, i)[key[1:]] for i in range(frames.start, frames.stop)])


class DICOMSeries(ArrayProxy):
    """Single-frame DICOM files stacked along a new leading axis, in the given order."""

    def __init__(self, paths: Sequence[str], shape: Sequence[int], dtype: Any) -> None:
        from metaextract_dask.formats.handles import stamp

        self.paths = tuple(str(p) for p in paths)
        super().__init__(self.paths[0], shape, dtype)
        self._token = tuple(stamp(p) for p in self.paths)  # type: ignore[assignment]

    def _ident(self) -> tuple[Any, ...]:
        return self.paths

    def __repr__(self) -> str:
        return f"DICOMSeries({len(self.paths)} files, shape={self.shape}, dtype={self.dtype})"

    def _read(self, key: tuple[slice, ...]) -> Any:
        return np.stack([_pixels(p, None)[key[1:]] for p in self.paths[key[0]]])


def series_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """The files of a series: a directory's files (sorted), one file, or the given paths."""
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        if p.is_dir():
            return sorted(str(c) for c in p.iterdir() if c.is_file())
        return [str(p)]
    return [os.fspath(p) for p in paths]


def _position(ds: Any) -> float:
    """Position along the slice normal: (row cosines x column cosines) . ImagePositionPatient; NaN if unknown."""
    iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
    if not iop or not ipp or len(iop) != 6 or len(ipp) != 3:
        return math.nan
    normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
    return float(np.dot(normal, np.asarray(ipp, dtype=float)))


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """PixelSpacing (mm between rows, mm between columns), or None when absent or malformed."""
    value = ds.get("PixelSpacing")
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def series_spec(files: Sequence[str]) -> ArraySpec:
    """The (slice, row, column) volume of single-frame files of one series, sorted along the slice normal
    (ties, and every file when some position is unknown, by InstanceNumber). Reads headers only.

    Coordinates: ``z`` (mm along the slice normal), ``instance_number`` and ``path`` along ``slice``; ``y``
    and ``x`` (mm, from PixelSpacing) along ``row`` and ``column``; where slope or intercept vary
    between slices they are ``scale_factor`` / ``add_offset`` coordinates (not attributes).

    Raises
    ------
    ValueError
        If no files are given, or they do not share SeriesInstanceUID, Rows, Columns and pixel type, or a file
        has no pixel data or is multi-frame.
    """
    import pydicom

    if not files:
        raise ValueError("open_dicom_series: no files given")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    layouts = []
    for ds, p in zip(headers, files):
        layout = pixel_layout(ds)
        if layout is None:
            raise missing_array("DICOM", p, "PixelData", [])
        layouts.append(layout)
    for key in ("SeriesInstanceUID", "Rows", "Columns"):
        values = {str(ds.get(key)) for ds in headers}
        if len(values) != 1:
            raise ValueError(f"open_dicom_series: files differ in {key}: {sorted(values)}")
    if len({(lay[0], lay[1].str) for lay in layouts}) != 1:
        raise ValueError("open_dicom_series: files differ in pixel layout (shape/samples/bits/sign): "
                         f"{sorted({(lay[0], lay[1].str) for lay in layouts})}")
    if layouts[0][3] > 1:
        raise ValueError("open_dicom_series: multi-frame files are volumes already; use open_array")
    z = np.array([_position(ds) for ds in headers])
    inst = np.array([int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") not in (None, "") else -1
                     for ds in headers], dtype=np.int64)
    if np.isnan(z).any():  # position unknown for some slice: InstanceNumber orders the whole series
        order = sorted(range(len(files)), key=lambda i: (inst[i] < 0, inst[i], files[i]))
    else:
        order = sorted(range(len(files)), key=lambda i: (z[i], inst[i], files[i]))
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    shape2d, dtype = layouts[0][0], layouts[0][1]
    attrs = pixel_attrs(headers[0])
    def rescale(ds: Any, keyword: str, default: float) -> float:
        value = _typed("float", _get(ds, keyword))
        return default if value is None else value

    slopes = np.array([rescale(ds, "RescaleSlope", 1.0) for ds in headers])
    intercepts = np.array([rescale(ds, "RescaleIntercept", 0.0) for ds in headers])
    coords: dict[str, Any] = {
        "z": ("slice", z[order], {"units": "mm", "long_name": "position along the slice normal (patient space)"}),
        "instance_number": ("slice", inst[order]),
        "path": ("slice", np.array(files, dtype=object)),
    }
    spacing = _pixel_spacing(headers[0])
    if spacing is not None:  # PixelSpacing is (row spacing, column spacing): between rows, between columns
        rows, cols = shape2d[0], shape2d[1]
        coords["y"] = ("row", np.arange(rows) * spacing[0], {"units": "mm", "long_name": "row offset"})
        coords["x"] = ("column", np.arange(cols) * spacing[1], {"units": "mm", "long_name": "column offset"})
    if np.ptp(slopes) or np.ptp(intercepts):
        attrs.pop("scale_factor", None)
        attrs.pop("add_offset", None)
        coords["scale_factor"] = ("slice", slopes)
        coords["add_offset"] = ("slice", intercepts)
    proxy = DICOMSeries(files, (len(files), *shape2d), dtype)
    return ArraySpec(proxy, ["slice", *layouts[0][2]], attrs, (1, *shape2d), coords)
