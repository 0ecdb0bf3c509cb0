"""metaextract-dask: metadata catalogs of scientific file collections, on Dask.

>>> import metaextract_dask as mx
>>> cat = mx.scan(["data/"], output="catalog/")      # embedded LocalCluster unless a client is given
>>> cat.files.compute()                               # dask DataFrames, Parquet on disk
"""

from __future__ import annotations

from metaextract_dask import config  # noqa: F401  (merges the metaextract.yaml defaults into dask.config)
from metaextract_dask.catalog import Catalog, open_catalog
from metaextract_dask.scan import ScanSummary, scan
from metaextract_dask.sinks import CatalogError

__all__ = ["Catalog", "CatalogError", "ScanSummary", "open_catalog", "scan", "__version__"]

__version__ = "0.1.0"
