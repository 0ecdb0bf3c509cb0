"""The Zarr backend (v2 and v3 stores, sharded arrays, one broken array) against the conformance kit."""

from __future__ import annotations

import numpy as np
import pytest

from metaextract_dask.formats import get_backend
from metaextract_dask.testing import FormatBackendTests, reference_files


class TestZarrBackend(FormatBackendTests):
    backend_name = "zarr"

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
        import zarr

        root = tmp_path_factory.mktemp("zarr")
        sharded = zarr.open_group(store=str(root / "sharded.zarr"), mode="w", zarr_format=3)
        arr = sharded.create_array("s", shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="u2")
        arr[:] = np.arange(256, dtype="u2").reshape(16, 16)
        sharded.create_group("sub").create_array("t", shape=(5,), chunks=(5,), dtype="f4")[:] = np.arange(5.0)
        only = zarr.create_array(store=str(root / "array.zarr"), shape=(3, 4), chunks=(2, 2), dtype="i8")
        only[:] = np.arange(12).reshape(3, 4)
        return [*reference_files("zarr"), str(root / "sharded.zarr"), str(root / "array.zarr")]


def test_zarr_chunks_are_the_stored_unit(tmp_path) -> None:
    """A sharded array's catalog chunks are its shards (the files on disk); the inner chunks are in filters."""
    import json

    import zarr

    g = zarr.open_group(store=str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    g.create_array("a", shape=(16, 16), chunks=(4, 4), shards=(8, 8), dtype="f4")
    row = get_backend("zarr").read(str(tmp_path / "s.zarr")).arrays[0]
    assert row["chunks"] == [8, 8]
    assert {"role": "sharding", "shards": [8, 8], "chunks": [4, 4]} in json.loads(row["filters"])
