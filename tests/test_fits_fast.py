"""The FITS backend's fast header reader against astropy's path: the same catalog rows and the same warnings for
every file, the fast path taken where the file is standard, astropy's path wherever it is not."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

fits = pytest.importorskip("astropy.io.fits")

from metaextract_dask.formats import fits as F  # noqa: E402
from metaextract_dask.testing import reference_files  # noqa: E402

__all__: list[str] = []


# --- helpers --------------------------------------------------------------------------------------------------

def _card(text: str) -> bytes:
    assert len(text) <= 80, text
    return text.ljust(80).encode("latin1")


def _hdu(cards: list[str], data: bytes = b"", *, end: bool = True, pad_data: bool = True) -> bytes:
    """One HDU written by hand: the cards, END, blank padding to 2880, the data zero-padded to 2880."""
    header = b"".join(_card(c) for c in cards) + (_card("END") if end else b"")
    header += b" " * (-len(header) % 2880)
    if pad_data:
        data += b"\0" * (-len(data) % 2880)
    return header + data


def _primary(*extra: str, naxis: tuple[int, ...] = (), bitpix: int = 8, extend: bool = False) -> list[str]:
    cards = ["SIMPLE  =                    T", f"BITPIX  = {bitpix:>20}", f"NAXIS   = {len(naxis):>20}"]
    cards += [f"NAXIS{i + 1:<3}= {n:>20}" for i, n in enumerate(naxis)]
    if extend:
        cards.append("EXTEND  =                    T")
    return cards + list(extra)


def _write(path: Path, *hdus: bytes) -> str:
    path.write_bytes(b"".join(hdus))
    return str(path)


def _run(read: Any, path: str) -> tuple[Any, list[tuple[str, str]]]:
    """What a read returns (its Records as a dict, or the exception) and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out: Any = dataclasses.asdict(read(path))
        except Exception as exc:
            out = f"{type(exc).__name__}: {exc}"
    return out, [(w.category.__name__, str(w.message)) for w in caught]


def _backend_read(path: str, fast: bool) -> tuple[Any, list[tuple[str, str]]]:
    old = F.FAST_PATH
    F.FAST_PATH = fast
    try:
        return _run(F.FITSBackend().read, path)
    finally:
        F.FAST_PATH = old


def assert_same(path: str) -> bool:
    """The backend's read with and without the fast path: equal Records and warnings. Returns whether the fast
    path took the file."""
    fast = _backend_read(path, True)
    slow = _backend_read(path, False)
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]
    return F._read_fast(path) is not None


# --- generated files ------------------------------------------------------------------------------------------

VALUE_CARDS = [
    "LOGT    =                    T / true",
    "LOGF    =                    F",
    "INT     =                   42 / an int",
    "NEGINT  =                  -17",
    "PLUSINT =                  +17",
    "ZEROS   =                  007",
    "HUGE    = 123456789012345678901234567890",
    "HUGENEG = -98765432109876543210",
    "FLT     =                  1.5",
    "FLTE    =             1.25E-03",
    "FLTD    =             2.5D+300 / D exponent",
    "FLTLOWD =              2.5d-10",
    "FLTLOWE =              3.0e+05",
    "NOFRAC  =                  12.",
    "NOINT   =                  .25",
    "EXPONLY =                 1E10",
    "OVERFLOW=               1E9999",
    "NEGZERO =                 -0.0",
    "SPACED  =          - 1.5 E +3",
    "CPLX    = (1.5, -2)",
    "CPLXD   = (1.0D2,3.)",
    "STR     = 'hello'",
    "STRPAD  = 'padded   '         / trailing spaces stripped",
    "STRQUOTE= 'it''s ''quoted'''",
    "STREMPTY= ''",
    "STRBLANK= '        '",
    "STRLEAD = '   leading'",
    "STRSLASH= 'a / b'             / a comment / with slashes",
    "STRCOLON= 'ab: not a record value'",
    "UNDEF   =",
    "UNDEFC  =                      / undefined with a comment",
    "NOSPACE =                    5/no space before the slash",
    "DP2     = 'AXIS.1: x'         / looks record-valued, is a string",
    "COMMENT first comment",
    "COMMENT   second, indented   ",
    "HISTORY a history line",
    "        blank-keyword commentary",
    "",
    "REPEAT  =                    1",
    "REPEAT  = 'two'",
    "REPEAT  =                  3.0",
    "HIERARCH ESO DET CHIP ID = 'CCD-1' / hierarch",
    "HIERARCH ESO TEL AIRM START = 1.234",
    "HIERARCH lower case key = T",
    "LONGSTR = 'This is a long string value that does not fit on one card, so it &'",
    "CONTINUE  'continues on the next card &'",
    "CONTINUE  'and ends here' / long comment",
    "COMMENT a comment that astropy joins with the CONTINUE card after it",
    "CONTINUE  'raw text'",
    "DP1     = 'NAXES: 2'",
    "DP1     = 'AXIS.1: 1'",
    "DP1     = 'AXIS.2: 2.5' / record-valued",
    "EXTNAME = 'PRIMARYX'",
    "EXTVER  =                    2",
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Standard files (the fast path must take them), written by astropy or, where astropy would not write
    such cards, by hand."""
    root = tmp_path_factory.mktemp("fitsfast")
    files: dict[str, str] = {}
    files["values"] = _write(root / "values.fits", _hdu(_primary(*VALUE_CARDS, naxis=(2, 3), bitpix=16),
                                                          bytes(12)))
    files["empty"] = str(root / "empty.fits")
    fits.PrimaryHDU().writeto(files["empty"])
    long = fits.PrimaryHDU(np.arange(12, dtype=np.float32).reshape(3, 4))
    for i in range(120):
        long.header[f"KEY{i}"] = (i * 1.5, f"card {i}")
    long.header["LONGVAL"] = "x" * 200  # CONTINUE cards, written by astropy
    long.header["HIERARCH ESO INS FILT NAME"] = "R"
    long.header.add_comment("a comment " * 12)  # long COMMENT: split over several COMMENT cards
    long.header.add_history("history")
    long.header.append(("", "blank"))
    files["long"] = str(root / "long.fits")
    long.writeto(files["long"])

    images = [fits.PrimaryHDU()]
    for dtype in (np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64):
        images.append(fits.ImageHDU(np.arange(30, dtype=dtype).reshape(5, 6), name=f"B{np.dtype(dtype).name}"))
    scaled = fits.ImageHDU(np.arange(20, dtype=np.int16).reshape(4, 5), name="SCALED", ver=3)
    scaled.header["BSCALE"] = 0.5
    scaled.header["BZERO"] = 10.0
    scaled.header["BLANK"] = -1
    scaled.header["BUNIT"] = "adu"
    images.append(scaled)
    images.append(fits.ImageHDU(np.arange(16, dtype=np.uint16).reshape(4, 4), name="UINT"))  # BZERO 32768
    images.append(fits.ImageHDU(np.ones((2, 3, 4)), name="CUBE"))
    images.append(fits.ImageHDU(name="NODATA"))
    images.append(fits.ImageHDU(np.zeros((0, 3), dtype=np.int16)))  # an axis of length 0
    files["images"] = str(root / "images.fits")
    fits.HDUList(images).writeto(files["images"])

    many = [fits.PrimaryHDU(np.arange(4, dtype=np.int32))]
    many += [fits.ImageHDU(np.full((3, 3), i, dtype=np.int16)) for i in range(40)]
    files["many"] = str(root / "many.fits")
    fits.HDUList(many).writeto(files["many"])

    cols = [
        fits.Column(name="flux", format="E", unit="Jy", array=np.arange(4.0)),
        fits.Column(name="id", format="K", array=np.arange(4)),
        fits.Column(name="name", format="8A", array=np.array(["a", "bb", "ccc", "dddd"])),
        fits.Column(name="flag", format="L", array=np.array([True, False, True, False])),
        fits.Column(name="vec", format="6D", dim="(3,2)", array=np.zeros((4, 2, 3))),
        fits.Column(name="bits", format="12X", array=np.zeros((4, 12), dtype=bool)),
        fits.Column(name="vla", format="PJ()", array=np.array([[1], [1, 2], [], [3, 4, 5]], dtype=object)),
        fits.Column(name="cx", format="M", array=np.ones(4, dtype=complex)),
    ]
    ascii_cols = [
        fits.Column(name="a", format="E10.4", unit="m", array=np.arange(3.0)),
        fits.Column(name="b", format="I5", array=np.arange(3)),
        fits.Column(name="c", format="A6", array=np.array(["x", "yy", "zzz"])),
    ]
    files["tables"] = str(root / "tables.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="BIN"),
                  fits.TableHDU.from_columns(ascii_cols, name="ASC"),
                  fits.BinTableHDU.from_columns([fits.Column(name="e", format="J", array=np.array([], int))])
                  ]).writeto(files["tables"])

    wcs = fits.PrimaryHDU(np.zeros((10, 20), dtype=np.float32))
    wcs.header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                       "CRPIX1": 10.0, "CRPIX2": 5.0, "CDELT1": -0.001, "CDELT2": 0.001})
    broken = fits.ImageHDU(np.zeros((4, 4), dtype=np.int16), name="BADWCS")
    broken.header.update({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"})  # an unknown projection
    files["wcs"] = str(root / "wcs.fits")
    fits.HDUList([wcs, broken]).writeto(files["wcs"])
    return files


def _plain_then(*extra: bytes) -> bytes:
    return _hdu(_primary("OBJECT  = 'x'", naxis=(4,), bitpix=8, extend=True), bytes(4)) + b"".join(extra)


_IMAGE_EXT = ["XTENSION= 'IMAGE   '", "BITPIX  =                   16", "NAXIS   =                    1",
              "NAXIS1  =                    3", "PCOUNT  =                    0", "GCOUNT  =                    1"]

#: Files astropy reads with warnings, fixes or another HDU class: the fast path must hand them to astropy.
NONSTANDARD = {
    "unparsable": _hdu(_primary("SPACED  =             - 1. 5E 3")),
    "unquoted": _hdu(_primary("OBJECT  = M31 unquoted string")),
    "lowercase": _hdu(_primary("object  = 'lower'")),
    "no_equals": _hdu(_primary("OBJECT    'no value indicator'")),
    "equals_col10": _hdu(_primary("OBJECT  ='no space'")),
    "bad_char": _hdu(_primary("OBJECT  = 'caf\xe9'")),
    "tab": _hdu(_primary("OBJECT  = 'a\tb'")),
    "missing_end": _hdu(_primary("OBJECT  = 'x'"), end=False),
    "end_garbage": _hdu(_primary("OBJECT  = 'x'", "END     garbage")),
    "cut_header": _hdu(_primary(*[f"K{i}      = {i}" for i in range(40)]))[:2000],
    "cut_data": _hdu(_primary(naxis=(100, 100), bitpix=16), bytes(20000))[:12000],
    "unpadded_data": _hdu(_primary(naxis=(10,), bitpix=16), bytes(20), pad_data=False),
    "trailing_garbage": _plain_then(b"GARBAGE" * 10),
    "trailing_zeros": _plain_then(b"\0" * 2880),
    "trailing_block": _plain_then(b" " * 2880),
    "random_groups": _hdu(_primary("GROUPS  =                    T", "PCOUNT  =                    1",
                                   "GCOUNT  =                    2", naxis=(0, 2), bitpix=-32), bytes(24)),
    "no_extend": _hdu(_primary()) + _hdu(_IMAGE_EXT, bytes(6)),
    "extend_false": _hdu(_primary("EXTEND  =                    F")) + _hdu(_IMAGE_EXT, bytes(6)),
    "repeated_naxis": _hdu(_primary("NAXIS   =                    0")),
    "blank_float": _hdu(_primary("BLANK   =                   -1", naxis=(2,), bitpix=-32), bytes(8)),
    "blank_str": _hdu(_primary("BLANK   = 'x'", naxis=(2,), bitpix=16), bytes(4)),
    "bad_bitpix": _hdu(_primary(naxis=(2,), bitpix=12), bytes(4)),
    "naxis_float": _hdu(["SIMPLE  =                    T", "BITPIX  =                    8",
                         "NAXIS   =                    1", "NAXIS1  =                  2.0"], bytes(2)),
    "naxisn_missing": _hdu(["SIMPLE  =                    T", "BITPIX  =                    8",
                            "NAXIS   =                    2", "NAXIS1  =                    2"], bytes(2)),
    "simple_false": _hdu(["SIMPLE  =                    F", "BITPIX  =                    8",
                          "NAXIS   =                    0"]),
    "xtension_first": _hdu(_IMAGE_EXT, bytes(6)),
    "foreign_ext": _plain_then(_hdu(["XTENSION= 'FOREIGN '", "BITPIX  =                    8",
                                     "NAXIS   =                    0", "PCOUNT  =                    0",
                                     "GCOUNT  =                    1"])),
    "a3dtable": _plain_then(_hdu(["XTENSION= 'A3DTABLE'", "BITPIX  =                    8",
                                  "NAXIS   =                    2", "NAXIS1  =                    4",
                                  "NAXIS2  =                    1", "PCOUNT  =                    0",
                                  "GCOUNT  =                    1", "TFIELDS =                    1",
                                  "TFORM1  = 'J       '"], bytes(4))),
    "continue_bad": _hdu(_primary("LONG    =                    5", "CONTINUE  'x'")),
    "continue_after_hierarch": _hdu(_primary("HIERARCH LONG KEY = 'abc&'", "CONTINUE  'def'")),
    "continue_first": _hdu(_primary("CONTINUE  'orphan'")),
    "hierarch_short": _hdu(_primary("HIERARCH NAXIS = 3")),
    "hierarch_empty": _hdu(_primary("HIERARCH = 3")),
    "comment_no_slash": _hdu(_primary("NOCOMSEP=                    5 no slash before this text")),
    "commentary_lower": _hdu(_primary("comment lower-case commentary")),
    "zimage": _plain_then(_hdu(["XTENSION= 'IMAGE   '", "BITPIX  =                    8",
                                "NAXIS   =                    0", "PCOUNT  =                    0",
                                "GCOUNT  =                    1", "ZIMAGE  =                    T"])),
}


# --- tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["values", "empty", "long", "images", "many", "tables", "wcs"])
def test_generated_files_take_the_fast_path_and_match(generated: dict[str, str], name: str) -> None:
    assert assert_same(generated[name]), f"{name}: the fast path fell back to astropy"


def test_value_types(generated: dict[str, str]) -> None:
    """The card values themselves, as astropy gives them (after to_jsonable)."""
    import json

    rec = F._read_fast(generated["values"])
    assert rec is not None
    header = json.loads(rec.tables["hdus"][0]["header"])
    assert header["LOGT"] is True and header["LOGF"] is False
    assert header["INT"] == 42 and header["NEGINT"] == -17 and header["PLUSINT"] == 17 and header["ZEROS"] == 7
    assert header["HUGE"] == 123456789012345678901234567890 and header["HUGENEG"] == -98765432109876543210
    assert header["FLTD"] == 2.5e300 and header["FLTLOWD"] == 2.5e-10 and header["FLTLOWE"] == 3.0e5
    assert header["NOFRAC"] == 12.0 and isinstance(header["NOFRAC"], float) and header["NOINT"] == 0.25
    assert header["OVERFLOW"] == "Infinity" and header["SPACED"] == -1500.0
    assert header["CPLX"] == {"real": 1.5, "imag": -2.0} and header["CPLXD"] == {"real": 100.0, "imag": 3.0}
    assert header["STRPAD"] == "padded" and header["STRQUOTE"] == "it's 'quoted'"
    assert header["STREMPTY"] == "" and header["STRBLANK"] == "" and header["STRLEAD"] == "   leading"
    assert header["STRSLASH"] == "a / b" and header["STRCOLON"] == "ab: not a record value"
    assert header["UNDEF"] is None and header["UNDEFC"] is None and header["NOSPACE"] == 5
    assert header["DP2"] == "AXIS.1: x"
    assert header["COMMENT"][:2] == ["first comment", "  second, indented"]
    assert header["COMMENT"][2].endswith("CONTINUE  'raw text'")  # astropy's reading of a CONTINUE after COMMENT
    assert header["HISTORY"] == ["a history line"]
    assert header[""] == ["blank-keyword commentary", ""]
    assert header["REPEAT"] == [1, "two", 3.0]
    assert header["ESO DET CHIP ID"] == "CCD-1" and header["lower case key"] is True
    assert header["LONGSTR"].endswith("continues on the next card and ends here")
    assert header["DP1.NAXES"] == 2.0 and header["DP1.AXIS.1"] == 1.0 and header["DP1.AXIS.2"] == 2.5
    row = rec.tables["hdus"][0]
    assert (row["extname"], row["extver"], row["hdu_type"], row["bitpix"], row["naxis"]) == (
        "PRIMARYX", 2, "PrimaryHDU", 16, [2, 3])
    with fits.open(generated["values"]) as hdul:
        assert row["n_cards"] == len(hdul[0].header.cards)


def test_strip_header_whitespace_is_honoured(generated: dict[str, str]) -> None:
    import json

    with fits.conf.set_temp("strip_header_whitespace", False):
        assert assert_same(generated["values"])
        header = json.loads(F._read_fast(generated["values"]).tables["hdus"][0]["header"])
    assert header["STRPAD"] == "padded   " and header["STRBLANK"] == "        "


def test_tables_and_wcs_rows(generated: dict[str, str]) -> None:
    rec = F._read_fast(generated["tables"])
    assert [r["hdu_type"] for r in rec.tables["hdus"]] == ["PrimaryHDU", "BinTableHDU", "TableHDU", "BinTableHDU"]
    assert [a["kind"] for a in rec.arrays] == ["fits-table"] * 3
    assert '"unit":"Jy"' in rec.arrays[0]["attrs"] and rec.arrays[0]["shape"] == [4]
    rows = F._read_fast(generated["wcs"]).tables["hdus"]
    assert rows[0]["wcs_footprint"] and len(rows[0]["wcs_footprint"]) == 4
    assert rows[1]["wcs_error"]


@pytest.mark.parametrize("name", sorted(NONSTANDARD))
def test_nonstandard_files_go_to_astropy(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / f"{name}.fits", NONSTANDARD[name])
    assert not assert_same(path), f"{name}: the fast path took a file it must leave to astropy"


def test_tile_compressed_goes_to_astropy(tmp_path: Path) -> None:
    path = str(tmp_path / "comp.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.arange(200, dtype=np.int32).reshape(10, 20),
                                                       compression_type="RICE_1", tile_shape=(5, 20))]
                 ).writeto(path)
    assert not assert_same(path)


@pytest.mark.parametrize("cut", [100, 2880 + 1000, 2 * 2880 + 10, -1])
def test_truncated_files_match(generated: dict[str, str], tmp_path: Path, cut: int) -> None:
    raw = Path(generated["images"]).read_bytes()
    path = _write(tmp_path / "cut.fits", raw[:cut])
    assert not assert_same(path)


def test_sample_files_match() -> None:
    paths = reference_files("fits")
    assert paths
    for path in paths:
        assert_same(path)


def _astropy_test_files() -> list[str]:
    from astropy.io.fits import tests

    root = Path(tests.__file__).parent / "data"
    out = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=False) as hdul:
                    len(hdul)
        except Exception:
            continue
        out.append(str(path))
    return out


def test_astropy_test_data_files_match() -> None:
    """Every file astropy ships for its own FITS tests that it can open."""
    paths = _astropy_test_files()
    assert len(paths) > 20
    taken = [assert_same(p) for p in paths]
    assert sum(taken) >= len(paths) // 2, "the fast path fell back for most of astropy's test files"


def test_fast_path_takes_plain_files(tmp_path: Path) -> None:
    """A small image as the benchmark files are: the fast path must take it (or the scan loses its speed)."""
    hdu = fits.PrimaryHDU(np.zeros((32, 32), dtype=np.float32))
    hdu.header["OBJECT"] = "BENCH-000000"
    hdu.header["EXPTIME"] = 468.00873937768364
    hdu.header["DATE-OBS"] = "2023-03-14T02:30:00.000"
    path = str(tmp_path / "plain.fits")
    hdu.writeto(path)
    assert F._read_fast(path) is not None
    assert assert_same(path)
    big = str(tmp_path / "big.fits")  # past the one-read size: headers read block by block
    fits.HDUList([fits.PrimaryHDU(np.zeros((200, 200), dtype=np.float64)),
                  fits.ImageHDU(np.ones((3, 3), dtype=np.int16), name="AFTER")]).writeto(big)
    assert os.path.getsize(big) > F._WHOLE_FILE
    assert assert_same(big)
