"""A conformance kit for format backends (built-in and plugins), in the style of zarr-python's ``StoreTests``.

Subclass :class:`FormatBackendTests` in a pytest test module, name the backend and give samples of its
format; every check of the backend contract then runs on each sample::

    from metaextract_dask.testing import FormatBackendTests

    class TestNpyBackend(FormatBackendTests):
        backend_name = "npy"

        @pytest.fixture(scope="class")
        def samples(self, tmp_path_factory):
            d = tmp_path_factory.mktemp("npy")
            np.save(d / "a.npy", np.arange(12.0).reshape(3, 4))
            return [str(d / "a.npy")]

Checks an ability the backend does not declare (``supports_arrays``, ``maps_regions``, ``reads_in_place``) are
skipped, not failed. The other formats' files the sniff must not claim come from the project's own sample
generator (:func:`reference_samples`, written once per process).
"""

from __future__ import annotations

import atexit
import io
import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, ClassVar

import dask
import numpy as np
import pyarrow as pa
import pytest

from metaextract_dask.formats import FormatBackend, Records, get_backend, sniff
from metaextract_dask.formats.base import ArrayProxy, ArraySpec

__all__ = ["FormatBackendTests", "reference_samples", "reference_files", "FORMAT_LIBRARIES"]

#: Modules whose objects must never travel inside a pickled recipe (open files, handles, maps).
FORMAT_LIBRARIES = frozenset({"h5py", "netCDF4", "zarr", "numcodecs", "astropy", "pydicom", "_io", "io", "mmap",
                              "_thread", "threading"})
# Arrays larger than this (elements) are not read whole by the region checks.
_MAX_READ = 1 << 24


@lru_cache(maxsize=1)
def reference_samples() -> tuple[dict[str, Any], ...]:
    """Files of every built-in format, written once per process by :func:`metaextract_dask.sample.generate`
    (small preset): the generator's manifest entries (``path`` made absolute, ``format``, ``status``; the
    deliberately broken files included)."""
    from metaextract_dask.sample import generate

    root = tempfile.mkdtemp(prefix="metaextract-kit-")
    atexit.register(shutil.rmtree, root, True)
    manifest = generate(root, preset="small", seed=0)
    return tuple(dict(entry, path=os.path.join(root, entry["path"])) for entry in manifest["files"])


def reference_files(*formats: str, status: str = "ok") -> list[str]:
    """Paths of :func:`reference_samples` of the given ``files.format`` values and status."""
    return [e["path"] for e in reference_samples() if e["format"] in formats and e["status"] == status]


class _RecordingUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.classes: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.classes.append((module, name))
        return super().find_class(module, name)


def _head(path: str, nbytes: int = 1024) -> bytes:
    if os.path.isdir(path):
        return b""
    with open(path, "rb") as f:
        return f.read(nbytes)


def _numeric(dtype: Any) -> np.dtype | None:
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        return None
    return dt if dt.kind in "biuf" and dt.fields is None else None


def _array_rows(backend: FormatBackend, rec: Records) -> list[dict[str, Any]]:
    """The catalog's arrays that the backend opens: described (no error), of a kind it does not leave out."""
    return [r for r in rec.arrays if not r.get("error") and r.get("kind") not in backend.not_profiled]


class FormatBackendTests:
    """The backend contract as pytest checks; subclass it and set :attr:`backend_name` and a ``samples``
    fixture (paths of files, or store directories, of the backend's format)."""

    #: Registry name of the backend under test.
    backend_name: ClassVar[str] = ""

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls) -> list[str]:
        """Paths of the format's own files; override in the subclass."""
        raise NotImplementedError("define a `samples` fixture returning files of the backend's format")

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> FormatBackend:
        """The registered backend (so the registry, entry point included, is part of what is tested)."""
        return get_backend(cls.backend_name)

    @pytest.fixture(scope="class")
    @classmethod
    def records(cls, backend: FormatBackend, samples: list[str]) -> dict[str, Records]:
        """What the backend reads from each sample."""
        return {path: backend.read(path) for path in samples}

    def _arrays(self, backend: FormatBackend, records: dict[str, Records]) -> Iterator[tuple[str, dict[str, Any]]]:
        if not backend.supports_arrays:
            pytest.skip(f"backend {backend.name!r} declares no arrays")
        for path, rec in records.items():
            for row in _array_rows(backend, rec):
                yield path, row

    # ------------------------------------------------------------------ detection
    def test_has_samples(self, samples: list[str]) -> None:
        assert samples, "the kit needs at least one sample file"

    def test_sniff_accepts_own_samples(self, backend: FormatBackend, samples: list[str]) -> None:
        for path in samples:
            assert backend.sniff(_head(path), path), f"{backend.name} does not claim its own sample {path}"
            found = sniff(path)
            assert found is not None and found.name == backend.name, \
                f"the registry gives {path} to {found and found.name!r}, not {backend.name!r}"

    def test_sniff_rejects_other_formats(self, backend: FormatBackend) -> None:
        for entry in reference_samples():
            fmt, path = entry["format"], entry["path"]
            if fmt in backend.formats():
                continue
            if backend.directories == os.path.isdir(path) and backend.sniff(_head(path), path):
                # A family claim (plain HDF5 accepts netCDF-4's magic) is fine only when a backend tried
                # before it takes the file.
                found = sniff(path)
                assert found is not None and found.name != backend.name and found.priority < backend.priority, \
                    f"{backend.name} claims {path}, a {fmt} file"

    def test_formats_are_declared(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        for path, rec in records.items():
            assert rec.format in backend.formats(), f"{path}: format {rec.format!r} not in {backend.formats()}"
            assert backend.error_format(_head(path)) in backend.formats()

    # ------------------------------------------------------------------ records
    def test_rows_validate_against_the_schemas(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        from metaextract_dask.jsonutil import dumps
        from metaextract_dask.schema import ARRAYS, FILES

        for path, rec in records.items():
            file_row = {"path": path, "format": rec.format, "format_version": rec.format_version,
                        "size_bytes": 0, "status": "ok", "n_arrays": len(rec.arrays), "attrs": dumps(rec.attrs),
                        "groups": dumps(rec.groups) if rec.groups else None, "warnings": rec.warnings or None}
            pa.Table.from_pylist([file_row], schema=FILES)
            json.loads(file_row["attrs"])
            for row in rec.arrays:
                unknown = set(row) - set(ARRAYS.names)
                assert not unknown, f"{path}: arrays columns {sorted(unknown)} are not in the schema"
                table = pa.Table.from_pylist([{"path": path, **row}], schema=ARRAYS)
                assert table.column("name")[0].as_py(), f"{path}: an array row without a name"
                for col in ("attrs", "filters", "fill_value"):
                    if row.get(col) is not None:
                        json.loads(row[col])
            for name, rows in rec.tables.items():
                assert name in backend.extra_tables, f"{path}: rows for undeclared table {name!r}"
                schema = backend.extra_tables[name]
                for row in rows:
                    unknown = set(row) - set(schema.names)
                    assert not unknown, f"{path}: {name} columns {sorted(unknown)} are not in the schema"
                pa.Table.from_pylist([{"path": path, **r} for r in rows], schema=schema)
        for name, schema in backend.extra_tables.items():
            assert schema.names[0] == "path" and not schema.field("path").nullable, name

    # ------------------------------------------------------------------ arrays
    def test_list_arrays_equals_catalog_names(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        if not backend.supports_arrays:
            pytest.skip(f"backend {backend.name!r} declares no arrays")
        for path, rec in records.items():
            listed = backend.list_arrays(path)
            catalogued = [r["name"] for r in rec.arrays if r.get("kind") not in backend.not_profiled]
            assert listed == catalogued, path

    def test_open_array_equals_catalog_row(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        for path, row in self._arrays(backend, records):
            spec = backend.open_array(path, row["name"])
            assert isinstance(spec, ArraySpec) and isinstance(spec.proxy, ArrayProxy)
            where = f"{path}::{row['name']}"
            assert list(spec.proxy.shape) == list(row["shape"]), where
            assert len(spec.dims) == len(spec.proxy.shape) == len(set(spec.dims)), where
            stored = _numeric(row["dtype"])
            if stored is not None:  # byte order aside: the proxy may give native order
                assert spec.proxy.dtype.newbyteorder("=") == stored.newbyteorder("="), \
                    f"{where}: catalog says {row['dtype']}, open_array gives {spec.proxy.dtype.str}"
            expected = tuple(row["chunks"]) if row.get("chunks") else None
            assert spec.disk_chunks == expected, f"{where}: chunks {spec.disk_chunks} vs catalog {expected}"
            named = row.get("dims") or []
            for axis, dim in enumerate(named):  # blank or repeated catalog names get xarray-safe stand-ins
                if dim and named.count(dim) == 1:
                    assert spec.dims[axis] == dim, f"{where}: dims {spec.dims} vs catalog {named}"
            fill = json.loads(row["fill_value"]) if row.get("fill_value") else None
            if stored is not None and isinstance(fill, (int, float, str)) and "_FillValue" in spec.attrs:
                mine = float(np.asarray(spec.attrs["_FillValue"]).ravel()[0])
                theirs = float(fill) if not isinstance(fill, str) else float(fill.replace("Infinity", "inf"))
                assert mine == theirs or (math.isnan(mine) and math.isnan(theirs)), \
                    f"{where}: _FillValue {mine} vs catalog fill_value {fill}"

    def test_missing_array_is_a_key_error(self, backend: FormatBackend, samples: list[str]) -> None:
        if not backend.supports_arrays:
            pytest.skip(f"backend {backend.name!r} declares no arrays")
        with pytest.raises(KeyError):
            backend.open_array(samples[0], "/no/such/array/here")

    def test_opening_reads_no_data(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        from metaextract_dask.arrays import open_array

        for path, row in self._arrays(backend, records):
            before = ArrayProxy.reads
            # coords=False: a dimension coordinate's values are read for its index, as xarray does; no time
            # decoding: xarray's reads a CF time's first and last values to choose the dtype
            arr = open_array(path, row["name"], engine=backend.name, coords=False, decode={"decode_times": False})
            assert ArrayProxy.reads == before, f"{path}::{row['name']}: opening read data"
            assert dask.is_dask_collection(arr.variable._data), f"{path}::{row['name']}: not a dask array"

    def test_proxies_pickle_as_recipes(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        for path, row in self._arrays(backend, records):
            proxy = backend.open_array(path, row["name"]).proxy
            data = pickle.dumps(proxy)
            unpickler = _RecordingUnpickler(data)
            clone = unpickler.load()
            held = {m for m, _ in unpickler.classes if m.split(".")[0] in FORMAT_LIBRARIES}
            assert not held, f"{path}::{row['name']}: the pickled recipe holds {sorted(held)} objects"
            assert len(data) < 64 << 10, f"{path}::{row['name']}: a {len(data)}-byte recipe"
            assert (clone.shape, clone.dtype) == (proxy.shape, proxy.dtype)

    def test_region_reads_equal_a_full_read(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        for path, row in self._arrays(backend, records):
            proxy = backend.open_array(path, row["name"]).proxy
            if _numeric(proxy.dtype) is None or not 0 < proxy.size <= _MAX_READ:
                continue
            where = f"{path}::{row['name']}"
            full = proxy[(slice(None),) * proxy.ndim] if proxy.ndim else proxy[()]
            assert full.shape == proxy.shape and full.dtype == proxy.dtype, where
            region = tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in proxy.shape)
            part = full[region]
            assert np.array_equal(proxy[region], part, equal_nan=full.dtype.kind == "f"), where
            out = np.empty(part.shape, dtype=proxy.dtype)
            got = proxy.read_region(region, out=out)
            assert np.array_equal(got, part, equal_nan=full.dtype.kind == "f"), where
            if proxy.reads_in_place and region:
                assert got is out, f"{where}: declares reads_in_place but returned a new array"
            pieces = proxy.iter_region(region) if proxy.maps_regions else None
            if pieces is not None:
                flat = np.sort(np.concatenate([np.array(p) for p in pieces]))
                assert np.array_equal(flat, np.sort(part.ravel()), equal_nan=True), where
            if proxy.ndim:  # a step and an integer index, as dask and users ask
                key = (slice(None, None, 2),) + (0,) * (proxy.ndim - 1)
                assert np.array_equal(proxy[key], full[key], equal_nan=full.dtype.kind == "f"), where

    def test_block_statistics_equal_numpy(self, backend: FormatBackend, records: dict[str, Records]) -> None:
        from metaextract_dask.stats import block_partial, finalize

        for path, row in self._arrays(backend, records):
            proxy = backend.open_array(path, row["name"]).proxy
            if _numeric(proxy.dtype) is None or not 0 < proxy.size <= _MAX_READ:
                continue
            values = proxy[(slice(None),) * proxy.ndim] if proxy.ndim else proxy[()]
            stats = finalize(block_partial(np.asarray(values)))
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
            assert stats["count"] == values.size
            if finite.size:
                where = f"{path}::{row['name']}"
                assert stats["min"] == float(finite.min()) and stats["max"] == float(finite.max()), where
                assert math.isclose(stats["mean"], float(np.mean(finite, dtype=np.float64)), rel_tol=1e-9,
                                    abs_tol=1e-9), where
