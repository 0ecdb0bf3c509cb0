"""Configuration in the ``metaextract`` dask.config namespace.

Defaults ship as ``metaextract.yaml`` and are merged with :func:`dask.config.update_defaults`, so
``DASK_METAEXTRACT__SCAN__BATCH_MAX_FILES=100`` and ``dask.config.set({"metaextract.scan.batch-max-files": 100})``
work as for any dask setting. Read values at call time with :func:`get`, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["get", "load_yaml", "load_yaml_dict", "parse_bytes"]

_DEFAULTS_FILE = Path(__file__).with_name("metaextract.yaml")


def _load_defaults() -> None:
    with open(_DEFAULTS_FILE) as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)
    # dask collected DASK_* variables at its own import, before our defaults existed; update_defaults keeps
    # them, but re-apply ours so an environment override always wins over a default merged afterwards.
    env = dask.config.collect_env().get("metaextract")
    if env:
        dask.config.update(dask.config.config, {"metaextract": env}, priority="new")


_load_defaults()


def get(key: str, default: Any = None) -> Any:
    """Return ``metaextract.<key>`` from dask.config."""
    return dask.config.get(f"metaextract.{key}", default=default)


def parse_bytes(value: int | str) -> int:
    """Parse ``"256MiB"``-style sizes (as dask does) into an int number of bytes."""
    from dask.utils import parse_bytes as _parse

    return int(_parse(value)) if isinstance(value, str) else int(value)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Merge a YAML file (e.g. ``conf/scan.yaml``) into dask.config and return what it held.

    The file may hold the ``metaextract`` namespace at its top level or be a full dask config.
    """
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return load_yaml_dict(data)


def load_yaml_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Merge already-parsed settings (``metaextract`` namespace at top level, or inside it)."""
    if "metaextract" not in data:
        data = {"metaextract": data}
    dask.config.update(dask.config.config, data, priority="new")
    return data
