"""FITS backend (astropy): every HDU's header, image/table array descriptions, celestial WCS footprints
(the ``hdus`` table), and lazy image HDUs (tile-compressed ones read tile by tile)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from metaextract_dask.formats.base import ArraySpec, FormatBackend, MemberProxy, Records, missing_array, truncation
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
        value = None if isinstance(value, Undefined) else to_jsonable(value)
        if key in _REPEATABLE:
            out.setdefault(key, []).append(value)
        elif key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[key] = value
    return out


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


def _hdu_row(index: int, hdu: Any, file_size: int) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The ``hdus`` row, the ``arrays`` row (None without data) and the header as a dict, of one HDU."""
    from astropy.io import fits

    header = hdu.header
    first: dict[str, Any] = {}  # each card parsed once: the header dict and the columns come from one pass
    as_dict = header_to_dict(header, first)
    naxis = _naxis(first)
    is_primary = isinstance(hdu, fits.PrimaryHDU)
    row: dict[str, Any] = {
        "index": index,
        "extname": _value(first, "EXTNAME", str) or (None if is_primary else _hdu_name(hdu)),
        "extver": _value(first, "EXTVER", int),
        # Tile-compressed images: astropy's image view of the header (XTENSION=IMAGE), as in `header`;
        # hdu_type CompImageHDU tells them apart from plain images.
        "xtension": None if is_primary else _value(first, "XTENSION", str),
        "hdu_type": type(hdu).__name__,
        "bitpix": _value(first, "BITPIX", int),
        "naxis": naxis,
        "n_cards": len(header.cards),
        "header": dumps(as_dict),
    }
    if _is_image(hdu) and len(naxis) >= 2 and _has_wcs_keywords(first):
        try:
            row["wcs_footprint"] = wcs_footprint(header)
        except Exception as exc:  # a broken WCS is reported, the HDU is still catalogued
            row["wcs_error"] = f"{type(exc).__name__}: {exc}"

    try:
        array = _array_row(index, hdu, file_size, first, naxis)
    except Exception as exc:  # a header astropy reads but whose data unit it cannot describe: that array only
        kind = "fits-table" if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) else "fits-image"
        array = {"name": f"HDU{index}", "kind": kind, "error": f"{type(exc).__name__}: {exc}"}
    return row, array, as_dict


def _array_row(index: int, hdu: Any, file_size: int, header: dict[str, Any], naxis: list[int]
               ) -> dict[str, Any] | None:
    """The ``arrays`` row of an image or table HDU, None for an HDU without data (`header`: the first value of
    each keyword, from :func:`header_to_dict`)."""
    from astropy.io import fits

    def card(key: str) -> Any:  # header[key] as astropy raises it for a damaged card
        value = header[key]
        if value is _UNPARSABLE:
            return hdu.header[key]
        return value

    array = None
    if _is_image_array(hdu, naxis):
        attrs = {k: to_jsonable(card(k)) for k in ("BSCALE", "BZERO", "BLANK", "BUNIT") if k in header}
        tiles = _tiles(hdu)
        dtype = _BITPIX[int(card("BITPIX"))]
        problem = None if tiles else truncation(int(np.prod(naxis, dtype=np.int64)) * dtype.itemsize, file_size,
                                                f"the header ({'x'.join(map(str, naxis))} BITPIX {card('BITPIX')})")
        array = {
            "name": f"HDU{index}",
            "kind": "fits-image",
            "shape": naxis[::-1],
            "dtype": dtype.str,
            "dims": None,
            "chunks": list(tiles) if tiles else None,
            "compression": str(hdu.compression_type).lower() if tiles else None,
            "fill_value": dumps(card("BLANK")) if "BLANK" in header else None,
            "units": _value(header, "BUNIT", str),
            "nbytes": int(np.prod(naxis, dtype=np.int64)) * dtype.itemsize,
            "attrs": dumps(attrs),
            "error": problem,
        }
    elif isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
        cols = hdu.columns
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
        from astropy.io import fits

        rec = Records(format="fits", tables={"hdus": []})
        # Non-standard cards are reported as they are, not fixed; astropy's warnings about them end up in
        # the files.warnings column.
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            size = os.path.getsize(path)
            for index, hdu in enumerate(hdul):
                row, array, as_dict = _hdu_row(index, hdu, size)
                rec.tables["hdus"].append(row)
                if array is not None:
                    rec.arrays.append(array)
                if index == 0:
                    rec.attrs = as_dict
        return rec

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
