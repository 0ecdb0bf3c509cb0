"""metaextract-dask: metadata catalogs of scientific file collections, on Dask.

>>> import metaextract_dask as mx
>>> cat = mx.scan(["data/"], output="catalog/")      # embedded LocalCluster unless a client is given
>>> cat.files.compute()                               # dask DataFrames, Parquet on disk
>>> mx.scan(["data/"], output="sqlite:///catalog.db") # or a database (any SQLAlchemy URL of SQLite/PostgreSQL)
"""

from __future__ import annotations

from metaextract_dask import config  # noqa: F401  (merges the metaextract.yaml defaults into dask.config)
from metaextract_dask.catalog import Catalog, SQLCatalog, open_catalog
from metaextract_dask.discover import decode_path, encode_path
from metaextract_dask.scan import ScanSummary, scan
from metaextract_dask.sinks import CatalogError

# Bound here, after the scan has imported the worker module metaextract_dask.extract (which an import
# binds as this package's attribute `extract`): mx.extract is the lazy API's function.
from metaextract_dask.lazy import Extraction, extract  # noqa: E402

__version__ = "0.1.0"

# Loaded on first use (xarray-backed openers, the profiler, the report's bokeh, distributed): {name: module}.
_LAZY = {
    "open_array": "metaextract_dask.arrays",
    "open_arrays": "metaextract_dask.arrays",
    "open_dicom_series": "metaextract_dask.arrays",
    "open_datatree": "metaextract_dask.arrays",
    "profile": "metaextract_dask.profiler",
    "ProfileResult": "metaextract_dask.profiler",
    "write_report": "metaextract_dask.report",
    "start_client": "metaextract_dask.cluster",
    "export": "metaextract_dask.transfer",
    "SQLCatalog": "metaextract_dask.catalog",
}

__all__ = ["Catalog", "CatalogError", "Extraction", "ScanSummary", "decode_path", "encode_path", "extract",
           "open_catalog", "scan", "__version__", *_LAZY]


def __getattr__(name: str) -> object:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'metaextract_dask' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(target), name)


def __dir__() -> list[str]:
    # tab completion offers the lazily loaded names too (mx.open<TAB>)
    return sorted({*globals(), *_LAZY})
