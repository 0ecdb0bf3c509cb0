"""Turn attribute values from HDF5, netCDF, Zarr, FITS and DICOM into strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["to_jsonable", "dumps"]


def _float(x: float) -> float | str:
    # Strict JSON has no NaN/Infinity; keep them readable (and distinguishable from null) as strings.
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, bytes and nested containers into JSON-compatible Python values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _float(float(value))
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (complex, np.complexfloating)):
        return {"real": _float(float(value.real)), "imag": _float(float(value.imag))}
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    if isinstance(value, np.ndarray):
        if value.dtype.names:  # structured
            return [dict(zip(value.dtype.names, map(to_jsonable, row))) for row in value.reshape(-1)]
        return [to_jsonable(v) for v in value.tolist()] if value.ndim else to_jsonable(value.item())
    if isinstance(value, np.void) and value.dtype.names:
        return {n: to_jsonable(value[n]) for n in value.dtype.names}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    return str(value)


def dumps(value: Any) -> str:
    """Serialise to compact strict JSON (NaN/Infinity as strings)."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
