"""The DICOM backend's fast path (raw elements converted from their bytes) gives exactly what pydicom's own
conversion gives: the whole ``Records`` (attrs, arrays, the ``dicom`` row with its header JSON, warnings),
the library warnings pydicom emits, and the same exceptions, on pydicom's test files, the sample generator's
files and hand-encoded files full of invalid and edge-case values."""

from __future__ import annotations

import dataclasses
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest

from metaextract_dask.formats import dicom as D
from metaextract_dask.testing import reference_files

__all__: list[str] = []

_CT = "1.2.840.10008.5.1.4.1.1.2"
_EXPLICIT_LE, _IMPLICIT_LE, _EXPLICIT_BE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
# VRs with a 4-byte length in explicit VR (PS3.5 7.1.2)
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UR", "UT", "UN"}


def _outcome(path: str, fast: bool) -> tuple[Any, list[tuple[str, str]]]:
    """What a read yields: the Records (or the exception) and every warning, in order."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: Any = dataclasses.asdict(D.DICOMBackend()._read(path, None, None, fast=fast))
        except Exception as exc:
            result = ("raised", type(exc).__name__, str(exc))
    return result, [(type(w.message).__name__, str(w.message)) for w in caught]


def _assert_same(path: str) -> Any:
    slow = _outcome(path, False)
    fast = _outcome(path, True)
    assert repr(fast) == repr(slow), path  # repr: NaN values compare equal; value types must match too
    return slow


# --------------------------------------------------------------------------- #
# a minimal DICOM encoder: exact bytes, valid or not
# --------------------------------------------------------------------------- #
def num(code: str, *values: Any) -> tuple[str, tuple[Any, ...]]:
    """A numeric value, packed in the file's byte order."""
    return code, values


def _value(value: Any, implicit: bool, little: bool) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(value, tuple):  # num()
        code, values = value
        return struct.pack(f"{'<' if little else '>'}{len(values)}{code}", *values)
    # a sequence: a list of items, each a list of elements
    order = "<" if little else ">"
    out = b""
    for item in value:
        body = _encode(item, implicit, little)
        out += struct.pack(f"{order}HHI", 0xFFFE, 0xE000, len(body)) + body
    return out


def _encode(elements: list[tuple[int, str, Any]], implicit: bool, little: bool) -> bytes:
    order = "<" if little else ">"
    out = b""
    for tag, vr, value in elements:
        data = _value(value, implicit, little)
        head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
        if implicit:
            out += head + struct.pack(f"{order}I", len(data)) + data
        elif vr in _LONG:
            out += head + vr.encode() + b"\0\0" + struct.pack(f"{order}I", len(data)) + data
        else:
            out += head + vr.encode() + struct.pack(f"{order}H", len(data)) + data
    return out


def write(path: Path, elements: list[tuple[int, str, Any]], ts: str = _EXPLICIT_LE, *, ordered: bool = True
          ) -> str:
    """A Part 10 file of `elements` (sorted by tag unless not `ordered`) in transfer syntax `ts`, with a
    complete file meta."""
    meta = _encode([(0x00020001, "OB", b"\0\1"), (0x00020002, "UI", _CT + "\0"),
                    (0x00020003, "UI", "1.2.3.4.5.6.7\0"), (0x00020010, "UI", ts + ("\0" if len(ts) % 2 else "")),
                    (0x00020012, "UI", "1.2.3.4\0\0")], False, True)
    meta = _encode([(0x00020000, "UL", num("L", len(meta)))], False, True) + meta
    body = _encode(sorted(elements, key=lambda e: e[0]) if ordered else elements, ts == _IMPLICIT_LE,
                   ts != _EXPLICIT_BE)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + body)
    return str(path)


def _image() -> list[tuple[int, str, Any]]:
    """A small plain CT image header (no pixel data): what the benchmark's files hold."""
    base = {
        0x00080005: ("CS", "ISO_IR 100"), 0x00080016: ("UI", _CT + "\0"), 0x00080018: ("UI", "1.2.3.4.5.6.7\0"),
        0x00080020: ("DA", "20240115"), 0x00080060: ("CS", "CT"), 0x00100010: ("PN", "Doe^John"),
        0x00100020: ("LO", "ID-0001 "), 0x00180050: ("DS", "2.5 "), 0x0020000D: ("UI", "1.2.3.4.5\0"),
        0x0020000E: ("UI", "1.2.3.4.6\0"), 0x00200013: ("IS", "3 "), 0x00200032: ("DS", "0\\0\\5.0 "),
        0x00280002: ("US", num("H", 1)), 0x00280004: ("CS", "MONOCHROME2 "), 0x00280010: ("US", num("H", 32)),
        0x00280011: ("US", num("H", 32)), 0x00280030: ("DS", "0.7\\0.7 "), 0x00280100: ("US", num("H", 16)),
        0x00280101: ("US", num("H", 16)), 0x00280102: ("US", num("H", 15)), 0x00280103: ("US", num("H", 1)),
        0x00281052: ("DS", "-1024"), 0x00281053: ("DS", "1 "),
    }
    return [(tag, vr, value) for tag, (vr, value) in base.items()]


# One hostile or edge-case value per entry: (tag, VR, raw value); each is written into a plain image header.
_EDGE_VALUES: list[tuple[int, str, Any]] = [
    # DS: not numbers, too long, padded, empty parts, specials
    (0x00180050, "DS", "1A"), (0x00180050, "DS", "1.0.0"), (0x00180050, "DS", "12345678901234567"),
    (0x00180050, "DS", "  3 "), (0x00180050, "DS", ""), (0x00180050, "DS", "  "), (0x00180050, "DS", "1\\"),
    (0x00180050, "DS", "\\2"), (0x00180050, "DS", "nan"), (0x00180050, "DS", "inf"), (0x00180050, "DS", "1e400"),
    (0x00180050, "DS", "1\0"), (0x00180050, "DS", "+.5e-3\0"), (0x00280030, "DS", "1.5\\ 2 \\3"),
    (0x00280030, "DS", "0.5\\"), (0x00281053, "DS", "x"), (0x00281052, "DS", ""), (0x00200037, "DS", "1\\0\\0\\0\\1\\0"),
    # IS: float-like, junk, padded, too long, empty parts
    (0x00200013, "IS", "3.0"), (0x00200013, "IS", "1A"), (0x00200013, "IS", "  3 "), (0x00200013, "IS", ""),
    (0x00200013, "IS", "1234567890123"), (0x00200013, "IS", "123456789012"), (0x00200013, "IS", "1\\2"),
    (0x00200013, "IS", "1\\"), (0x00200013, "IS", "\0"), (0x00200013, "IS", " 3\0"), (0x00200013, "IS", "-5"),
    (0x00280008, "IS", "2\\3"), (0x00280008, "IS", "0"), (0x00280008, "IS", "4"), (0x00280008, "IS", "x"),
    (0x00200011, "IS", "+7 "),
    # UI: padding, leading zeros, trailing dot, too long, multi, empty, junk
    (0x0020000D, "UI", "1.2.3\0"), (0x0020000D, "UI", "1.2.03"), (0x0020000D, "UI", "1.2.3."),
    (0x0020000D, "UI", "1.2 "), (0x0020000D, "UI", "1." + "2" * 64), (0x0020000D, "UI", "1.2\\1.3"),
    (0x0020000D, "UI", ""), (0x0020000D, "UI", "abc"), (0x00080016, "UI", ""), (0x00080016, "UI", "1.2\n"),
    # text: over the maximum length, multi-valued, empty parts, padding
    (0x00100020, "LO", "x" * 65), (0x00100020, "LO", "x" * 64 + "  "), (0x00100020, "LO", "a\\b"),
    (0x00100020, "LO", "a\\"), (0x00100020, "LO", "x  \0"), (0x00100020, "LO", "\\"), (0x00100020, "LO", ""),
    (0x00080050, "SH", "x" * 17), (0x00080050, "SH", "A12 "), (0x00081030, "LO", "Caf\xe9 \\ au lait"),
    (0x00080060, "CS", "CT\\MR "), (0x00080060, "CS", "lower"), (0x00080060, "CS", ""), (0x00080008, "CS", "ORIGINAL\\PRIMARY\\"),
    (0x00080020, "DA", "2024.01.01"), (0x00080020, "DA", "garbage"), (0x00080020, "DA", "20240101\\20240102"),
    (0x00080030, "TM", "120000.5 "), (0x0008002A, "DT", "20240101120000\\x"), (0x00101010, "AS", "045Y"),
    (0x00080054, "AE", " AE1 \\ AE2"), (0x00080054, "AE", "AE\0"), (0x00081190, "UR", "http://x/y  "),
    (0x00104000, "LT", "line1\\line2\r\nline3 \0"), (0x00104000, "LT", "x" * 10241), (0x00081030, "LO", "\x1b$B"),
    (0x00324000, "LT", "a" * 10240), (0x00102160, "SH", "\xff" * 16), (0x00400280, "ST", "s" * 1025),
    (0x00400280, "ST", "s" * 1024), (0x00189096, "UC", "u" * 300 + "\\v"), (0x00189097, "UT", "t\\" * 2000),
    # PN: groups, empty groups, multi-valued, over the limits, padding
    (0x00100010, "PN", "A^B=C^D=E^F"), (0x00100010, "PN", "A^B=="), (0x00100010, "PN", "=B"),
    (0x00100010, "PN", "A\\B"), (0x00100010, "PN", "A\\"), (0x00100010, "PN", "==\\A"),
    (0x00100010, "PN", "A=B=C=D"), (0x00100010, "PN", "x" * 65), (0x00100010, "PN", "Doe^John \0"),
    (0x00100010, "PN", ""), (0x00100010, "PN", "=="), (0x00100010, "PN", "M\xfcller^J\xf6rg"),
    # numbers: wrong length, multi-valued, signed, special floats, 64-bit
    (0x00280010, "US", b"\x20\x00\x01"), (0x00280010, "US", num("H", 32, 64)), (0x00280010, "US", b""),
    (0x00280002, "US", num("H", 0)), (0x00280103, "US", num("H", 2)), (0x00280106, "SS", num("h", -5)),
    (0x00189219, "FL", num("f", float("nan"))), (0x00189220, "FD", num("d", float("inf"), 1.5)),
    (0x00189221, "SL", num("l", -7, 8)), (0x00189222, "UL", num("L", 2**32 - 1)),
    (0x00189223, "UV", num("Q", 2**64 - 1)), (0x00189224, "SV", num("q", -(2**63))),
    (0x00281101, "US", num("H", 256, 0, 16)),  # a LUT descriptor: pydicom's hook edits these
    # a keyword read with a VR it does not have
    (0x00280010, "UI", "32"), (0x00280010, "DS", "32.5"), (0x00280008, "DS", "2"), (0x00080060, "LO", "CT"),
    (0x00180050, "IS", "3"), (0x0020000D, "SH", "1.2.3"), (0x00100010, "LO", "A^B"),
    # binary, AT, UN, long values
    (0x00091001, "OB", b"\1\2\3"), (0x00290010, "LO", "ACME 1.0"), (0x00291001, "DS", "1.5"),
    (0x00291002, "LO", "private text"), (0x00420011, "OB", bytes(range(256)) * 8), (0x00420011, "OB", b"\1" * 768),
    (0x00420011, "OB", b"\1" * 769), (0x00420011, "OB", b""), (0x00660023, "OW", b"\0\1\2\3"), (0x00660016, "OF", b"\0" * 4),
    (0x00209165, "AT", num("H", 0x0020, 0x0032)), (0x00181030, "UN", b"abc\0"), (0x00280010, "UN", num("H", 32)),
    (0x00080016, "XX", "1.2"),
]


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Each edge value alone in an image header, in explicit LE, implicit LE and explicit BE; then all of
    them at once (so that failures meet: the header's first-failure retry, warnings in order)."""
    root = tmp_path_factory.mktemp("dicom-edge")
    files = []
    for i, (tag, vr, value) in enumerate(_EDGE_VALUES):
        for ts in (_EXPLICIT_LE, _IMPLICIT_LE, _EXPLICIT_BE):
            elements = [e for e in _image() if e[0] != tag] + [(tag, vr, value)]
            files.append(write(root / f"edge_{i:03d}_{ts[-3:]}.dcm", elements, ts))
    last: dict[int, tuple[str, Any]] = {}
    for tag, vr, value in _EDGE_VALUES:
        if vr != "XX":
            last[tag] = (vr, value)
    for ts in (_EXPLICIT_LE, _IMPLICIT_LE, _EXPLICIT_BE):
        everything = [e for e in _image() if e[0] not in last] + [(t, vr, v) for t, (vr, v) in last.items()]
        files.append(write(root / f"all_{ts[-3:]}.dcm", everything, ts))
    return files


def test_edge_values_read_the_same(edge_files: list[str]) -> None:
    for path in edge_files:
        _assert_same(path)


@pytest.mark.parametrize("charset, value", [
    ("", "M\xfcller^J\xf6rg"),  # default repertoire, non-ASCII bytes: latin-1 decoded, no warning
    ("ISO_IR 100", "M\xfcller^J\xf6rg"),
    ("ISO_IR 192", "Müller^Jörg".encode()),
    ("ISO_IR 192", b"M\xfcller"),  # not UTF-8: pydicom warns and replaces
    ("ISO_IR 192", "漢字^名前=かな".encode()),
    ("ISO 2022 IR 6\\ISO 2022 IR 87", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"),
    ("ISO 2022 IR 6\\ISO 2022 IR 100", "M\xfcller"),
    ("ISO_IR 144", b"\xbb\xee\xdace\xd2"),
    ("ISO_IR 999", "M\xfcller"),  # unknown: pydicom warns and uses the default
    ("ISO_IR 100\\ISO_IR 192", "x"),
])
def test_character_sets_read_the_same(tmp_path: Path, charset: str, value: Any) -> None:
    """Text VRs decode with the dataset's character set: simple codecs fast, the others through pydicom."""
    extra = [(0x00100010, "PN", value), (0x00081030, "LO", value), (0x00104000, "LT", value),
             (0x00080050, "SH", value[:16]), (0x00180050, "DS", "2.5")]
    cs = [] if not charset else [(0x00080005, "CS", charset)]
    elements = [e for e in _image() if e[0] not in {0x00080005, 0x00100010, 0x00081030}] + cs + extra
    for ts in (_EXPLICIT_LE, _IMPLICIT_LE):
        _assert_same(write(tmp_path / f"cs_{ts[-1]}.dcm", elements, ts))


def test_sequences_and_private_tags_read_the_same(tmp_path: Path) -> None:
    """Sequences (nested, with their own values) and private blocks go through pydicom, the rest around
    them fast; the result is the same either way."""
    inner = [[(0x00080100, "SH", "T-D1100"), (0x00080102, "SH", "SRT"), (0x00080104, "LO", "Brain")]]
    items = [[(0x00081150, "UI", _CT + "\0"), (0x00081155, "UI", "1.2.3.9\0"), (0x00082218, "SQ", inner)],
             [(0x00081150, "UI", _CT + "\0"), (0x00180050, "DS", "1A")]]
    elements = _image() + [(0x00081140, "SQ", items), (0x00090010, "LO", "ACME"), (0x00091001, "SQ", inner),
                           (0x00091002, "DS", "1\\2"), (0x00280106, "SS", num("h", -3))]
    for ts in (_EXPLICIT_LE, _IMPLICIT_LE, _EXPLICIT_BE):
        _assert_same(write(tmp_path / f"sq_{ts[-1]}.dcm", elements, ts))


def _pydicom_files() -> list[str]:
    from pydicom.data import get_charset_files, get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it cannot download its optional files
        return sorted(set(get_testdata_files("*")) | set(get_charset_files("*")))


def test_pydicom_test_files_read_the_same() -> None:
    """Every file pydicom ships (charsets, big endian, implicit VR, sequences, private tags, broken files)."""
    compared = sum(1 for path in _pydicom_files() if isinstance(_assert_same(path)[0], dict))
    assert compared >= 80


def test_sample_generator_files_read_the_same() -> None:
    files = reference_files("dicom")
    assert files
    for path in files:
        _assert_same(path)


def _fast_view(path: str) -> D._Fast:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    view = D._Fast(ds, D._Fast(ds.file_meta))
    D._json_header(view, 1024, [])
    for keyword in D.DICOM_COLUMNS:
        D._get(view, keyword)
    D._pixel_row(view, None, 1 << 30)
    return view


def test_fast_path_is_taken_for_a_plain_image(tmp_path: Path) -> None:
    """A plain image header converts without pydicom: no element falls back, the header JSON is plain."""
    assert D._fast_enabled()
    view = _fast_view(write(tmp_path / "plain.dcm", _image()))
    assert view.fallbacks == [] and view.meta.fallbacks == [] and view.plain
    for path in reference_files("dicom"):  # their sequences go through pydicom, the rest does not
        view = _fast_view(path)
        assert [view.raw[tag].VR for tag in view.fallbacks] == ["SQ", "SQ"] and view.meta.fallbacks == [], path


def test_fallbacks_are_the_unprovable_elements(tmp_path: Path) -> None:
    """Values pydicom warns about, and VRs the fast path leaves alone, are converted by pydicom; private
    blocks (creator first) and AT are not."""
    inner = [[(0x00080100, "SH", "T-D1100")]]
    path = write(tmp_path / "mixed.dcm", _image() + [
        (0x00200013, "IS", "3.0"), (0x00100020, "LO", "x" * 65), (0x00081140, "SQ", inner),
        (0x00181030, "UN", b"ab"), (0x00090010, "LO", "ACME"), (0x00091001, "LO", "private"),
        (0x00209165, "AT", num("H", 0x0020, 0x0032))])
    view = _fast_view(path)
    assert sorted(view.fallbacks) == [0x00081140, 0x00100020, 0x00181030, 0x00200013]


def test_private_element_before_its_creator_goes_through_pydicom(tmp_path: Path) -> None:
    """pydicom converts a private block's creator when it converts one of its elements: an element met
    while its creator is still raw is pydicom's, so that any warning about the creator comes when it did."""
    import pydicom

    path = write(tmp_path / "private.dcm", _image() + [(0x00090010, "LO", "C" * 65), (0x00091001, "LO", "v")])
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    view = D._Fast(ds, D._Fast(ds.file_meta))
    assert view.record(0x00091001) is None and view.fallbacks == [0x00091001]
    _assert_same(path)
    # out of order: the element, another warning, then its (warning) creator
    path = write(tmp_path / "unordered.dcm", _image() + [(0x00091001, "LO", "v"), (0x00181030, "LO", "L" * 65),
                                                         (0x00090010, "LO", "C" * 65)], ordered=False)
    assert len(_assert_same(path)[1]) == 2


def test_pydicom_configuration_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A pydicom configured otherwise than the fast path assumes (date conversion, numpy values, another
    validation mode, custom hooks) reads through pydicom alone."""
    from pydicom import config

    assert D._fast_enabled()
    monkeypatch.setattr(config, "datetime_conversion", True)
    assert not D._fast_enabled()
    monkeypatch.setattr(config, "datetime_conversion", False)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    assert not D._fast_enabled()
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.WARN)
    assert D._fast_enabled()
    from pydicom import values

    monkeypatch.setitem(values.converters, "DS", values.convert_string)
    assert not D._fast_enabled()
    monkeypatch.setitem(values.converters, "DS", values.convert_DS_string)
    assert D._fast_enabled()
    monkeypatch.setattr(D, "FAST_PATH", False)
    assert not D._fast_enabled()
    path = write(tmp_path / "plain.dcm", _image())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert D.DICOMBackend().read(path).tables["dicom"][0]["InstanceNumber"] == 3


def test_mutated_files_read_the_same(tmp_path: Path) -> None:
    """Random byte changes in element values of real files (deterministic): whatever pydicom makes of the
    result, the fast path makes the same."""
    import random

    from pydicom.data import get_testdata_file

    rng = random.Random(20240115)
    sources = [*reference_files("dicom")[:2], get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm"),
               get_testdata_file("rtplan.dcm"), write(tmp_path / "plain.dcm", _image())]
    alphabet = b" \0\\=^.+-eE019AZaz\xe9\xff\x1b\n"
    for n in range(240):
        data = bytearray(Path(sources[n % len(sources)]).read_bytes())
        start = 132 + 12 * 20  # past the preamble and most of the file meta
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(start, min(len(data), start + 4000))
            data[i] = rng.choice(alphabet)
        path = tmp_path / f"mutated_{n:03d}.dcm"
        path.write_bytes(bytes(data))
        _assert_same(str(path))
