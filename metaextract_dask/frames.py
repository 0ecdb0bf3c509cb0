"""Catalog tables as pandas and dask DataFrames, with the column types the Arrow schemas say.

pyarrow's default conversion turns an integer column holding a null into float64 (``n_arrays`` 4.0) and a
boolean one into objects; here integers and booleans become Arrow-backed pandas dtypes (``int64[pyarrow]``,
``pd.ArrowDtype``: nullable, ``<NA>`` for nulls). Eager frames keep pyarrow's other conversions (strings as
objects, None when missing; lists as arrays); in dask frames every column but floats and timestamps is
Arrow-backed (``string[pyarrow]``, ``list<item: int64>[pyarrow]`` whose element is a Python list), all of one
kind: pandas' masked ``boolean`` (what ``pd.StringDtype`` comparisons give) cannot be combined with a
``bool[pyarrow]`` mask that holds a null (``path.str.endswith(...) & (nbytes > 0)`` would raise).

Dask tables read consecutive committed parts as one partition of about ``metaextract.catalog.partition-rows``
rows (:func:`table_frame`, ``dd.from_map``): a batch's part is often a few rows, so one partition per part
would make ``head()`` warn and every operation pay per-partition overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

__all__ = ["arrow_dtype", "dask_dtype", "to_pandas", "read_parts", "group_parts", "table_frame"]


def arrow_dtype(t: pa.DataType) -> Any:
    """The pandas dtype a catalog column of Arrow type `t` gets in eager frames (None: pyarrow's default)."""
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pd.ArrowDtype(t)
    return None


def dask_dtype(t: pa.DataType) -> Any:
    """The dtype in dask frames: Arrow-backed but for floats and timestamps. Dask would take object columns
    for strings (``dataframe.convert-string``: ``[2, 3]`` becoming the text ``"[2, 3]"``), and its own
    ``string[pyarrow]`` gives masked booleans that do not combine with ``bool[pyarrow]`` masks."""
    if pa.types.is_floating(t) or pa.types.is_timestamp(t):
        return None
    return pd.ArrowDtype(t)


def to_pandas(table: pa.Table, *, lazy: bool = False) -> pd.DataFrame:
    """`table` as pandas with nullable Arrow-backed integers, booleans and strings (see the module docstring);
    `lazy`: the dtypes of a dask partition (:func:`dask_dtype`)."""
    return table.to_pandas(types_mapper=dask_dtype if lazy else arrow_dtype)


def read_parts(parts: Sequence[str], schema: pa.Schema) -> pd.DataFrame:
    """Some Parquet parts of one table, concatenated, as pandas (one dask partition)."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, schema=schema) for p in parts]
    return to_pandas(pa.concat_tables(tables) if tables else schema.empty_table(), lazy=True)


def group_parts(parts: Sequence[tuple[str, int]], target_rows: int) -> list[list[str]]:
    """Consecutive `parts` (``(path, rows)``) grouped into partitions of at least `target_rows` rows where
    there are that many (the last one takes what is left)."""
    groups: list[list[str]] = []
    current: list[str] = []
    rows = 0
    for path, n in parts:
        current.append(path)
        rows += n
        if rows >= target_rows:
            groups.append(current)
            current, rows = [], 0
    if current:
        if groups and rows < target_rows // 2:  # a small tail joins the previous partition
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def table_frame(groups: list[list[str]], schema: pa.Schema) -> Any:
    """A dask DataFrame of one table, one partition per group of parts (nothing is read until computed)."""
    import dask.dataframe as dd

    meta = to_pandas(schema.empty_table(), lazy=True)
    if not groups:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(read_parts, groups, schema=schema, meta=meta, enforce_metadata=False)
