"""Comparison helpers for catalog-vs-manifest tests."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pandas as pd

__all__ = ["assert_subset", "by_relpath", "loads", "none"]


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
