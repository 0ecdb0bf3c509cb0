"""Zarr reader (zarr-python 3): v2 and v3 directory stores, groups, arrays, codecs, dimension names."""

from __future__ import annotations

import os
from typing import Any

from metaextract_dask.formats.base import FormatReader, Records
from metaextract_dask.jsonutil import dumps, to_jsonable

__all__ = ["ZarrReader", "ZARR_MARKERS", "is_zarr_store"]

#: Files that make a directory a Zarr store (v3 ``zarr.json``; v2 ``.zgroup``/``.zarray``/``.zmetadata``).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def is_zarr_store(path: str) -> bool:
    """True for a directory holding Zarr metadata at its top level."""
    return any(os.path.isfile(os.path.join(path, m)) for m in ZARR_MARKERS)


def _codec_name(codec: Any) -> str:
    # numcodecs (v2) codecs carry codec_id; zarr v3 codecs are classes like BloscCodec / ZstdCodec.
    codec_id = getattr(codec, "codec_id", None)
    if codec_id:
        return str(codec_id)
    name = type(codec).__name__
    return name[: -len("Codec")].lower() if name.endswith("Codec") else name.lower()


def _codec_config(codec: Any) -> dict[str, Any]:
    if hasattr(codec, "get_config"):
        return to_jsonable(codec.get_config())
    if hasattr(codec, "to_dict"):
        return to_jsonable(codec.to_dict())
    return {"name": _codec_name(codec)}


def _array_row(name: str, arr: Any) -> dict[str, Any]:
    attrs = to_jsonable(dict(arr.attrs))
    meta = arr.metadata
    if getattr(meta, "zarr_format", 2) == 3:
        dims = list(meta.dimension_names) if meta.dimension_names else None
    else:
        dims = attrs.get("_ARRAY_DIMENSIONS")
    compressors = list(arr.compressors or ())
    filters = list(arr.filters or ())
    codecs = [dict(_codec_config(c), role="filter") for c in filters]
    codecs += [dict(_codec_config(c), role="compressor") for c in compressors]
    shards = getattr(arr, "shards", None)
    if shards:
        codecs.append({"role": "sharding", "shards": list(shards)})
    dt = arr.dtype
    dtype = dt.str if hasattr(dt, "str") else str(dt)
    units = attrs.get("units")
    return {
        "name": name,
        "kind": "zarr-array",
        "shape": list(arr.shape),
        "dtype": dtype,
        "dims": dims,
        "chunks": list(arr.chunks),
        "compression": _codec_name(compressors[0]) if compressors else None,
        "filters": dumps(codecs) if codecs else None,
        "fill_value": dumps(arr.fill_value) if arr.fill_value is not None else None,
        "units": units if isinstance(units, str) else None,
        "nbytes": int(arr.nbytes),
        "attrs": dumps(attrs),
    }


class ZarrReader(FormatReader):
    """Zarr v2 and v3 directory stores (a store is one catalog entry, its size the sum of its files)."""

    name = "zarr"
    priority = 30
    directories = True

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return is_zarr_store(path)

    def read(self, path: str) -> Records:  # noqa: D102
        import zarr

        node = zarr.open(store=path, mode="r")
        rec = Records(format="zarr", format_version=str(node.metadata.zarr_format))
        rec.attrs = to_jsonable(dict(node.attrs))
        if isinstance(node, zarr.Array):
            rec.arrays.append(_array_row("/", node))
            return rec
        rec.groups["/"] = {"attrs": rec.attrs}
        for name, member in sorted(node.members(max_depth=None)):
            full = "/" + name
            if isinstance(member, zarr.Array):
                try:
                    rec.arrays.append(_array_row(full, member))
                except Exception as exc:
                    rec.arrays.append({"name": full, "kind": "zarr-array", "error": f"{type(exc).__name__}: {exc}"})
            else:
                rec.groups[full] = {"attrs": to_jsonable(dict(member.attrs))}
        return rec
