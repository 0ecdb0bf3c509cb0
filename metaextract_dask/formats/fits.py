"""FITS reader (astropy): every HDU's header, image/table array descriptions and celestial WCS footprints."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from metaextract_dask.formats.base import FormatReader, Records
from metaextract_dask.jsonutil import dumps, to_jsonable

__all__ = ["FITSReader", "header_to_dict", "wcs_footprint"]

_BITPIX = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_REPEATABLE = {"COMMENT", "HISTORY", ""}


def header_to_dict(header: Any) -> dict[str, Any]:
    """All cards of a header as a dict; COMMENT/HISTORY/blank cards and repeated keywords become lists."""
    from astropy.io.fits.card import Undefined

    out: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        try:
            value = card.value
        except Exception:  # an unparsable card keeps its raw text; the file is still catalogued
            value = card.image[10:].strip() if len(card.image) > 10 else card.image
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


def _hdu_row(index: int, hdu: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from astropy.io import fits

    header = hdu.header
    naxis = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header.get("NAXIS", 0)) + 1)]
    is_primary = isinstance(hdu, fits.PrimaryHDU)
    is_image = isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
    row: dict[str, Any] = {
        "index": index,
        "extname": header.get("EXTNAME") or (None if is_primary else hdu.name or None),
        "extver": header.get("EXTVER"),
        # Tile-compressed images: astropy's image view of the header (XTENSION=IMAGE), as in `header`;
        # hdu_type CompImageHDU tells them apart from plain images.
        "xtension": None if is_primary else str(header.get("XTENSION", "")).strip() or None,
        "hdu_type": type(hdu).__name__,
        "bitpix": header.get("BITPIX"),
        "naxis": naxis,
        "n_cards": len(header.cards),
        "header": dumps(header_to_dict(header)),
    }
    if is_image and len(naxis) >= 2:
        try:
            row["wcs_footprint"] = wcs_footprint(header)
        except Exception as exc:  # a broken WCS is reported, the HDU is still catalogued
            row["wcs_error"] = f"{type(exc).__name__}: {exc}"

    array = None
    if is_image and naxis and all(naxis):
        attrs = {k: to_jsonable(header[k]) for k in ("BSCALE", "BZERO", "BLANK", "BUNIT") if k in header}
        chunks = None
        compression = None
        if isinstance(hdu, fits.CompImageHDU):
            # Tiles are the on-disk chunks; ZTILEn counts in FITS axis order, numpy order is reversed.
            raw = hdu._bintable.header if hasattr(hdu, "_bintable") else header
            tiles = [int(raw.get(f"ZTILE{i}", 1 if i > 1 else naxis[0])) for i in range(1, len(naxis) + 1)]
            chunks = tiles[::-1]
            compression = str(raw.get("ZCMPTYPE", "")).strip().lower() or None
        array = {
            "name": f"HDU{index}",
            "kind": "fits-image",
            "shape": naxis[::-1],
            "dtype": _BITPIX[int(header["BITPIX"])],
            "dims": None,
            "chunks": chunks,
            "compression": compression,
            "fill_value": dumps(header["BLANK"]) if "BLANK" in header else None,
            "units": header.get("BUNIT"),
            "nbytes": int(np.prod(naxis, dtype=np.int64)) * abs(int(header["BITPIX"])) // 8,
            "attrs": dumps(attrs),
        }
    elif isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
        cols = hdu.columns
        nrows = int(header.get("NAXIS2", 0))
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
            "nbytes": nrows * int(header.get("NAXIS1", 0)),
            "attrs": dumps({"columns": [{"name": c.name, "format": str(c.format), "unit": c.unit}
                                        for c in cols]}),
        }
    return row, array


class FITSReader(FormatReader):
    """FITS files: primary HDU plus image, table and tile-compressed image extensions."""

    name = "fits"
    priority = 40

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return head.startswith(b"SIMPLE  =")

    def read(self, path: str) -> Records:  # noqa: D102
        from astropy.io import fits

        rec = Records(format="fits")
        # Non-standard cards are reported as they are, not fixed; astropy's warnings about them end up in
        # the files.warnings column.
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            for index, hdu in enumerate(hdul):
                row, array = _hdu_row(index, hdu)
                rec.hdus.append(row)
                if array is not None:
                    rec.arrays.append(array)
                if index == 0:
                    rec.attrs = header_to_dict(hdu.header)
        return rec
