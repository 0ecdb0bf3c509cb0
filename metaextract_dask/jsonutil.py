"""Turn attribute values from HDF5, netCDF, Zarr, FITS and DICOM into strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

try:  # ~8x faster than json.dumps on the values to_jsonable leaves (strict JSON either way: no NaN reaches it)
    import orjson
except ImportError:  # pragma: no cover - a declared dependency; json below does the same, slower
    orjson = None

__all__ = ["to_jsonable", "dumps", "capped", "capped_attrs", "DEFAULT_ATTR_JSON_MAX"]

#: Default of ``metaextract.scan.attr-json-max-bytes``.
DEFAULT_ATTR_JSON_MAX = 65536


def _float(x: float) -> float | str:
    # Strict JSON has no NaN/Infinity; keep them readable (and distinguishable from null) as strings.
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, bytes and nested containers into JSON-compatible Python values."""
    # Exact built-in types first, by identity: most values are plain str/int/float in dicts and lists (a DICOM
    # header is hundreds of them), and an isinstance chain per value cost more than encoding the JSON.
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else _float(value)
    if t is dict:
        return {k if type(k) is str else str(k): to_jsonable(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [to_jsonable(v) for v in value]
    return _convert(value)


def _convert(value: Any) -> Any:
    """:func:`to_jsonable` of everything but the exact built-in types (subclasses, numpy, bytes, ...)."""
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
    plain = to_jsonable(value)
    if orjson is not None:
        try:
            return orjson.dumps(plain).decode()  # type: ignore[no-any-return]
        except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits, surrogate-escaped names: json does
            pass
    return json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _json_lower_bound(value: Any) -> int:
    """Bytes the value's JSON takes at least (a number is a digit and a comma; a string its characters)."""
    if isinstance(value, np.ndarray):
        return 2 * value.size if value.dtype.kind != "U" else value.size * value.dtype.itemsize // 4
    if isinstance(value, (str, bytes, np.bytes_)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return 2 * len(value)
    return 0


def _json_upper_bound(value: Any) -> int | None:
    """Bytes the value's JSON takes at most, where cheap to say; None for containers of unknown content."""
    if isinstance(value, np.ndarray):
        return None if value.dtype.kind in "OSUV" else 32 * value.size + 2
    if isinstance(value, (str, bytes, np.bytes_)):
        return 6 * len(value) + 2  # every character \u-escaped, at worst
    if isinstance(value, (int, float, bool, complex, np.generic)) or value is None:
        return 64
    return None


def capped(value: Any, limit: int | None) -> Any:
    """`value` as JSON-ready data (:func:`to_jsonable`), or, when its JSON would exceed `limit` bytes, the
    marker string ``"<omitted: N bytes of JSON>"`` (``"<omitted: more than N bytes of JSON>"`` when the value
    was too big to be converted at all). Large arrays are never converted just to be measured."""
    if limit is None:
        return to_jsonable(value)
    floor = _json_lower_bound(value)
    if floor > limit:
        return f"<omitted: more than {floor} bytes of JSON>"
    converted = to_jsonable(value)
    ceiling = _json_upper_bound(value)
    if ceiling is not None and ceiling <= limit:
        return converted
    size = len(dumps(converted).encode())
    return converted if size <= limit else f"<omitted: {size} bytes of JSON>"


def capped_attrs(items: Any, limit: int | None) -> dict[str, Any]:
    """``{key: capped(value)}`` of an attribute mapping's items; a value that cannot be read or converted
    becomes ``"<unreadable: Type: message>"`` (one odd attribute must not cost its object)."""
    out: dict[str, Any] = {}
    for key, value in items:
        try:
            if isinstance(value, Exception):
                raise value
            out[str(key)] = capped(value, limit)
        except Exception as exc:
            out[str(key)] = f"<unreadable: {type(exc).__name__}: {exc}>"
    return out
