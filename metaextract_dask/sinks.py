"""Catalog sink: Parquet parts written batch by batch, each committed atomically, plus a manifest."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metaextract_dask import config
from metaextract_dask.schema import SCHEMA_VERSION, SCHEMAS

__all__ = ["ParquetSink", "MANIFEST", "CatalogError"]

MANIFEST = "_manifest.json"


class CatalogError(Exception):
    """The output location cannot hold a catalog (not writable, or not a catalog and not empty)."""


def _atomic_write_json(path: str, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ParquetSink:
    """Writes a catalog directory: ``<table>/part-<batch>.parquet`` for each table, and ``_manifest.json``.

    Each part is written under a temporary name and renamed into place, then the manifest is rewritten
    atomically: a reader sees a batch entirely or not at all.

    Parameters
    ----------
    output : str
        Catalog directory; created if missing. An existing catalog is replaced; a non-empty directory that
        is not a catalog is refused rather than overwritten.
    """

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = os.path.abspath(os.fspath(output))
        self.compression = config.get("catalog.compression", "zstd")
        self.batches: list[dict[str, Any]] = []
        self._prepare()

    def _prepare(self) -> None:
        out = self.output
        if os.path.exists(out) and not os.path.isdir(out):
            raise CatalogError(f"output exists and is not a directory: {out}")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
        if not os.access(out, os.W_OK | os.X_OK):
            raise CatalogError(f"output directory is not writable: {out}")
        existing = set(os.listdir(out))
        if existing and MANIFEST not in existing:
            raise CatalogError(f"output directory is not empty and holds no catalog: {out}")
        for name in SCHEMAS:  # replace a previous catalog's tables
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            os.makedirs(os.path.join(out, name))
        self._manifest: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "created": time.time(),
                                          "complete": False, "batches": self.batches}
        _atomic_write_json(os.path.join(out, MANIFEST), self._manifest)

    def write_batch(self, batch_id: int, tables: dict[str, pa.Table]) -> None:
        """Commit one batch's tables (empty tables are skipped) and record the batch in the manifest."""
        parts = {}
        for name, table in tables.items():
            if table.num_rows == 0:
                continue
            final = os.path.join(self.output, name, f"part-{batch_id:06d}.parquet")
            tmp = os.path.join(self.output, name, f".tmp-part-{batch_id:06d}.parquet")
            pq.write_table(table, tmp, compression=self.compression)
            os.replace(tmp, final)
            parts[name] = table.num_rows
        self.batches.append({"id": batch_id, "rows": parts})
        _atomic_write_json(os.path.join(self.output, MANIFEST), self._manifest)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Give every table at least an empty part (so readers get the schema) and mark the catalog complete."""
        for name, schema in SCHEMAS.items():
            folder = os.path.join(self.output, name)
            if not any(f.endswith(".parquet") for f in os.listdir(folder)):
                pq.write_table(schema.empty_table(), os.path.join(folder, "part-empty.parquet"))
        self._manifest["complete"] = True
        if summary is not None:
            self._manifest["summary"] = summary
        _atomic_write_json(os.path.join(self.output, MANIFEST), self._manifest)
