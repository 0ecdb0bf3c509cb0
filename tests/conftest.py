"""Shared fixtures: the generated sample tree, a real 2-process LocalCluster, and the scanned catalog."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import distributed  # noqa: F401  (its config defaults must exist before the per-test config snapshot)
import pytest

from metaextract_dask.sample import generate


@pytest.fixture(autouse=True)
def _reset_dask_config() -> Iterator[None]:
    """Each test starts from, and leaves behind, the same dask.config."""
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The `small` sample tree and its manifest (what the generator wrote)."""
    root = tmp_path_factory.mktemp("sample")
    return root, generate(root, preset="small", seed=0)


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    """A real LocalCluster with 2 worker processes on loopback (the embedded cluster of `connect`)."""
    from metaextract_dask.cluster import connect

    with connect(n_workers=2, dashboard_address="127.0.0.1:0") as c:
        yield c


@pytest.fixture(scope="session")
def catalog(sample_tree: tuple[Path, dict[str, Any]], client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sample tree scanned on the 2-process cluster, in small batches so both workers get work, each
    committed as its own part (a catalog of many parts)."""
    from metaextract_dask import scan

    root, _ = sample_tree
    out = tmp_path_factory.mktemp("catalog") / "cat"
    with dask.config.set({"metaextract.scan.batch-min-files": 2, "metaextract.scan.batch-max-files": 4,
                          "metaextract.scan.commit-interval": 0}):
        return scan([root], out, client=client)


@pytest.fixture()
def tree(sample_tree: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the sample tree, for tests that change files."""
    root, _ = sample_tree
    dst = tmp_path / "tree"
    shutil.copytree(root, dst)
    return dst
