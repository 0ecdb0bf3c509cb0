"""NumPy ``.npy`` files as a metaextract-dask format: a complete third-party backend in one module.

Registered through the ``metaextract_dask.formats`` entry-point group (see ``pyproject.toml``). A ``.npy`` file
holds one array; its header (magic, version, dtype, shape, memory order) is all the catalog needs, and the
lazy array reads regions through a read-only memory map.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np

from metaextract_dask.formats.base import ArrayProxy, ArraySpec, FormatBackend, Records, missing_array, \
    unique_dims
from metaextract_dask.jsonutil import dumps

__all__ = ["NpyBackend", "NpyArray", "ARRAY_NAME"]

MAGIC = b"\x93NUMPY"
#: The name of a file's one array in the catalog.
ARRAY_NAME = "array"


def _header(path: str) -> tuple[tuple[int, int], np.dtype, tuple[int, ...], bool, int]:
    """(version, dtype, shape, fortran_order, data offset) from the file's header; no data is read."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return version, dtype, tuple(shape), bool(fortran), f.tell()


class NpyArray(ArrayProxy):
    """The array of one ``.npy`` file, read through a memory map opened per read (a recipe: path, shape,
    dtype, data offset, order)."""

    def __init__(self, path: str, shape: Sequence[int], dtype: Any, offset: int, fortran: bool) -> None:
        super().__init__(path, shape, dtype)
        self.offset = offset
        self.fortran = fortran

    def _read(self, key: tuple[slice, ...]) -> Any:
        stored = np.memmap(self.path, mode="r", dtype=self.dtype, shape=self.shape, offset=self.offset,
                           order="F" if self.fortran else "C")
        return np.array(stored[key] if key else stored[()], copy=True)


class NpyBackend(FormatBackend):
    """NumPy ``.npy`` files (format versions 1.0 to 3.0); object arrays are catalogued, not opened."""

    name = "npy"
    priority = 60
    supports_arrays = True
    suffixes = (".npy",)
    requires = ("numpy",)

    def sniff(self, head: bytes, path: str) -> bool:  # noqa: D102
        return head.startswith(MAGIC)

    def read(self, path: str) -> Records:  # noqa: D102
        version, dtype, shape, fortran, offset = _header(path)
        row: dict[str, Any] = {
            "name": ARRAY_NAME,
            "kind": "npy-array",
            "shape": list(shape),
            "dtype": dtype.str if dtype.fields is None else dumps(ast.literal_eval(repr(dtype.descr))),
            "dims": None,
            "chunks": None,
            "nbytes": int(np.prod(shape, dtype=np.int64)) * dtype.itemsize,
            "attrs": dumps({"fortran_order": fortran, "data_offset": offset}),
        }
        if dtype.hasobject:
            row["error"] = "object arrays are pickled Python objects: not opened"
        return Records(format="npy", format_version=f"{version[0]}.{version[1]}", arrays=[row],
                       attrs={"fortran_order": fortran})

    def list_arrays(self, path: str) -> list[str]:  # noqa: D102
        _, dtype, _, _, _ = _header(path)
        return [] if dtype.hasobject else [ARRAY_NAME]

    def open_array(self, path: str, name: str) -> ArraySpec:  # noqa: D102
        _, dtype, shape, fortran, offset = _header(path)
        if name != ARRAY_NAME or dtype.hasobject:
            raise missing_array("npy", path, name, self.list_arrays(path))
        proxy = NpyArray(path, shape, dtype, offset, fortran)
        return ArraySpec(proxy, unique_dims([], len(shape)), {}, None)
