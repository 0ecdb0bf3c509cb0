"""Catalog a tree and aggregate it: scan, then dask-dataframe summaries per format and per directory.

    python pipelines/catalog_tree.py conf/catalog_tree.yaml [--set pipeline.output=other-dir]

Writes the catalog (``pipeline.output``) and a report directory (``pipeline.report``) with Parquet tables
``by_format`` (files, bytes, errors, arrays per format) and ``by_directory`` (files, bytes, errors per parent
directory), both computed as one dask graph on the same cluster as the scan. With ``pipeline.profile``
(``strategy``, ``sample_fraction``, ``device``), the arrays are profiled on that cluster too (the catalog's
``stats`` table) and the report gets ``profile_by_format`` (arrays profiled, errors, elements, NaN and fill
counts per format).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml

__all__ = ["run", "load_job"]


def load_job(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read the job YAML, apply ``section.key=value`` overrides, merge its ``metaextract`` part into dask.config."""
    from metaextract_dask import config

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    for item in overrides or []:
        dotted, _, raw = item.partition("=")
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(raw)
    if data.get("metaextract"):
        config.load_yaml_dict(data["metaextract"])
    return data.get("pipeline", {})


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job; return the scan summary and the report tables as pandas DataFrames."""
    import dask

    import metaextract_dask as mx
    from metaextract_dask.cluster import connect

    with connect(job.get("scheduler"), n_workers=job.get("workers")) as client:
        catalog = mx.scan(job["inputs"], job["output"], client=client)
        files = catalog.files
        files = files.assign(
            error=(files.status == "error").astype("int64"),
            directory=files.path.map(os.path.dirname, meta=("path", "string")),
        )
        arrays_per_format = catalog.arrays.merge(files[["path", "format"]], on="path").groupby("format").size()
        by_format = files.groupby("format").agg({"path": "count", "size_bytes": "sum", "error": "sum"})
        by_directory = files.groupby("directory").agg({"path": "count", "size_bytes": "sum", "error": "sum"})
        # One graph: both aggregations share the read of the files table.
        by_format, by_directory, arrays_per_format = dask.compute(by_format, by_directory, arrays_per_format,
                                                                   scheduler=client.get)
        profile_by_format = None
        settings = job.get("profile")
        if settings:
            settings = {} if settings is True else dict(settings)
            stats = mx.profile(catalog, client=client, strategy=settings.get("strategy", "full"),
                               sample_fraction=float(settings.get("sample_fraction", 0.1)),
                               device=settings.get("device", "auto"))
            # the profile's rows carry their file's format
            stats = stats.assign(error=lambda t: (t.status == "error").astype("int64"),
                                 ok=lambda t: (t.status == "ok").astype("int64"))
            profile_by_format = stats.groupby("format").agg(
                arrays=("ok", "sum"), errors=("error", "sum"), elements=("count", "sum"),
                nan=("nan_count", "sum"), fill=("fill_count", "sum"))
    rename = {"path": "files", "size_bytes": "bytes", "error": "errors"}
    by_format = by_format.rename(columns=rename)
    by_format["arrays"] = arrays_per_format.reindex(by_format.index, fill_value=0)
    by_directory = by_directory.rename(columns=rename).sort_index()
    report = job.get("report")
    if report:
        os.makedirs(report, exist_ok=True)
        by_format.to_parquet(os.path.join(report, "by_format.parquet"))
        by_directory.to_parquet(os.path.join(report, "by_directory.parquet"))
        if profile_by_format is not None:
            profile_by_format.to_parquet(os.path.join(report, "profile_by_format.parquet"))
    return {"summary": catalog.scan_summary, "by_format": by_format, "by_directory": by_directory,
            "profile_by_format": profile_by_format}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="job YAML (see conf/catalog_tree.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job setting")
    args = ap.parse_args(argv)
    result = run(load_job(args.config, args.set))
    print(result["by_format"].to_string())
    if result["profile_by_format"] is not None:
        print(result["profile_by_format"].to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
