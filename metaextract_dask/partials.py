"""Mergeable partial statistics: the data every summary path (numpy kernels, CUDA kernels, array functions)
produces and merges. Shared by :mod:`metaextract_dask.stats` and :mod:`metaextract_dask._cuda`, which import
this module and never each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metaextract_dask.sketch import Sketch, from_values, merge_sketches

__all__ = ["Partial", "merge", "merge_all", "native_fill", "f32_range", "slice_partial"]


@dataclass
class Partial:
    """Statistics of a part of an array (see module docstring)."""

    count: int = 0  # elements seen (valid + NaN + inf + fill)
    n: int = 0  # valid elements (finite, not fill)
    nan: int = 0
    inf: int = 0
    fill: int = 0
    min: float = math.inf
    max: float = -math.inf
    mean: float = 0.0
    m2: float = 0.0
    hist: np.ndarray | None = None  # counts per bin
    under: int = 0  # valid values below the histogram range
    over: int = 0  # valid values above it
    sketch: Sketch | None = None  # distribution sketch of the valid values (metaextract_dask.sketch)
    extra: dict[str, Any] = field(default_factory=dict)


def _to_host(v: Any) -> Any:
    return v.get() if hasattr(v, "get") else v


def native_fill(dt: np.dtype, fill: Any) -> Any:
    """The fill value as a scalar of `dt`, or None when no element of `dt` can equal it (or it is NaN/inf)."""
    if fill is None:
        return None
    f = float(fill)
    if not math.isfinite(f):
        return None  # a NaN fill value: those elements are counted as NaN
    if dt.kind == "f":
        return dt.type(f) if float(dt.type(f)) == f else None
    info = np.iinfo(dt)
    return dt.type(int(f)) if f.is_integer() and info.min <= f <= info.max else None


def f32_range(lo: float, hi: float, bins: int) -> tuple[np.float32, np.float32, np.float32]:
    """Histogram bounds for float32 arithmetic, rounded inwards so ``x < lo32`` iff ``x < lo`` for every
    float32 x (same for hi), and the bin scale in float32."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if float(lo32) < lo:
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    if float(hi32) > hi:
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return lo32, hi32, np.float32(bins / (hi - lo) if hi > lo else 0.0)


def slice_partial(x: Any, xp: Any, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    """Partial of a 1-D block with array-module functions (numpy or cupy `xp`): the reference path, and the
    fallback where no compiled kernel applies."""
    p = Partial(count=int(x.size))
    if fill is not None:
        is_fill = x == fill
        p.fill = int(is_fill.sum())
        if p.fill:
            x = x[~is_fill]
    if x.dtype.kind in "fc":
        finite = xp.isfinite(x)
        n_finite = int(finite.sum())
        if n_finite != x.size:
            p.nan = int(xp.isnan(x).sum())
            p.inf = int(x.size - n_finite - p.nan)
            x = x[finite]
    p.n = int(x.size)
    if not p.n:
        return p
    if x.dtype.kind == "b":
        x = x.astype(np.uint8)
    xf = x.astype(np.float64, copy=False)
    p.sketch = from_values(xf, xp)
    p.min = float(_to_host(xf.min()))
    p.max = float(_to_host(xf.max()))
    p.mean = float(_to_host(xf.sum())) / p.n
    d = xf - p.mean
    p.m2 = float(_to_host(xp.dot(d, d)))
    if rng is not None:
        lo, hi = rng
        if p.min >= lo and p.max <= hi:  # the usual case: no masking needed
            vals = xf
        else:
            p.under = int(_to_host((xf < lo).sum()))
            p.over = int(_to_host((xf > hi).sum()))
            vals = xf[(xf >= lo) & (xf <= hi)]
        # Fixed-width bins over a known range: an index computation and a bincount, no sort; float32 data
        # in float32 arithmetic, as the numba kernel does.
        if x.dtype == np.float32:
            lo32, _, scale32 = f32_range(lo, hi, bins)
            t = x[(xf >= lo) & (xf <= hi)] if vals is not xf else x
            t = (t - lo32) * scale32
            xp.minimum(xp.maximum(t, np.float32(0)), np.float32(bins - 1), out=t)
        else:
            t = vals - lo
            t *= bins / (hi - lo) if hi > lo else 0.0
        idx = t.astype(np.intp)
        xp.minimum(idx, bins - 1, out=idx)  # the top edge belongs to the last bin
        p.hist = np.asarray(_to_host(xp.bincount(idx, minlength=bins)), dtype=np.int64)
    return p


def merge(a: Partial, b: Partial) -> Partial:
    """Combine two partials (Chan, Golub & LeVeque's pairwise update for mean and M2)."""
    out = Partial(count=a.count + b.count, n=a.n + b.n, nan=a.nan + b.nan, inf=a.inf + b.inf, fill=a.fill + b.fill,
                  min=min(a.min, b.min), max=max(a.max, b.max), under=a.under + b.under, over=a.over + b.over)
    if not a.n or not b.n:
        src = a if a.n else b
        out.mean, out.m2 = src.mean, src.m2
    else:
        delta = b.mean - a.mean
        out.mean = a.mean + delta * b.n / out.n
        out.m2 = a.m2 + b.m2 + delta * delta * a.n * b.n / out.n
    out.sketch = merge_sketches(a.sketch, b.sketch)
    if a.hist is not None and b.hist is not None:
        out.hist = a.hist + b.hist
    else:
        out.hist = a.hist if a.hist is not None else b.hist
    return out


def merge_all(parts: list[Partial]) -> Partial:
    """Merge a list of partials pairwise (a balanced tree keeps rounding errors small)."""
    if not parts:
        return Partial()
    while len(parts) > 1:
        parts = [merge(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]
