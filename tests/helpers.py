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
           "normalized", "stop_processes", "assert_quantiles", "assert_sketch_histogram"]

#: The relative accuracy the stats table promises for its quantile columns (the sketch's bound is 2**-8).
QUANTILE_RTOL = 0.01


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


def assert_quantiles(row: Any, valid: Any, where: Any = "", *, prefix: str = "", scale: float = 1.0,
                     offset: float = 0.0) -> None:
    """The quantile columns of `row` (``p01`` ... ``p99``, or ``phys_p01`` ... with `prefix` "phys_") are within
    1 % (the sketch's own bound, 2**-8, for raw values) of numpy's order statistic of the same rank
    (``method="inverted_cdf"``) of the `valid` raw values (mapped through `scale`/`offset` for phys_)."""
    import numpy as np

    from metaextract_dask.sketch import QUANTILES

    v = np.asarray(valid, dtype=np.float64).ravel()
    for name, q in QUANTILES.items():
        got = row[prefix + name]
        if not v.size:
            assert none(got) is None, (where, name, got)
            continue
        if prefix:  # physical units: the order statistic of the raw values of the mirrored rank for scale < 0
            ref_raw = np.quantile(v, q, method="inverted_cdf") if scale >= 0 else -np.quantile(-v, q, method="inverted_cdf")
            # the raw bound mapped through scale, plus the rounding of the affine map itself
            ref = ref_raw * scale + offset
            tol = 2.0 ** -8 * abs(ref_raw * scale) * (1 + 1e-12) + 4 * np.finfo(float).eps * abs(ref)
        else:
            ref = np.quantile(v, q, method="inverted_cdf")
            tol = 2.0 ** -8 * abs(ref) * (1 + 1e-12)
            assert abs(got - ref) <= QUANTILE_RTOL * abs(ref), (where, name, got, ref)
        assert abs(got - ref) <= tol, (where, prefix + name, got, ref)


def assert_sketch_histogram(hist: Any, valid: Any, bins: int, lo: float, hi: float, where: Any = "") -> None:
    """A histogram derived from the sketch (stats.sketch_histogram) against numpy's exact one: the same total,
    and each bin off by at most the counts of the sketch buckets its two edges cut, plus one (rounding)."""
    import numpy as np

    from metaextract_dask.sketch import keys_of

    v = np.asarray(valid, dtype=np.float64).ravel()
    hist = np.asarray(hist, dtype=np.int64)
    ref, edges = np.histogram(v, bins=bins, range=(lo, hi))
    assert hist.sum() == ref.sum() == v.size, where
    keys, counts = np.unique(keys_of(v), return_counts=True)
    at = dict(zip(keys.tolist(), counts.tolist()))
    cut = np.array([at.get(int(k), 0) for k in keys_of(edges)])
    bound = cut[:-1] + cut[1:] + 1
    bad = np.flatnonzero(np.abs(hist - ref) > bound)
    assert not bad.size, (where, bad[:5], hist[bad[:5]], ref[bad[:5]], bound[bad[:5]])
