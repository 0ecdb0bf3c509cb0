"""Comparison helpers for catalog-vs-manifest tests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
import math
import os
from typing import Any

import pandas as pd

__all__ = ["assert_same_catalog", "assert_subset", "auto_device", "by_relpath", "install_plugin", "loads", "none",
           "normalized", "stop_processes"]


def none(value: Any) -> Any:
    """Missing values from pandas (None, NaN, pd.NA) as None; anything else unchanged."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def loads(value: Any) -> Any:
    """Parse a JSON column value (None stays None)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else json.loads(value)


def assert_subset(expected: Any, actual: Any, where: str = "") -> None:
    """Every key/value of `expected` is in `actual` (floats within 1e-6 relative, lists element-wise)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not a dict"
        for key, value in expected.items():
            assert key in actual, f"{where}: key {key!r} missing; has {sorted(actual)}"
            assert_subset(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_subset(e, a, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(actual, str):
        assert math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-12), f"{where}: {actual!r} != {expected!r}"
    else:
        assert expected == actual, f"{where}: {actual!r} != {expected!r}"


def by_relpath(df: pd.DataFrame, root: os.PathLike[str] | str) -> pd.DataFrame:
    """Add a `rel` column: the path relative to the sample root, POSIX style."""
    df = df.copy()
    df["rel"] = [os.path.relpath(p, root).replace(os.sep, "/") for p in df["path"]]
    return df


def install_plugin(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> Path:
    """Lay out an installed distribution (dist-info with entry points) under `root`; put `root` on sys.path.

    Parameters
    ----------
    root : Path
        Directory to become a sys.path entry (spawned workers inherit sys.path).
    dist : str
        Distribution name.
    entry_points : dict
        ``{name: "module:Class"}`` for the ``metaextract_dask.formats`` group.
    modules : dict, optional
        ``{module_name: source}`` written next to the dist-info.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, source in (modules or {}).items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[metaextract_dask.formats]\n{lines}")
    return root


def normalized(catalog: Any, tables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Catalog tables (pyarrow) in a canonical row order, without the timing column."""
    import pyarrow as pa

    out = {}
    for name in tables or catalog.tables:
        df = catalog.to_pandas(name).drop(columns=["read_seconds"], errors="ignore")
        keys = ["path", "name"] if name in ("arrays", "stats") else ["path", "index"] if name == "hdus" else ["path"]
        out[name] = pa.Table.from_pandas(df.sort_values(keys).reset_index(drop=True))
    return out


def assert_same_catalog(a: Any, b: Any, tables: tuple[str, ...] | None = None) -> None:
    """Two catalogs hold the same rows (timing aside)."""
    ta, tb = normalized(a, tables), normalized(b, tables)
    for name in ta:
        assert ta[name].equals(tb[name]), name


def auto_device() -> str:
    """The device ``--device auto`` picks on this machine's local workers."""
    from metaextract_dask.profiler import gpu_available

    return "gpu" if gpu_available() else "cpu"


def stop_processes(procs: list[Any]) -> None:
    """Terminate `procs` (e.g. dask scheduler and workers started by a test), last started first; kill any
    that has not ended after 30 s."""
    import subprocess

    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
