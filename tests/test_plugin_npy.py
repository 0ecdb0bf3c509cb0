"""A third-party backend end to end: tests/plugins/metaextract-npy built and installed as a real distribution,
found through the entry-point group, checked by the conformance kit, then scanned, opened and profiled on a
real LocalCluster whose workers import it too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from metaextract_dask import formats
from metaextract_dask.testing import FormatBackendTests

PLUGIN = Path(__file__).parent / "plugins" / "metaextract-npy"


@pytest.fixture(scope="module")
def npy_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the plugin into a fresh folder, put it on sys.path (and PYTHONPATH, for worker processes)."""
    work = tmp_path_factory.mktemp("npy-plugin")
    shutil.copytree(PLUGIN, work / "src")  # build outside the source tree: no build/ or egg-info left there
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(work / "src")], check=True)
    assert (target / "metaextract_npy-1.0.0.dist-info" / "entry_points.txt").is_file()
    saved_env = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), saved_env) if p)
    formats.get_backends.cache_clear()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env
        for name in [m for m in sys.modules if m.startswith("metaextract_npy")]:
            del sys.modules[name]
        formats.get_backends.cache_clear()


def _write_samples(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {
        "field.npy": rng.normal(5.0, 2.0, (300, 200)),
        "counts_fortran.npy": np.asfortranarray(rng.integers(-500, 500, (40, 30), dtype=np.int16)),
        "cube_big_endian.npy": rng.random((4, 5, 6)).astype(">f4"),
        "flags.npy": rng.random(50) > 0.5,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(folder / name, arr)
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return arrays


class TestNpyBackend(FormatBackendTests):
    backend_name = "npy"

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls, npy_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
        folder = tmp_path_factory.mktemp("npy-samples")
        return [str(folder / name) for name in _write_samples(folder)]


@pytest.mark.slow
def test_plugin_scan_open_profile(npy_plugin: Path, tmp_path: Path) -> None:
    import metaextract_dask as mx
    from metaextract_dask.cluster import connect

    data = tmp_path / "data"
    arrays = _write_samples(data)
    with connect(n_workers=1, dashboard_address="127.0.0.1:0") as client:  # workers spawned after the install
        assert "npy" in client.run(lambda: [b.name for b in formats.get_backends()]).popitem()[1]
        cat = mx.scan([data], tmp_path / "cat", client=client)
        files = cat.to_pandas("files").set_index("path")
        assert set(files["format"]) == {"npy"} and set(files["status"]) == {"ok"}
        rows = cat.to_pandas("arrays").set_index("path")
        for name, expected in arrays.items():
            path = str(data / name)
            row = rows.loc[path]
            assert list(row["shape"]) == list(expected.shape) and row["dtype"] == expected.dtype.str
            lazy = mx.open_array(path, "array", engine="npy")
            assert lazy.chunks is not None
            np.testing.assert_array_equal(lazy.values, expected)
        assert isinstance(rows.loc[str(data / "objects.npy"), "error"], str)
        stats = mx.profile(cat, client=client, device="cpu").set_index("path")
    for name, expected in arrays.items():
        s = stats.loc[str(data / name)]
        values = expected.astype(np.float64)
        assert s["status"] == "ok" and s["count"] == expected.size
        assert s["min"] == values.min() and s["max"] == values.max()
        assert s["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert s["std"] == pytest.approx(values.std(), rel=1e-9)
    assert stats.loc[str(data / "objects.npy"), "status"] == "skipped"
