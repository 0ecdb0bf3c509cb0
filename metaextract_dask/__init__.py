"""metaextract-dask: metadata catalogs of scientific file collections, on Dask.

>>> import metaextract_dask as mx
>>> cat = mx.scan(["data/"], output="catalog/")      # embedded LocalCluster unless a client is given
>>> cat.files.compute()                               # dask DataFrames, Parquet on disk
>>> mx.scan(["data/"], output="sqlite:///catalog.db") # or a database (any SQLAlchemy URL of SQLite/PostgreSQL)
"""

from __future__ import annotations

import sys
import types

# Nothing heavy is imported here: `metaextract-dask --help` pays for argparse only (dask alone takes ~0.3 s to
# import, pandas and pyarrow most of a second). The metaextract.yaml defaults join dask.config when
# metaextract_dask.config is first imported: by any function of the API (mx.scan, ...), by any worker task,
# or right here when dask is imported already (so `dask.config.get("metaextract....")` answers).
if "dask.config" in sys.modules:
    from metaextract_dask import config  # noqa: F401

__version__ = "0.1.0"

# {name: module that defines it}, loaded on first attribute access.
_LAZY = {
    "config": "metaextract_dask",  # the submodule itself
    "Catalog": "metaextract_dask.catalog",
    "SQLCatalog": "metaextract_dask.catalog",
    "open_catalog": "metaextract_dask.catalog",
    "CatalogError": "metaextract_dask.sinks",
    "Extraction": "metaextract_dask.lazy",
    "extract": "metaextract_dask.lazy",
    "ScanSummary": "metaextract_dask.scan",
    "scan": "metaextract_dask.scan",
    "decode_path": "metaextract_dask.discover",
    "encode_path": "metaextract_dask.discover",
    "open_array": "metaextract_dask.arrays",
    "open_arrays": "metaextract_dask.arrays",
    "open_dicom_series": "metaextract_dask.arrays",
    "open_datatree": "metaextract_dask.arrays",
    "profile": "metaextract_dask.profiler",
    "ProfileResult": "metaextract_dask.profiler",
    "write_report": "metaextract_dask.report",
    "start_client": "metaextract_dask.cluster",
    "export": "metaextract_dask.transfer",
}

__all__ = ["__version__", *(name for name in _LAZY if name != "config")]


class _Package(types.ModuleType):
    """The package module: importing the submodules ``metaextract_dask.scan`` / ``.extract`` binds them as
    package attributes, which would hide the functions ``mx.scan`` / ``mx.extract`` of the same names."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and name != "config" and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule: the name stays the function's
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> object:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'metaextract_dask' has no attribute {name!r}")
    import importlib

    if name == "config":
        return importlib.import_module("metaextract_dask.config")  # binds itself as the attribute
    value = getattr(importlib.import_module(target), name)
    globals()[name] = value  # later accesses are plain attribute lookups
    return value


def __dir__() -> list[str]:
    # tab completion offers the lazily loaded names too (mx.open<TAB>)
    return sorted({*globals(), *_LAZY})
