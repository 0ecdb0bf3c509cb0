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

__all__ = ["Catalog", "CatalogError", "SQLCatalog", "ScanSummary", "decode_path", "encode_path", "export",
           "open_array", "open_arrays", "open_catalog", "open_dicom_series", "profile", "scan", "__version__"]


def __getattr__(name: str) -> object:
    # Array and profile APIs load xarray-backed openers only when first used.
    if name in ("open_array", "open_arrays", "open_dicom_series"):
        from metaextract_dask import arrays

        return getattr(arrays, name)
    if name == "export":
        from metaextract_dask.transfer import export

        return export
    if name == "profile":
        from metaextract_dask.profiler import profile

        return profile
    raise AttributeError(f"module 'metaextract_dask' has no attribute {name!r}")

__version__ = "0.1.0"
