"""The HDF5 backend against the conformance kit (generator files plus storage layouts the generator lacks)."""

from __future__ import annotations

import numpy as np
import pytest

from metaextract_dask.testing import FormatBackendTests, reference_files


class TestHDF5Backend(FormatBackendTests):
    backend_name = "hdf5"

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
        import h5py

        path = tmp_path_factory.mktemp("hdf5") / "layouts.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("big_endian", data=np.arange(60, dtype=">i4").reshape(6, 10))
            f.create_dataset("chunked_edges", data=np.linspace(0, 1, 70).reshape(7, 10), chunks=(4, 4))
            f.create_dataset("filled", shape=(5, 5), dtype="f4", fillvalue=-1.0, chunks=(2, 5))
            f.create_dataset("scalar", data=3.5)
            f["flags"] = np.array([True, False, True])
            f.create_dataset("text", data=["a", "bc"], dtype=h5py.string_dtype())
            f["x"] = np.arange(10.0)
            f["x"].make_scale("x")
            f["big_endian"].dims[1].attach_scale(f["x"])
        return [*reference_files("hdf5"), str(path)]
