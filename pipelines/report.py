"""Report pipeline: catalog -> one self-contained HTML report (bokeh, viewable offline).

    python -m pipelines.report --config conf/report.yaml

Writes ``output`` from the catalog's tables (read directly from Parquet: no cluster is started, so there is
no dashboard to link) and prints the catalog summary and the report's path.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pipelines._job import Key, main_for

__all__ = ["KEYS", "run", "main"]

KEYS: dict[str, Key] = {
    "catalog": Key(str, required=True, path="in", help="the catalog directory"),
    "output": Key(str, required=True, path="out", help="the HTML file to write"),
    "title": Key((str, type(None)), help="page title (default: the catalog's path)"),
}


def run(job: dict[str, Any]) -> str:
    """Write the report; returns its path."""
    import metaextract_dask as mx

    catalog = mx.open_catalog(job["catalog"])
    s = catalog.summary()
    print(f"catalog {catalog.path}: {s['files']} files, {s['bytes'] / 1e6:,.1f} MB, {s['arrays']} arrays, "
          f"{s['errors']} errors, {s['rows']['stats']} arrays profiled")
    os.makedirs(os.path.dirname(job["output"]) or ".", exist_ok=True)
    out = catalog.report(job["output"], title=job["title"])
    print(f"report: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return main_for("report", __doc__ or "", KEYS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
