"""FITS backend (astropy): every HDU's header, image/table array descriptions, celestial WCS footprints
(the ``hdus`` table), and lazy image HDUs (tile-compressed ones read tile by tile).

Cataloguing reads standard-conforming files with a fast header reader of its own (astropy's value syntax, none
of its per-card objects); a file it is not sure to read exactly as astropy does goes through ``fits.open``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from metaextract_dask.formats.base import ArraySpec, FormatBackend, MemberProxy, Records, fast_readers, \
    missing_array, truncation
from metaextract_dask.formats.handles import FITS_LOCK, HandleCache
from metaextract_dask.jsonutil import dumps, to_jsonable

__all__ = ["FITSBackend", "FITSImage", "HDUS", "header_to_dict", "wcs_footprint"]

#: The ``hdus`` table: one row per HDU.
HDUS = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),
    ("extname", pa.string()),
    ("extver", pa.int32()),
    ("xtension", pa.string()),  # null for the primary HDU
    ("hdu_type", pa.string()),  # astropy class: PrimaryHDU, ImageHDU, BinTableHDU, CompImageHDU, ...
    ("bitpix", pa.int32()),
    ("naxis", pa.list_(pa.int64())),  # NAXIS1..n in FITS order
    ("n_cards", pa.int32()),
    ("header", pa.string()),  # every card: {keyword: value}; COMMENT/HISTORY as lists (JSON)
    ("wcs_footprint", pa.list_(pa.list_(pa.float64(), 2))),  # 4 x [ra, dec] degrees
    ("wcs_error", pa.string()),
])

# BITPIX -> the stored (big-endian) numpy dtype.
_BITPIX = {8: np.dtype(">u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
           -32: np.dtype(">f4"), -64: np.dtype(">f8")}
_REPEATABLE = {"COMMENT", "HISTORY", ""}
# Cards that describe the data unit's layout (or its scaling, mapped to CF names): not array attributes.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BSCALE", "BZERO", "BLANK"}
_AXES = {1: "x", 2: "y", 3: "z"}


_UNPARSABLE = object()


def header_to_dict(header: Any, first: dict[str, Any] | None = None) -> dict[str, Any]:
    """All cards of a header as a dict; COMMENT/HISTORY/blank cards and repeated keywords become lists.

    `first`, when given, receives each keyword's first value as astropy gives it (what ``header.get`` returns),
    so that the structural keywords need not be parsed a second time (astropy's card values cost ~20 us each).
    """
    from astropy.io.fits.card import Undefined

    out: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        try:
            value = card.value
            if first is not None and key not in first:
                first[key] = value
        except Exception:  # an unparsable card keeps its raw text; the file is still catalogued
            if first is not None and key not in first:
                first[key] = _UNPARSABLE
            image = _card_text(card)
            value = image[10:].strip() if len(image) > 10 else image
            warnings.warn(f"unparsable FITS card {key!r} kept as raw text: {value!r}", UserWarning, stacklevel=2)
        _add_card(out, key, None if isinstance(value, Undefined) else to_jsonable(value))
    return out


def _add_card(out: dict[str, Any], key: str, value: Any) -> None:
    """Put one card's (JSON-ready) value in a header dict: COMMENT/HISTORY/blank cards as lists, a repeated
    keyword's values as a list."""
    if key in _REPEATABLE:
        out.setdefault(key, []).append(value)
    elif key in out:
        prev = out[key]
        out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
    else:
        out[key] = value


def _card_text(card: Any) -> str:
    """The card's 80 characters as stored (``card.image`` re-verifies the value and can raise for the very
    cards that need this)."""
    try:
        return str(card.image)
    except Exception:
        return str(getattr(card, "_image", "") or "")


def wcs_footprint(header: Any) -> list[list[float]] | None:
    """Sky corners (deg) of a 2-D celestial WCS over the image's pixel grid, or None without one."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        return None
    # Lengths of the celestial axes, which need not be axes 1 and 2 of a cube.
    nx = header.get(f"NAXIS{wcs.wcs.lng + 1}")
    ny = header.get(f"NAXIS{wcs.wcs.lat + 1}")
    if not nx or not ny:
        return None
    return [[float(ra), float(dec)] for ra, dec in wcs.celestial.calc_footprint(axes=(nx, ny))]


def _value(header: Any, key: str, kind: type | None = None) -> Any:
    """A card's value as `kind` (int or str), None where the card is missing or does not parse as one (a
    damaged card costs its column, not the file). `header`: an astropy Header, or the `first` values that
    :func:`header_to_dict` collected."""
    try:
        value = header.get(key)
        if value is _UNPARSABLE:
            return None
        if value is None or kind is None:
            return value
        if kind is int:
            return int(value) if not isinstance(value, (bool, str)) and float(value).is_integer() else None
        return str(value).strip() or None
    except Exception:
        return None


def _hdu_name(hdu: Any) -> str | None:
    try:
        return str(hdu.name or "").strip() or None
    except Exception:  # astropy reads the name from the header: a damaged EXTNAME card
        return None


def _naxis(header: Any) -> list[int]:
    """NAXIS1..n, FITS order (unparsable lengths as 0)."""
    return [_value(header, f"NAXIS{i}", int) or 0 for i in range(1, (_value(header, "NAXIS", int) or 0) + 1)]


def _is_image(hdu: Any) -> bool:
    from astropy.io import fits

    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))


def _is_image_array(hdu: Any, naxis: list[int] | None = None) -> bool:
    """An image HDU with a data unit: every axis of non-zero length."""
    if not _is_image(hdu):
        return False
    naxis = _naxis(hdu.header) if naxis is None else naxis
    return bool(naxis) and all(naxis)


def _tiles(hdu: Any) -> tuple[int, ...] | None:
    """Tile shape (numpy order) of a tile-compressed image: its on-disk chunks."""
    from astropy.io import fits

    return tuple(int(t) for t in hdu.tile_shape) if isinstance(hdu, fits.CompImageHDU) else None


def _has_wcs_keywords(header: Any) -> bool:
    return any(k.startswith(("CTYPE", "CRVAL", "CD1_", "PC1_")) for k in header.keys())


def _celestial(header: Any) -> dict[str, Any]:
    """``wcs_header``/``wcs_ctype`` of an image whose celestial WCS lies on its first two FITS axes (numpy's
    last two), for lazily computed lon/lat coordinates; {} otherwise."""
    if not _has_wcs_keywords(header):
        return {}
    try:
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header)
        if not wcs.has_celestial or (wcs.wcs.lng, wcs.wcs.lat) != (0, 1):
            return {}
        celestial = wcs.celestial
        ctype = tuple(str(t).split("-")[0] or str(t) for t in celestial.wcs.ctype)
        return {"wcs_header": celestial.to_header().tostring(), "wcs_ctype": ctype}
    except Exception:  # a broken WCS costs the coordinates, never the image (hdus.wcs_error says why)
        return {}


def _count(naxis: list[int]) -> int:
    """``int(np.prod(naxis, dtype=np.int64))`` (wrapping past 64 bits as it does) without numpy's overhead."""
    count = math.prod(naxis)
    return count if -(1 << 63) <= count < (1 << 63) else int(np.prod(naxis, dtype=np.int64))


class _HDUView:
    """What the row builders need of one HDU: its kind, card count and (lazily) its astropy objects. Built from
    an astropy HDU (:meth:`of_hdu`) or from the fast header reader, so both paths share one row builder."""

    __slots__ = ("hdu_type", "is_primary", "is_image", "is_table", "n_cards", "header", "name", "columns", "tiles",
                 "compression")

    def __init__(self, hdu_type: str, is_primary: bool, is_image: bool, is_table: bool, n_cards: int,
                 header: Callable[[], Any], name: Callable[[], str | None], columns: Callable[[], Any],
                 tiles: Callable[[], tuple[int, ...] | None] = lambda: None,
                 compression: Callable[[], Any] | None = None) -> None:
        self.hdu_type = hdu_type
        self.is_primary = is_primary
        self.is_image = is_image
        self.is_table = is_table
        self.n_cards = n_cards
        self.header = header  # the astropy Header (WCS, a damaged card's exception)
        self.name = name  # astropy's hdu.name, stripped (None for empty)
        self.columns = columns  # the table's ColDefs
        self.tiles = tiles  # tile shape of a tile-compressed image (None for others)
        self.compression = compression

    @classmethod
    def of_hdu(cls, hdu: Any) -> _HDUView:
        """The view of an astropy HDU (reads its header: astropy's warnings about its cards come here)."""
        from astropy.io import fits

        header = hdu.header
        return cls(type(hdu).__name__, isinstance(hdu, fits.PrimaryHDU), _is_image(hdu),
                   isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)), len(header.cards), lambda: header,
                   lambda: _hdu_name(hdu), lambda: hdu.columns, lambda: _tiles(hdu), lambda: hdu.compression_type)


def _hdu_row(index: int, hdu: Any, file_size: int) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The ``hdus`` row, the ``arrays`` row (None without data) and the header as a dict, of one astropy HDU."""
    view = _HDUView.of_hdu(hdu)
    first: dict[str, Any] = {}  # each card parsed once: the header dict and the columns come from one pass
    as_dict = header_to_dict(view.header(), first)
    return _view_rows(index, view, as_dict, first, file_size)


def _view_rows(index: int, view: _HDUView, as_dict: dict[str, Any], first: dict[str, Any], file_size: int
               ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """:func:`_hdu_row` from an HDU view, its header dict and the first value of each keyword."""
    naxis = _naxis(first)
    row: dict[str, Any] = {
        "index": index,
        "extname": _value(first, "EXTNAME", str) or (None if view.is_primary else view.name()),
        "extver": _value(first, "EXTVER", int),
        # Tile-compressed images: astropy's image view of the header (XTENSION=IMAGE), as in `header`;
        # hdu_type CompImageHDU tells them apart from plain images.
        "xtension": None if view.is_primary else _value(first, "XTENSION", str),
        "hdu_type": view.hdu_type,
        "bitpix": _value(first, "BITPIX", int),
        "naxis": naxis,
        "n_cards": view.n_cards,
        "header": dumps(as_dict),
    }
    if view.is_image and len(naxis) >= 2 and _has_wcs_keywords(first):
        try:
            row["wcs_footprint"] = wcs_footprint(view.header())
        except Exception as exc:  # a broken WCS is reported, the HDU is still catalogued
            row["wcs_error"] = f"{type(exc).__name__}: {exc}"

    try:
        array = _array_row(index, view, file_size, first, naxis)
    except Exception as exc:  # a header astropy reads but whose data unit it cannot describe: that array only
        kind = "fits-table" if view.is_table else "fits-image"
        array = {"name": f"HDU{index}", "kind": kind, "error": f"{type(exc).__name__}: {exc}"}
    return row, array, as_dict


def _array_row(index: int, view: _HDUView, file_size: int, header: dict[str, Any], naxis: list[int]
               ) -> dict[str, Any] | None:
    """The ``arrays`` row of an image or table HDU, None for an HDU without data (`header`: the first value of
    each keyword, from :func:`header_to_dict`)."""

    def card(key: str) -> Any:  # header[key] as astropy raises it for a damaged card
        value = header[key]
        if value is _UNPARSABLE:
            return view.header()[key]
        return value

    array = None
    if view.is_image and naxis and all(naxis):
        attrs = {k: to_jsonable(card(k)) for k in ("BSCALE", "BZERO", "BLANK", "BUNIT") if k in header}
        tiles = view.tiles()
        dtype = _BITPIX[int(card("BITPIX"))]
        count = _count(naxis)
        problem = None if tiles else truncation(count * dtype.itemsize, file_size,
                                                f"the header ({'x'.join(map(str, naxis))} BITPIX {card('BITPIX')})")
        array = {
            "name": f"HDU{index}",
            "kind": "fits-image",
            "shape": naxis[::-1],
            "dtype": dtype.str,
            "dims": None,
            "chunks": list(tiles) if tiles else None,
            "compression": str(view.compression()).lower() if tiles and view.compression else None,
            "fill_value": dumps(card("BLANK")) if "BLANK" in header else None,
            "units": _value(header, "BUNIT", str),
            "nbytes": count * dtype.itemsize,
            "attrs": dumps(attrs),
            "error": problem,
        }
    elif view.is_table:
        cols = view.columns()
        nrows = _value(header, "NAXIS2", int) or 0
        dtype = cols.dtype
        array = {
            "name": f"HDU{index}",
            "kind": "fits-table",
            "shape": [nrows],
            "dtype": dumps([[n, dtype.fields[n][0].str] for n in dtype.names]),
            "dims": None,
            "chunks": None,
            "compression": None,
            "fill_value": None,
            "units": None,
            "nbytes": nrows * (_value(header, "NAXIS1", int) or 0),
            "attrs": dumps({"columns": [{"name": c.name, "format": str(c.format), "unit": c.unit}
                                        for c in cols]}),
        }
    return array


# ---------------------------------------------------------------------------------------------------------------
# The fast header reader. Cataloguing a small file through fits.open costs ~1 ms, nearly all of it astropy's
# per-card machinery (Card objects, a config lookup per value, HDU class discovery). The reader below reads the
# header blocks itself and parses standard cards with astropy's own value regular expressions, so that the values
# are astropy's; whatever it is not sure to reproduce exactly (astropy would warn, fix, or pick another HDU class)
# makes it give up, and astropy reads the whole file as before.

#: Take the fast path in :meth:`FITSBackend.read` (tests switch it off to compare with astropy's path).
FAST_PATH = True

_BLOCK = 2880
_CARD = 80
_WHOLE_FILE = 1 << 16  # files up to this size are read in one call
_VALID_BYTES = bytes(range(0x20, 0x7F))  # the only bytes a FITS header may hold
_SPECIAL_HEADS = {"COMMENT ": "COMMENT", "HISTORY ": "HISTORY", " " * 8: ""}
_FSC_HEAD = re.compile(r"[A-Z0-9_-]+ *\Z")  # card columns 1-8 of a standard keyword
_FSC_KEY = re.compile(r"[A-Z0-9_-]{1,8}\Z")
_XTENSIONS = {"IMAGE": "ImageHDU", "BINTABLE": "BinTableHDU", "TABLE": "TableHDU"}
# Keywords astropy reads from its first-pass header (which keeps the *last* of repeated cards) to pick the HDU
# class, size its data or check BLANK, or rewrites (EXTEND): repeated, they make the file astropy's.
_NO_REPEAT = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS", "ZIMAGE", "EXTEND", "BLANK",
              "BSCALE", "BZERO", "TFIELDS", "EXTNAME"}


class _Fallback(Exception):
    """The fast reader met something it does not reproduce exactly: astropy reads the file."""


class _Syntax:
    """astropy's card regular expressions and helpers, looked up once."""

    def __init__(self) -> None:
        from astropy.io.fits.card import FIX_FP_TABLE2, UNDEFINED, Card, Undefined
        from astropy.io.fits.header import HEADER_END_RE

        self.value_re = Card._value_NFSC_RE
        self.number_re = Card._number_NFSC_RE
        table = dict(FIX_FP_TABLE2)
        table[ord(" ")] = None  # astropy's translate(digits, FIX_FP_TABLE2, " ")
        self.fp_table = table
        self.undefined = UNDEFINED
        self.undefined_type = Undefined
        self.end_re = HEADER_END_RE
        self.card = Card


_SYNTAX: _Syntax | None = None


def _syntax() -> _Syntax:
    global _SYNTAX
    if _SYNTAX is None:
        _SYNTAX = _Syntax()
    return _SYNTAX


class _Strip:
    """``conf.strip_header_whitespace``, looked up once per file and only for a string value that ends in spaces
    (a config lookup costs as much as parsing a dozen cards)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: bool | None = None

    def __call__(self) -> bool:
        if self.value is None:
            from astropy.io.fits import conf

            self.value = bool(conf.strip_header_whitespace)
        return self.value


def _number(syn: _Syntax, text: str) -> Any:
    """A number as astropy's ``Card._parse_value`` converts it."""
    m = syn.number_re.match(text)
    digits = (m.group("sign") or "") + m.group("digt").translate(syn.fp_table)
    # astropy's _str_to_num: int() where it parses, else float(); digits, sign, '.' and an exponent are all the
    # regular expression lets through, so int() fails exactly where there is a '.' or an exponent.
    return float(digits) if "." in digits or "e" in digits or "E" in digits else int(digits)


def _parse_value(syn: _Syntax, valuecomment: str, strip: _Strip) -> Any:
    """The value of a standard card from its (stripped) value/comment field, as ``Card.value`` gives it."""
    m = syn.value_re.match(valuecomment)
    if m is None:  # unparsable: header_to_dict's warning, astropy's path
        raise _Fallback
    group = m.group
    if (strg := group("strg")) is not None:
        value = strg.replace("''", "'")
        return value.rstrip() if value[-1:] == " " and strip() else value
    if (flag := group("bool")) is not None:
        return flag == "T"
    if (numr := group("numr")) is not None:
        return _number(syn, numr)
    if group("cplx") is not None:
        return _number(syn, group("real")) + _number(syn, group("imag")) * 1j
    return syn.undefined


def _astropy_card(syn: _Syntax, image: str) -> tuple[str, Any]:
    """Keyword and value of a card the fast parser leaves to astropy (CONTINUE, record-valued). Only cards whose
    first 80 columns begin with a standard or commentary keyword come here: astropy parses those without a
    warning (so no ``catch_warnings``, which is process-wide, is needed); an error makes the file astropy's."""
    card = syn.card.fromstring(image)
    try:
        return card.keyword, card.value
    except Exception:
        raise _Fallback from None


def _parse_cards(syn: _Syntax, text: str, strip: _Strip) -> tuple[list[str], list[Any]]:
    """Keywords and values (as ``Card.keyword``/``Card.value``) of a header's cards before END."""
    images = [text[i:i + _CARD] for i in range(0, len(text), _CARD)]
    keys: list[str] = []
    values: list[Any] = []
    n = len(images)
    i = 0
    while i < n:
        image = images[i]
        j = i + 1
        while j < n and images[j][:8] == "CONTINUE":  # Header.fromstring joins these to the card before
            j += 1
        if j > i + 1:
            head = image[:8]
            if head not in _SPECIAL_HEADS and not (image[8:10] == "= " and _FSC_HEAD.match(head)):
                raise _Fallback
            key, value = _astropy_card(syn, "".join(images[i:j]))
        else:
            head = image[:8]
            special = _SPECIAL_HEADS.get(head)
            if special is not None:  # commentary: the raw text
                key, value = special, image[8:].rstrip()
            elif image[8:10] == "= " and _FSC_HEAD.match(head):
                rest = image[10:]
                stripped = rest.strip()
                if stripped[:1] == "'" and stripped.find(": ") >= 2:  # maybe a record-valued keyword card
                    key, value = _astropy_card(syn, image)
                else:
                    key, value = head.rstrip(), _parse_value(syn, stripped, strip)
            elif image[:9] == "HIERARCH " and "=" in image:
                key, valuecomment = image.split("=", 1)
                key = key[9:].strip()
                if not key or _FSC_KEY.match(key.upper()):  # could shadow (or be) a standard keyword
                    raise _Fallback
                value = _parse_value(syn, valuecomment.strip(), strip)
            else:  # astropy warns about the keyword (or reads it leniently): its path
                raise _Fallback
        keys.append(key)
        values.append(value)
        i = j
    return keys, values


class _FastHDU:
    """One HDU as the fast reader found it."""

    __slots__ = ("hdu_type", "text", "keys", "values", "first", "as_dict")

    def __init__(self, hdu_type: str, text: str, keys: list[str], values: list[Any], first: dict[str, Any],
                 as_dict: dict[str, Any]) -> None:
        self.hdu_type = hdu_type
        self.text = text  # the header blocks, for astropy's Header where one is needed (WCS, table columns)
        self.keys = keys
        self.values = values
        self.first = first
        self.as_dict = as_dict


def _dicts(syn: _Syntax, keys: list[str], values: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`header_to_dict` of parsed cards, and the first value of each keyword; repeated structural keywords
    (astropy's first pass keeps the last one) make the file astropy's."""
    out: dict[str, Any] = {}
    first: dict[str, Any] = {}
    undefined_type = syn.undefined_type
    for key, value in zip(keys, values):
        if key not in first:
            first[key] = value
        elif key in _NO_REPEAT or key.startswith("NAXIS"):
            raise _Fallback
        _add_card(out, key, None if isinstance(value, undefined_type) else to_jsonable(value))
    return out, first


def _int(first: dict[str, Any], key: str, default: int | None = None) -> int:
    """A structural keyword's value, which must be a non-negative int (or absent, given a default)."""
    value = first.get(key, default)
    if type(value) is not int or value < 0:
        raise _Fallback
    return value


def _data_size(first: dict[str, Any]) -> int:
    """Bytes of the data unit, padded, as astropy sizes it (``_hdr_data_size``)."""
    bitpix = first.get("BITPIX")
    if type(bitpix) is not int or bitpix not in _BITPIX:
        raise _Fallback
    naxis = _int(first, "NAXIS")
    if naxis > 999:
        raise _Fallback
    if naxis == 0:
        return 0
    size = 1
    for i in range(1, naxis + 1):
        size *= _int(first, f"NAXIS{i}")
    size = abs(bitpix) * _int(first, "GCOUNT", 1) * (_int(first, "PCOUNT", 0) + size) // 8
    return size + (-size % _BLOCK)


def _hdu_type(first: dict[str, Any], keys: list[str], index: int) -> str:
    """astropy's HDU class name for the cases the fast reader handles (others: astropy's path)."""
    if index == 0:
        if keys[0] != "SIMPLE" or first["SIMPLE"] is not True or first.get("GROUPS") is True:  # not GroupsHDU
            raise _Fallback
        hdu_type = "PrimaryHDU"
    else:
        xtension = first.get("XTENSION")
        if keys[0] != "XTENSION" or type(xtension) is not str or "ZIMAGE" in first:
            raise _Fallback
        hdu_type = _XTENSIONS.get(xtension.rstrip(), "")
        if not hdu_type:
            raise _Fallback
    if hdu_type != "TableHDU" and hdu_type != "BinTableHDU" and "BLANK" in first:
        # astropy warns about a BLANK that is not an int or belongs to floating-point data
        if type(first["BLANK"]) is not int or first["BITPIX"] <= 0:
            raise _Fallback
    return hdu_type


def _read_header(read: Callable[[int, int], bytes], offset: int, syn: _Syntax) -> tuple[str, int]:
    """The header text before END of the HDU at `offset`, and the offset of its data unit."""
    blocks = []
    while True:
        block = read(offset, _BLOCK)
        offset += _BLOCK
        if len(block) != _BLOCK or block.translate(None, _VALID_BYTES):
            raise _Fallback  # cut short, or bytes astropy warns about (or replaces)
        # astropy takes the first match of HEADER_END_RE that starts a card; a match starting inside a card
        # can never cover the 'E' of one that starts a card, so trying the regex where a card starts with END
        # finds the same one.
        pos = block.find(b"END")
        while pos >= 0:
            if pos % _CARD == 0 and (m := syn.end_re.match(block, pos)) is not None:
                if m.group("invalid"):
                    raise _Fallback
                blocks.append(block[:pos])
                return b"".join(blocks).decode("ascii"), offset
            pos = block.find(b"END", pos + 1)
        blocks.append(block)


def _fast_hdus(path: str, size: int) -> list[_FastHDU]:
    """Every HDU of a standard-conforming file; :class:`_Fallback` for anything else."""
    syn = _syntax()
    strip = _Strip()
    with open(path, "rb", buffering=0) as f:
        if size <= _WHOLE_FILE:
            whole = f.read()
            if len(whole) != size:
                raise _Fallback

            def read(offset: int, n: int) -> bytes:
                return whole[offset:offset + n]
        else:
            def read(offset: int, n: int) -> bytes:
                f.seek(offset)
                return f.read(n)

        hdus: list[_FastHDU] = []
        offset = 0
        while offset < size:
            text, offset = _read_header(read, offset, syn)
            if not text:
                raise _Fallback
            keys, values = _parse_cards(syn, text, strip)
            as_dict, first = _dicts(syn, keys, values)
            offset += _data_size(first)
            hdu_type = _hdu_type(first, keys, len(hdus))
            hdus.append(_FastHDU(hdu_type, text, keys, values, first, as_dict))
    if offset != size or not hdus:
        raise _Fallback  # a data unit cut short (astropy warns), or bytes after the last HDU
    if len(hdus) > 1 and not hdus[0].first.get("EXTEND"):
        raise _Fallback  # astropy adds (or sets) EXTEND in the primary header of a file with extensions
    return hdus


def _fast_view(hdu: _FastHDU) -> _HDUView:
    """The row builders' view of a fast-read HDU; astropy objects only where asked for (WCS, table columns)."""
    cache: dict[str, Any] = {}

    def header() -> Any:
        if "header" not in cache:
            from astropy.io import fits

            cache["header"] = fits.Header.fromstring(hdu.text)
        return cache["header"]

    def columns() -> Any:
        # As astropy builds them for a table HDU read from a file: from the header alone, data delayed.
        from astropy.io import fits
        from astropy.io.fits.hdu.base import DELAYED

        if hdu.hdu_type == "BinTableHDU":  # fits.open passes uint to the classes that take it
            return fits.BinTableHDU(data=DELAYED, header=header(), uint=fits.conf.enable_uint).columns
        return fits.TableHDU(data=DELAYED, header=header()).columns

    is_table = hdu.hdu_type in ("BinTableHDU", "TableHDU")
    return _HDUView(hdu.hdu_type, hdu.hdu_type == "PrimaryHDU", not is_table, is_table, len(hdu.keys), header,
                    lambda: None, columns)


def _read_fast(path: str) -> Records | None:
    """:meth:`FITSBackend.read` without astropy's per-card machinery, or None where the file needs astropy."""
    try:
        size = os.path.getsize(path)
        hdus = _fast_hdus(path, size)
    except Exception:  # _Fallback, or anything unforeseen: astropy's path says what it makes of the file
        return None
    return _records(_view_rows(index, _fast_view(hdu), hdu.as_dict, hdu.first, size)
                    for index, hdu in enumerate(hdus))


def _records(rows: Iterable[tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]]) -> Records:
    """The file's Records from each HDU's (``hdus`` row, ``arrays`` row or None, header dict), in order."""
    rec = Records(format="fits", tables={"hdus": []})
    for index, (row, array, as_dict) in enumerate(rows):
        rec.tables["hdus"].append(row)
        if array is not None:
            rec.arrays.append(array)
        if index == 0:
            rec.attrs = as_dict
    return rec


def _read_astropy(path: str) -> Records:
    """:meth:`FITSBackend.read` through ``fits.open``: every file the fast reader does not take."""
    from astropy.io import fits

    # Non-standard cards are reported as they are, not fixed; astropy's warnings about them end up in
    # the files.warnings column.
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        size = os.path.getsize(path)
        return _records(_hdu_row(index, hdu, size) for index, hdu in enumerate(hdul))


def _open_fits(path: str) -> Any:
    from astropy.io import fits

    # Raw stored values: no BSCALE/BZERO, no unsigned-int conversion; decoding is xarray's job.
    return fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True, do_not_scale_image_data=True,
                     uint=False)


_FILES = HandleCache(_open_fits, FITS_LOCK)


def _image_names(hdul: Any) -> list[str]:
    return [f"HDU{i}" for i, h in enumerate(hdul) if _is_image_array(h)]


class FITSImage(MemberProxy):
    """One image HDU (plain or tile-compressed; the member is its index), raw stored values."""

    def _read(self, key: tuple[slice, ...]) -> Any:
        with FITS_LOCK:
            hdu = _FILES.get(self.path)[self.member]
            # section reads only the requested region (for tile-compressed HDUs: only the tiles it covers).
            return np.array(hdu.section[key], copy=True)


class FITSBackend(FormatBackend):
    """FITS files: primary HDU plus image, table and tile-compressed image extensions."""

    name = "fits"
    priority = 40
    supports_arrays = True
    extra_tables = {"hdus": HDUS}
    suffixes = (".fits", ".fit", ".fts")
    not_profiled = {"fits-table": "table HDU (columns are not one array)"}
    requires = ("astropy",)

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return head.startswith(b"SIMPLE  =")

    def read(self, path: str) -> Records:  # noqa: D102
        # Standard-conforming files without tile compression: the fast reader (same rows, same warnings);
        # everything else through astropy.
        rec = _read_fast(path) if FAST_PATH and fast_readers() else None
        return rec if rec is not None else _read_astropy(path)

    def list_arrays(self, path: str) -> list[str]:  # noqa: D102
        with _open_fits(path) as hdul:
            return _image_names(hdul)

    def open_array(self, path: str, name: str) -> ArraySpec:
        """An image HDU by its catalog name ``HDU<index>`` or by its EXTNAME (case-insensitive; the first HDU
        of that name)."""
        index = int(name[3:]) if name.startswith("HDU") and name[3:].isdigit() else -1
        with FITS_LOCK:
            hdul = _FILES.get(path)
            if index < 0:
                index = next((i for i, h in enumerate(hdul) if (_hdu_name(h) or "").upper() == name.upper()), -1)
            try:
                hdu = hdul[index] if index >= 0 else None
            except IndexError:
                hdu = None
            if hdu is None or not _is_image_array(hdu):
                raise missing_array("FITS image", path, name, _image_names(hdul))
            header = hdu.header
            naxis = _naxis(header)
            stored = _BITPIX[int(header["BITPIX"])]
            attrs = {k: v for k, v in header_to_dict(header).items()
                     if k not in _STRUCTURAL and not (k.startswith("NAXIS") and k[5:].isdigit())}
            if "BUNIT" in header:
                attrs["units"] = str(header["BUNIT"])
            if "BSCALE" in header:
                attrs["scale_factor"] = float(header["BSCALE"])
            if "BZERO" in header:
                attrs["add_offset"] = float(header["BZERO"])
            dtype = stored.newbyteorder("=")
            if "BLANK" in header and dtype.kind in "iu":
                attrs["_FillValue"] = np.array(int(header["BLANK"]), dtype=dtype)[()]
            chunks = _tiles(hdu)
            extra = _celestial(header)
        dims = [_AXES.get(k, f"axis{k}") for k in range(len(naxis), 0, -1)]
        return ArraySpec(FITSImage(path, index, naxis[::-1], dtype), dims, attrs, chunks, extra=extra)

    def file_attrs(self, path: str) -> dict[str, Any]:  # noqa: D102
        with FITS_LOCK:
            return header_to_dict(_FILES.get(path)[0].header)
