"""Single-pass content statistics: per-block partials merged with numerically stable formulas.

A partial summarises one block: element count, NaN / inf / fill counts, min, max, mean and M2 (sum of squared
deviations from the mean) of the valid values, and a fixed-bin histogram. Partials merge pairwise with Chan et
al.'s parallel update (mean and M2; no naive sum of squares), so every block of an array is read exactly once
and the reduction is a tree of tiny merges.

The histogram's range must be known before the pass: it comes from metadata (``valid_range`` /
``valid_min`` + ``valid_max``), else, for integer data, from the dtype's limits. Floating-point data without a
valid range is the documented exception: its histogram takes a second pass over the data, with the range set
by the first pass's min and max.

Blocks may be numpy or cupy arrays: the module works with whichever array module the block belongs to and
returns host (numpy / Python) values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Partial", "block_partial", "merge", "merge_all", "histogram_range", "finalize", "HAVE_NUMBA"]

# Elements per slice inside a block: the passes of one slice stay in the CPU cache.
_SLICE = 1 << 20


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
    extra: dict[str, Any] = field(default_factory=dict)


def _xp(x: Any) -> Any:
    try:
        import cupy

        return cupy.get_array_module(x)
    except ImportError:
        return np


def _to_host(v: Any) -> Any:
    return v.get() if hasattr(v, "get") else v


def _slice_partial(x: Any, xp: Any, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
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
        # Fixed-width bins over a known range: an index computation and a bincount, no sort.
        t = vals - lo
        t *= bins / (hi - lo) if hi > lo else 0.0
        idx = t.astype(np.intp)
        xp.minimum(idx, bins - 1, out=idx)  # the top edge belongs to the last bin
        p.hist = np.asarray(_to_host(xp.bincount(idx, minlength=bins)), dtype=np.int64)
    return p


try:  # a fused one-pass kernel for numpy blocks; without numba the numpy path below does the same work
    import numba

    @numba.njit(nogil=True, cache=True, fastmath={"nnan", "ninf", "nsz"})
    def _scan_slice(x, start, stop, fill, has_fill):  # type: ignore[no-untyped-def]
        # Pass A, branch-free so it vectorises: sum, min, max and how many elements equal the fill value.
        # (fastmath assumes no NaN/inf; the caller checks the sum and redoes the slice carefully if not.)
        s = 0.0
        mn = np.float64(x[start])
        mx = mn
        nfill = 0
        for i in range(start, stop):
            v = np.float64(x[i])
            s += v
            mn = min(mn, v)
            mx = max(mx, v)
            if has_fill:
                nfill += v == fill
        return s, mn, mx, nfill

    @numba.njit(nogil=True, cache=True, inline="always")
    def _excluded(v, fill, has_fill):  # type: ignore[no-untyped-def]
        # Not a valid value: the fill value, NaN (the one value unequal to itself) or +-inf.
        return (has_fill and v == fill) or v != v or v == np.inf or v == -np.inf

    @numba.njit(nogil=True, cache=True, inline="always")
    def _bin_checked(v, lo, hi, scale, hist):  # type: ignore[no-untyped-def]
        # Count v in its bin; -1 / +1 when it falls below / above the histogram range instead.
        if v < lo:
            return -1
        if v > hi:
            return 1
        hist[min(int((v - lo) * scale), hist.size - 1)] += 1
        return 0

    @numba.njit(nogil=True, cache=True)
    def _fused(x, fill, has_fill, lo, hi, has_hist, hist):  # type: ignore[no-untyped-def]
        # Per slice of 64K elements (in cache): pass A (above) finds sum/min/max; when the slice is all
        # finite and fill-free (the usual case), pass B bins it and sums squared deviations from its mean
        # with no per-element tests. Other slices take the careful path, which tests every element.
        # Slices merge with Chan's update. NaN is the one value unequal to itself.
        bins = hist.size
        scale = bins / (hi - lo) if hi > lo else 0.0
        big = np.inf
        total_n = 0
        mean = 0.0
        m2 = 0.0
        mn = big
        mx = -big
        nan = 0
        inf = 0
        nfill = 0
        under = 0
        over = 0
        size = x.size
        for start in range(0, size, 65536):
            stop = min(start + 65536, size)
            s, smn, smx, sfill = _scan_slice(x, start, stop, fill, has_fill)
            if sfill == 0 and np.isfinite(s) and np.isfinite(smn) and np.isfinite(smx):
                n = stop - start
                m = s / n
                q = 0.0
                if has_hist and smn >= lo and smx <= hi:
                    for i in range(start, stop):
                        v = np.float64(x[i])
                        d = v - m
                        q += d * d
                        b = int((v - lo) * scale)
                        hist[min(b, bins - 1)] += 1
                else:
                    for i in range(start, stop):
                        d = np.float64(x[i]) - m
                        q += d * d
                    if has_hist:
                        for i in range(start, stop):
                            r = _bin_checked(np.float64(x[i]), lo, hi, scale, hist)
                            under += r < 0
                            over += r > 0
                mn = min(mn, smn)
                mx = max(mx, smx)
            else:
                n = 0
                s = 0.0
                for i in range(start, stop):
                    v = np.float64(x[i])
                    if has_fill and v == fill:
                        nfill += 1
                        continue
                    if v != v:
                        nan += 1
                        continue
                    if v == big or v == -big:
                        inf += 1
                        continue
                    n += 1
                    s += v
                    if v < mn:
                        mn = v
                    if v > mx:
                        mx = v
                    if has_hist:
                        r = _bin_checked(v, lo, hi, scale, hist)
                        under += r < 0
                        over += r > 0
                if n == 0:
                    continue
                m = s / n
                q = 0.0
                for i in range(start, stop):
                    v = np.float64(x[i])
                    if not _excluded(v, fill, has_fill):
                        d = v - m
                        q += d * d
            if total_n == 0:
                total_n, mean, m2 = n, m, q
            else:
                tot = total_n + n
                delta = m - mean
                mean += delta * n / tot
                m2 += q + delta * delta * total_n * n / tot
                total_n = tot
        return total_n, nan, inf, nfill, mn, mx, mean, m2, under, over

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency; kept optional for odd platforms
    HAVE_NUMBA = False


def _fused_partial(flat: np.ndarray, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    hist = np.zeros(bins if rng is not None else 1, dtype=np.int64)
    lo, hi = rng if rng is not None else (0.0, 0.0)
    has_fill = fill is not None and not (isinstance(fill, float) and math.isnan(fill))
    n, nan, inf, nfill, mn, mx, mean, m2, under, over = _fused(
        flat, float(fill) if has_fill else 0.0, has_fill, float(lo), float(hi), rng is not None, hist)
    return Partial(count=int(flat.size), n=int(n), nan=int(nan), inf=int(inf), fill=int(nfill),
                   min=float(mn), max=float(mx), mean=float(mean), m2=float(m2),
                   hist=hist if rng is not None else None, under=int(under), over=int(over))


def block_partial(block: Any, fill: Any = None, bins: int = 64, rng: tuple[float, float] | None = None) -> Partial:
    """Partial statistics of one block (numpy or cupy), processed in cache-sized slices.

    Parameters
    ----------
    block : array
        The block's raw values.
    fill : scalar, optional
        Fill value: matching elements are counted in ``fill`` and left out of everything else.
    bins : int
        Histogram bins.
    rng : (float, float), optional
        Histogram range; no histogram without one.
    """
    xp = _xp(block)
    flat = block.reshape(-1)
    if flat.dtype.kind not in "biufc":
        raise TypeError(f"cannot profile dtype {flat.dtype}")
    if HAVE_NUMBA and xp is np and flat.dtype.kind in "iuf":
        return _fused_partial(np.ascontiguousarray(flat), fill, bins, rng)
    if flat.dtype.kind == "c":  # complex: statistics of the magnitude
        flat = xp.abs(flat)
    parts = [_slice_partial(flat[i:i + _SLICE], xp, fill, bins, rng) for i in range(0, max(flat.size, 1), _SLICE)]
    return merge_all(parts)


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


def histogram_range(dtype: Any, attrs: dict[str, Any]) -> tuple[tuple[float, float] | None, str]:
    """Histogram range known before reading, and where it came from (``valid_range``, ``dtype``) or None."""
    vr = attrs.get("valid_range")
    if vr is not None and np.size(vr) == 2:
        lo, hi = (float(v) for v in np.asarray(vr).ravel())
        if hi > lo:
            return (lo, hi), "valid_range"
    if attrs.get("valid_min") is not None and attrs.get("valid_max") is not None:
        lo, hi = float(np.asarray(attrs["valid_min"]).ravel()[0]), float(np.asarray(attrs["valid_max"]).ravel()[0])
        if hi > lo:
            return (lo, hi), "valid_min/valid_max"
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return (float(info.min), float(info.max)), "dtype"
    if dt.kind == "b":
        return (0.0, 1.0), "dtype"
    return None, ""


def finalize(p: Partial, *, scale: float | None = None, offset: float | None = None) -> dict[str, Any]:
    """Columns of the ``stats`` table from a merged partial (raw units, plus physical units when packed)."""
    std = math.sqrt(p.m2 / p.n) if p.n else None
    out: dict[str, Any] = {
        "count": p.count, "valid_count": p.n, "nan_count": p.nan, "inf_count": p.inf, "fill_count": p.fill,
        "min": p.min if p.n else None, "max": p.max if p.n else None,
        "mean": p.mean if p.n else None, "std": std,
        "hist_counts": p.hist.tolist() if p.hist is not None else None,
        "hist_underflow": p.under if p.hist is not None else None,
        "hist_overflow": p.over if p.hist is not None else None,
    }
    if (scale is not None or offset is not None) and p.n:
        s, o = (1.0 if scale is None else float(scale)), (0.0 if offset is None else float(offset))
        lo, hi = p.min * s + o, p.max * s + o
        out.update(phys_min=min(lo, hi), phys_max=max(lo, hi), phys_mean=p.mean * s + o,
                   phys_std=std * abs(s) if std is not None else None)
    return out
