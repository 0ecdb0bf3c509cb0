"""Zarr backend (zarr-python 3): v2 and v3 directory stores, groups, arrays, codecs, dimension names.

A store is one catalog entry. Its nodes are found from the metadata files on disk, and every array is opened
on its own, so one array with broken metadata is an error row of its own, not a lost store.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from metaextract_dask.formats.base import ArraySpec, FormatBackend, MemberProxy, Records, attr_json_limit, \
    missing_array, unique_dims
from metaextract_dask.formats.handles import HandleCache, stamp
from metaextract_dask.jsonutil import capped_attrs, dumps, to_jsonable

__all__ = ["ZarrBackend", "ZarrArray", "ZARR_MARKERS", "is_zarr_store"]

#: Files that make a directory a Zarr store (v3 ``zarr.json``; v2 ``.zgroup``/``.zarray``/``.zmetadata``).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def is_zarr_store(path: str) -> bool:
    """True for a directory holding Zarr metadata at its top level."""
    return any(os.path.isfile(os.path.join(path, m)) for m in ZARR_MARKERS)


def _node_kind(directory: str, files: Sequence[str]) -> str | None:
    """"array", "group", "broken" (metadata that does not parse) or None (no Zarr node here)."""
    if "zarr.json" in files:
        try:
            with open(os.path.join(directory, "zarr.json"), "rb") as f:
                kind = json.load(f).get("node_type")
        except (OSError, ValueError, AttributeError):
            return "broken"
        return kind if kind in ("array", "group") else "broken"
    if ".zarray" in files:
        return "array"
    if ".zgroup" in files:
        return "group"
    return None


def _nodes(path: str) -> list[tuple[str, str]]:
    """(component, kind) of every node of the store, the root as ``""``, sorted by name. The walk does not
    descend into arrays (their chunks can be millions of files)."""
    out: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(path):
        kind = _node_kind(root, files)
        rel = os.path.relpath(root, path)
        component = "" if rel == "." else rel.replace(os.sep, "/")
        if kind is not None:
            out.append((component, kind))
        if kind in ("array", "broken") or (kind is None and component):
            dirs[:] = []  # arrays hold chunks; a plain directory inside a store holds no node
        dirs.sort()
    return sorted(out)


def _array_names(path: str) -> list[str]:
    nodes = _nodes(path)
    if nodes and nodes[0] == ("", "array"):
        return ["/"]
    return ["/" + c for c, kind in nodes if c and kind in ("array", "broken")]


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


def _dims(arr: Any, attrs: dict[str, Any]) -> list[str] | None:
    meta = arr.metadata
    if getattr(meta, "zarr_format", 2) == 3:
        return list(meta.dimension_names) if meta.dimension_names else None
    dims = attrs.get("_ARRAY_DIMENSIONS")
    return list(dims) if isinstance(dims, list) else None


def _disk_chunks(arr: Any) -> tuple[int, ...]:
    """The stored unit: the shard where the array is sharded (a file on disk), else the chunk."""
    return tuple(int(c) for c in (getattr(arr, "shards", None) or arr.chunks))


def _array_row(name: str, arr: Any, limit: int | None) -> dict[str, Any]:
    attrs = capped_attrs(arr.attrs.items(), limit)
    compressors = list(arr.compressors or ())
    filters = list(arr.filters or ())
    codecs = [dict(_codec_config(c), role="filter") for c in filters]
    codecs += [dict(_codec_config(c), role="compressor") for c in compressors]
    shards = getattr(arr, "shards", None)
    if shards:
        codecs.append({"role": "sharding", "shards": list(shards), "chunks": list(arr.chunks)})
    dt = arr.dtype
    dtype = dt.str if hasattr(dt, "str") else str(dt)
    units = attrs.get("units")
    return {
        "name": name,
        "kind": "zarr-array",
        "shape": list(arr.shape),
        "dtype": dtype,
        "dims": _dims(arr, attrs),
        "chunks": list(_disk_chunks(arr)),
        "compression": _codec_name(compressors[0]) if compressors else None,
        "filters": dumps(codecs) if codecs else None,
        "fill_value": dumps(arr.fill_value) if arr.fill_value is not None else None,
        "units": units if isinstance(units, str) else None,
        "nbytes": int(arr.nbytes),
        "attrs": dumps(attrs),
    }


def _meta_file(key: tuple[str, str]) -> str:
    path, component = key
    base = os.path.join(path, component) if component else path
    for marker in ("zarr.json", ".zarray"):
        candidate = os.path.join(base, marker)
        if os.path.isfile(candidate):
            return candidate
    return base


def _open(key: tuple[str, str]) -> Any:
    import zarr

    path, component = key
    return zarr.open_array(store=path, path=component, mode="r") if component else \
        zarr.open_array(store=path, mode="r")


def _open_nodes(path: str, nodes: list[tuple[str, str]]) -> tuple[Any, list[Any]]:
    """The store's root (as ``zarr.open``) and its `nodes` (``(component, kind)``: groups as ``zarr.open_group``,
    anything else as ``zarr.open_array``; the exception where one does not open), in one call into zarr's event
    loop: each synchronous zarr call is a round trip to its I/O thread, ~0.5 ms apiece for small stores."""
    import asyncio

    import zarr.api.asynchronous as za
    from zarr.core.sync import sync

    async def gather() -> tuple[Any, list[Any]]:
        children = asyncio.gather(*(za.open_group(store=path, path=c, mode="r") if kind == "group"
                                    else za.open_array(store=path, path=c, mode="r") for c, kind in nodes),
                                  return_exceptions=True)
        root, opened = await asyncio.gather(za.open(store=path, mode="r"), children, return_exceptions=True)
        if isinstance(root, BaseException):
            raise root
        return root, opened

    root, opened = sync(gather())
    return _wrapped(root), [node if isinstance(node, BaseException) else _wrapped(node) for node in opened]


def _wrapped(node: Any) -> Any:
    """A node of zarr's asynchronous API as its synchronous API returns it."""
    import zarr
    from zarr.core.group import AsyncGroup

    return zarr.Group(node) if isinstance(node, AsyncGroup) else zarr.Array(node)


# Open zarr arrays of this process by (store, component), renewed when the array's metadata file changes.
_ARRAYS = HandleCache(_open, threading.Lock(), maxsize=256, stamp_of=lambda key: stamp(_meta_file(key)),
                      open_under_lock=False)


class ZarrArray(MemberProxy):
    """One array of a Zarr store (the member is its component path; zarr-python reads and decodes chunks)."""

    def _stamp_path(self) -> str:
        return _meta_file((self.path, self.member))

    def _read(self, key: tuple[slice, ...]) -> Any:
        return _ARRAYS.get((self.path, self.member))[key if key else ()]


class ZarrBackend(FormatBackend):
    """Zarr v2 and v3 directory stores (a store is one catalog entry, its size the sum of its files)."""

    name = "zarr"
    priority = 30
    directories = True
    supports_arrays = True
    suffixes = (".zarr",)
    requires = ("zarr",)

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return is_zarr_store(path)

    def read(self, path: str) -> Records:  # noqa: D102
        import zarr

        nodes = [(component, kind) for component, kind in _nodes(path) if component]
        root, opened = _open_nodes(path, nodes)  # the root: if it does not open, the store is an error row
        rec = Records(format="zarr", format_version=str(root.metadata.zarr_format))
        limit = attr_json_limit()
        rec.attrs = capped_attrs(root.attrs.items(), limit)
        if isinstance(root, zarr.Array):
            rec.arrays.append(_array_row("/", root, limit))
            return rec
        rec.groups["/"] = {}  # its attributes are the store's (files.attrs): stored once
        for (component, kind), node in zip(nodes, opened):
            full = "/" + component
            try:
                if isinstance(node, BaseException):
                    raise node
                if kind == "group":
                    rec.groups[full] = {"attrs": capped_attrs(node.attrs.items(), limit)}
                else:  # an array, or metadata that does not parse: opening says what is wrong
                    rec.arrays.append(_array_row(full, node, limit))
            except Exception as exc:  # one broken node is its own error, the rest of the store is catalogued
                if kind == "group":
                    rec.warnings.append(f"group {full}: {type(exc).__name__}: {exc}")
                else:
                    rec.arrays.append({"name": full, "kind": "zarr-array", "error": f"{type(exc).__name__}: {exc}"})
        return rec

    def list_arrays(self, path: str) -> list[str]:  # noqa: D102
        return _array_names(path)

    def open_array(self, path: str, name: str) -> ArraySpec:  # noqa: D102
        import zarr

        component = name.strip("/")
        arr = None
        if name.startswith("/"):
            try:
                arr = _ARRAYS.get((path, component))
            except Exception:
                available = _array_names(path)
                if name in available:  # the array exists but cannot be opened: that error is the answer
                    raise
                raise missing_array("Zarr", path, name, available) from None
        if not isinstance(arr, zarr.Array):
            raise missing_array("Zarr", path, name, _array_names(path))
        attrs: dict[str, Any] = dict(arr.attrs)
        dims = _dims(arr, attrs) or []
        attrs.pop("_ARRAY_DIMENSIONS", None)
        dtype = np.dtype(arr.dtype)
        extra: dict[str, Any] = {}
        if "_FillValue" not in attrs and arr.fill_value is not None and dtype.kind in "biufc":
            attrs["_FillValue"] = np.array(arr.fill_value, dtype=dtype)[()]
            # xarray masks a Zarr v3 fill value only when asked (use_zarr_fill_value_as_mask): say where it
            # came from, so the xarray layer can do the same
            extra["fill_value_from_metadata"] = int(arr.metadata.zarr_format)
        proxy = ZarrArray(path, component, arr.shape, dtype)
        return ArraySpec(proxy, unique_dims(dims, len(arr.shape)), attrs, _disk_chunks(arr), extra=extra)

    def file_attrs(self, path: str) -> dict[str, Any]:  # noqa: D102
        import zarr

        return capped_attrs(zarr.open(store=path, mode="r").attrs.items(), attr_json_limit())

    def proxy_from_row(self, path: str, row: Any, format_version: str | None = None) -> ZarrArray | None:  # noqa: D102
        dtype = row.get("dtype")
        if not dtype or row.get("shape") is None:
            return None
        try:
            dt = np.dtype(dtype)
        except TypeError:  # a Zarr v3 data type numpy does not spell
            return None
        return ZarrArray(path, row["name"].strip("/"), row["shape"], dt) if dt.kind in "biufcmM" else None

    def group_attrs(self, path: str, group: str) -> dict[str, Any]:  # noqa: D102
        import zarr

        node = zarr.open(store=path, path=group.strip("/"), mode="r")
        return {k: v for k, v in node.attrs.items() if k != "_ARRAY_DIMENSIONS"}

    def list_groups(self, path: str) -> list[str]:  # noqa: D102
        return ["/", *("/" + c for c, kind in _nodes(path) if c and kind == "group")]
