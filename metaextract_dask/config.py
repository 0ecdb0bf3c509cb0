"""Configuration in the ``metaextract`` dask.config namespace.

Defaults ship as ``metaextract.yaml`` and are merged with :func:`dask.config.update_defaults`, so
``DASK_METAEXTRACT__SCAN__BATCH_MAX_FILES=100`` and ``dask.config.set({"metaextract.scan.batch-max-files": 100})``
work as for any dask setting. Read values at call time with :func:`get`, never at import time.

Every key under ``metaextract.`` must be one of the shipped defaults: :func:`validate` rejects unknown keys
(naming the closest valid one: a misspelt key would otherwise be ignored without a word) and values out of
range (``file-timeout: -5``). :func:`scan <metaextract_dask.scan>`, the cluster and the command line call it.
"""

from __future__ import annotations

import contextvars
import copy
import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["get", "pinned", "memo", "load_yaml", "load_yaml_dict", "parse_bytes", "parse_mode", "parse_seconds",
           "validate", "valid_keys"]

_DEFAULTS_FILE = Path(__file__).with_name("metaextract.yaml")
_DEFAULTS: dict[str, Any] = {}


def _load_defaults() -> None:
    with open(_DEFAULTS_FILE) as f:
        defaults = yaml.safe_load(f)
    _DEFAULTS.update(copy.deepcopy(defaults["metaextract"]))
    dask.config.update_defaults(defaults)
    # dask collected DASK_* variables at its own import, before our defaults existed; update_defaults keeps
    # them, but re-apply ours so an environment override always wins over a default merged afterwards.
    env = dask.config.collect_env().get("metaextract")
    if env:
        dask.config.update(dask.config.config, {"metaextract": env}, priority="new")


_load_defaults()


_MISSING = object()
_PINNED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("metaextract_config_pinned",
                                                                               default=None)


def get(key: str, default: Any = None) -> Any:
    """Return ``metaextract.<key>`` from dask.config (inside :func:`pinned`, the value first read there)."""
    memo_ = _PINNED.get()
    if memo_ is None:
        return dask.config.get(f"metaextract.{key}", default=default)
    value = memo_.get(key, _MISSING)
    if value is _MISSING:
        value = memo_[key] = dask.config.get(f"metaextract.{key}", default=_MISSING)
    return default if value is _MISSING else value


@contextmanager
def pinned() -> Iterator[None]:
    """Within the block, each key is looked up in dask.config once and then remembered: a scan task reads
    the same settings for every file of its batch (dask.config.get costs ~10 us a key, paid per file)."""
    token = _PINNED.set({})
    try:
        yield
    finally:
        _PINNED.reset(token)


def memo(name: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered under `name` for the rest of the :func:`pinned` block (a value parsed from
    settings, such as a byte size); computed every time outside one."""
    memo_ = _PINNED.get()
    if memo_ is None:
        return compute()
    key = f"#{name}"
    if key not in memo_:
        memo_[key] = compute()
    return memo_[key]


def parse_bytes(value: int | str) -> int:
    """Parse ``"256MiB"``-style sizes (as dask does) into an int number of bytes."""
    from dask.utils import parse_bytes as _parse

    return int(_parse(value)) if isinstance(value, str) else int(value)


def parse_seconds(value: float | str) -> float:
    """Parse ``10``, ``"10s"``, ``"2 minutes"`` (as dask does) into seconds."""
    from dask.utils import parse_timedelta

    return float(parse_timedelta(value, default="seconds"))


def parse_mode(value: int | str) -> int:
    """A permission mode: an int (YAML reads ``0600`` as the octal number), or a string of octal digits.

    Environment variables arrive as strings (``DASK_METAEXTRACT__CATALOG__FILE_MODE=0640``), hence the string
    form, always octal.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a permission mode: {value!r}")
    mode = int(value, 8) if isinstance(value, str) else int(value)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"not a permission mode: {value!r}")
    return mode


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Merge a YAML file (e.g. ``conf/scan.yaml``) into dask.config and return what it held.

    The file may hold the ``metaextract`` namespace at its top level or be a full dask config.

    Raises
    ------
    ValueError
        The file holds a key that is not a ``metaextract`` setting, or an invalid value (nothing is merged).
    """
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    try:
        return load_yaml_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_yaml_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Merge already-parsed settings (``metaextract`` namespace at top level, or inside it).

    Raises
    ------
    ValueError
        Unknown keys or invalid values under ``metaextract`` (nothing is merged then).
    """
    if "metaextract" not in data:
        data = {"metaextract": data}
    validate(data["metaextract"] or {}, merged=False)
    dask.config.update(dask.config.config, data, priority="new")
    return data


# -- validation --------------------------------------------------------------------------------------------------

def _norm(key: str) -> str:
    # dask treats - and _ alike (environment variables bring underscores)
    return key.replace("_", "-")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{_norm(str(key))}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def valid_keys() -> list[str]:
    """Every setting of the namespace, dotted, without the ``metaextract.`` prefix."""
    return sorted(_flatten(_DEFAULTS))


def _sections() -> set[str]:
    keys = valid_keys()
    return {k.rsplit(".", 1)[0] for k in keys if "." in k} | {
        ".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 1)}


def _int(lo: int, *, none: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            return f"an integer >= {lo}" + (" or null" if none else "")
        return None
    return check


def _number(lo: float, *, strict: bool, hi: float | None = None, none: bool = False, seconds: bool = False
            ) -> Callable[[Any], str | None]:
    want = (f"a number {'>' if strict else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            + (" (seconds)" if seconds else "") + (" or null" if none else ""))

    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        try:
            if isinstance(v, bool):
                raise ValueError
            x = parse_seconds(v) if seconds else float(v)
        except (TypeError, ValueError, KeyError):
            return want
        if x != x or x < lo or (strict and x == lo) or (hi is not None and x > hi):
            return want
        return None
    return check


def _bytes(lo: int, *, none: bool = False) -> Callable[[Any], str | None]:
    want = f"a size >= {lo} (bytes, or a string such as '64MiB')" + (" or null" if none else "")

    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        try:
            if isinstance(v, bool):
                raise ValueError
            n = parse_bytes(v)
        except (TypeError, ValueError, KeyError):
            return want
        return want if n < lo else None
    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _bool_or_none(v: Any) -> str | None:
    return None if v is None or isinstance(v, bool) else "true, false or null"


def _choice(*options: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else "one of " + ", ".join(options)
    return check


def _text(*, none: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        return None if isinstance(v, str) and v else "a non-empty string" + (" or null" if none else "")
    return check


def _globs(v: Any) -> str | None:
    if isinstance(v, str):  # a single pattern (e.g. from DASK_METAEXTRACT__SCAN__EXCLUDE) is a list of one
        v = [v]
    if v is None or (isinstance(v, (list, tuple)) and all(isinstance(p, str) and p for p in v)):
        return None
    return "a list of glob patterns (non-empty strings)"


def _mode(v: Any) -> str | None:
    try:
        parse_mode(v)
    except (TypeError, ValueError):
        return "a permission mode such as '0600' (octal)"
    return None


def _memory_limit(v: Any) -> str | None:
    if v is None or v == "auto":
        return None
    if isinstance(v, float) and 0 < v <= 1:
        return None  # a fraction of the machine, as distributed reads it
    return _bytes(0)(v) and "'auto', a size such as '4GiB', a fraction of the memory, or null"


#: Checks of the values a setting may take (keys of the shipped defaults without a check take anything).
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "cluster.n-workers": _int(1, none=True),
    "cluster.threads-per-worker": _int(1),
    "cluster.memory-limit": _memory_limit,
    "cluster.host": _text(),
    "cluster.dashboard-address": _text(),
    "cluster.malloc-trim-threshold": _int(0, none=True),
    "cluster.allowed-failures": _int(0),
    "cluster.worker-profile": _bool_or_none,
    "cluster.tick-interval": _number(0, strict=True, seconds=True, none=True),
    "cluster.system-monitor-interval": _number(0, strict=True, seconds=True, none=True),
    "cluster.memory-monitor-interval": _number(0, strict=True, seconds=True, none=True),
    "cluster.security": _bool,
    "cluster.connect-timeout": _number(0, strict=True, seconds=True),
    "cluster.tls.ca-file": _text(none=True),
    "cluster.tls.cert": _text(none=True),
    "cluster.tls.key": _text(none=True),
    "scan.sniff-bytes": _int(1),
    "scan.batch-max-files": _int(1),
    "scan.batch-min-files": _int(1),
    "scan.batch-target-bytes": _bytes(1),
    "scan.big-file-bytes": _bytes(1),
    "scan.tasks-per-thread": _int(1),
    "scan.follow-symlinks": _bool,
    "scan.fast-readers": _bool,
    "scan.commit-interval": _number(0, strict=False, seconds=True),
    "scan.dicom-json-bulk-threshold": _int(0),
    "scan.retries": _int(0),
    "scan.retry-backoff": _number(0, strict=False),
    "scan.file-timeout": _number(0, strict=True, none=True),
    "scan.file-memory-limit": _bytes(1, none=True),
    "scan.hash": _bool,
    "scan.include": _globs,
    "scan.exclude": _globs,
    "scan.max-decompressed-bytes": _bytes(1, none=True),
    "remote.block-size": _bytes(4096),
    "remote.whole-file-bytes": _bytes(0),
    "remote.whole-file-fallback-bytes": _bytes(0),
    "remote.concurrency": _int(1),
    "remote.cache": _bool,
    "remote.cache-dir": _text(none=True),
    "remote.retries": _int(0),
    "remote.retry-backoff": _number(0, strict=False),
    "remote.request-timeout": _number(0, strict=True, seconds=True),
    "catalog.partition-rows": _int(1),
    "progress.log-interval": _number(0, strict=False, seconds=True),
    "progress.worker-interval": _number(0, strict=True, seconds=True),
    "catalog.compression": _choice("zstd", "snappy", "gzip", "brotli", "lz4", "none"),
    "catalog.file-mode": _mode,
    "catalog.dir-mode": _mode,
    "combine.cache-coords": _bool,
    "sql.retries": _int(0),
    "sql.retry-backoff": _number(0, strict=False),
    "sql.busy-timeout": _number(0, strict=True),
    "sql.partition-rows": _int(1),
    "sql.chunk-rows": _int(1),
    "chunk-target": _bytes(1),
    "chunk-memory-fraction": _number(0, strict=True, hi=1),
    "profile-batch": _bytes(0),
    "gpu-min-bytes": _bytes(0),
    "kernel": _choice("auto", "numba"),
    "profile.histogram": _choice("sketch", "exact"),
}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _hint(key: str, known: set[str], sections: set[str]) -> str:
    # The deepest known section the key lies in, and the names valid right under it.
    parts = key.split(".")
    where = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in sections), "")
    prefix = where + "." if where else ""
    names = sorted({k[len(prefix):].split(".")[0] for k in known | sections if k.startswith(prefix)})
    leaf = key[len(prefix):].split(".")[0]
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean metaextract.{prefix}{close[0]}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)  # a key in the wrong section
    if close:
        return f"did you mean metaextract.{close[0]}?"
    return f"valid under metaextract{'.' + where if where else ''}: " + ", ".join(names)


def validate(overrides: Mapping[str, Any] | None = None, *, merged: bool = True) -> None:
    """Check the ``metaextract`` settings: every key known, every value in range.

    Parameters
    ----------
    overrides : mapping, optional
        Settings (``metaextract`` namespace, nested: ``{"scan": {"file-timeout": 5}}``) about to be used on
        top of the current configuration, e.g. a scan's arguments.
    merged : bool
        Check `overrides` on top of the current ``dask.config`` (default), or on its own.

    Raises
    ------
    ValueError
        One message naming every unknown key (with the closest valid one) and every invalid value.
    """
    tree = dict(dask.config.get("metaextract", default={}) or {}) if merged else {}
    if overrides:
        tree = _merge(tree, overrides)
    known = set(valid_keys())
    sections = _sections()
    problems: list[str] = []
    for key, value in sorted(_flatten(tree).items()):
        if key in known:
            check = _CHECKS.get(key)
            want = check(value) if check is not None else None
            if want:
                problems.append(f"metaextract.{key} must be {want}, not {value!r}")
        elif key in sections:
            if not isinstance(value, Mapping):  # a section replaced by a plain value
                problems.append(f"metaextract.{key} is a section of settings, not a value ({value!r})")
        else:
            problems.append(f"unknown setting metaextract.{key} ({_hint(key, known, sections)})")
    if problems:
        raise ValueError("; ".join(problems))
