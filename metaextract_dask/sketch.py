"""A mergeable one-pass distribution sketch: quantiles within 0.4 % relative error, and an approximate
equal-width histogram over the data's min..max, from the same pass as the other statistics.

In the spirit of DDSketch (Masson, Rim & Lee, VLDB 2019), with buckets taken from the bits of a double instead
of a logarithm, so that every implementation (the C kernel, the CUDA kernel, this module's numpy reference)
computes the same bucket with integer arithmetic:

* **Key.** Every valid value (finite, not fill) is converted to float64 (exact for float16/32 and for integers
  up to 2**53; wider integers round to the nearest double first). ``+-0`` has key 0. Otherwise, writing
  ``|v| = 2**e * (1 + f)`` with ``0 <= f < 1`` (subnormals normalised by their leading bit), the key is
  ``(e + 1075) * 128 + floor(f * 128)``, negated for negative values. Keys are monotone in the value and
  ``|key| <= KMAX``.
* **Bucket.** Key ``k > 0`` holds the values ``[2**e (1 + j/128), 2**e (1 + (j+1)/128))`` with
  ``e = (k >> 7) - 1075`` and ``j = k & 127``; negative keys mirror. A bucket's relative width is at most
  2**-7, so its midpoint is within 2**-8 (0.39 %) of every value in it, relative to that value.
* **Sketch.** The sorted keys that occur and their counts (int32, int64 arrays). Merging adds counts per key:
  integer arithmetic, so any merge order gives the identical sketch.

Quantiles
    The value at quantile ``q`` is defined as the order statistic of 0-based rank
    ``r = ceil(n q - 1)`` clipped to ``[0, n-1]`` (numpy's ``method="inverted_cdf"``, Hyndman & Fan's type
    1: the smallest value whose empirical CDF reaches ``q``). The sketch returns the midpoint of the bucket
    holding that order statistic, clamped to the exact min..max (and the exact min or max themselves for
    ranks 0 and n-1, the value 0 for the zero bucket). So the result ``y`` satisfies
    ``|y - x_(r)| <= 2**-8 |x_(r)|`` (0.39 %, inside the 1 % the stats table promises).

Histogram from the sketch
    Equal-width bins over ``[min, max]`` (a unit-wide range around a constant). Each bucket's count is spread
    uniformly over its value interval clipped to ``[min, max]`` (a bucket that clips to one point, or the zero
    bucket, is a point mass at that value; the top edge belongs to the last bin). The cumulative mass at each
    bin edge is rounded to an integer and the bins are its differences, so the counts are integers that add up
    to the valid count. Counts are exact for bins whose edges fall between buckets and approximate (by the
    share of a bucket's width) where an edge cuts a bucket: a bin is typically off by a fraction of the
    counts of the one or two buckets its edges cut. ``hist_exact`` is False for these histograms.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["SK_BITS", "KMAX", "QUANTILES", "Sketch", "keys_of", "from_keys", "from_values", "merge_sketches",
           "bucket_bounds", "rank_value", "quantile", "quantiles", "histogram"]

SK_BITS = 7  # mantissa bits per bucket: relative bucket width 2**-7
KMAX = (2098 << SK_BITS) + (1 << SK_BITS) - 1  # largest |key| (the largest finite double)
_BIAS = 1075  # exponent of a key's bucket: (k >> SK_BITS) - _BIAS

#: The quantiles of the stats table: column name -> q.
QUANTILES: dict[str, float] = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95,
                               "p99": 0.99}

#: A sketch: sorted distinct keys (int32) and their counts (int64).
Sketch = tuple[np.ndarray, np.ndarray]

_EMPTY: Sketch = (np.zeros(0, np.int32), np.zeros(0, np.int64))


def keys_of(x: Any, xp: Any = np) -> Any:
    """The sketch key of each finite value of `x` (any numeric dtype; converted to float64), with array module
    `xp` (numpy or cupy): the reference of the C and CUDA key functions (integer arithmetic on the bits)."""
    x = xp.ascontiguousarray(x.astype(np.float64, copy=False))
    b = x.view(np.uint64)
    a = b & np.uint64(0x7FFFFFFFFFFFFFFF)
    k = (a >> np.uint64(52 - SK_BITS)).astype(np.int64) + (52 << SK_BITS)
    sub = a < np.uint64(1 << 52)
    if bool(sub.any()):
        a_s = a[sub]
        # leading bit p of a subnormal's bits: exact through float64 (a < 2**52), frexp gives p + 1
        p = xp.frexp(a_s.astype(np.float64))[1].astype(np.int64) - 1
        p = xp.maximum(p, 0)  # zeros: any shift, their key is set to 0 below
        f = (a_s << (np.int64(52) - p).astype(np.uint64)) & np.uint64((1 << 52) - 1)
        ks = ((p + 1) << SK_BITS) | (f >> np.uint64(52 - SK_BITS)).astype(np.int64)
        k[sub] = xp.where(a_s == 0, 0, ks)
    k = xp.where((b >> np.uint64(63)) != 0, -k, k)
    return k.astype(np.int32)


def from_keys(keys: Any, counts: Any = None) -> Sketch:
    """The sketch of `keys` (each occurring once, or `counts` times); host arrays out."""
    keys = np.asarray(keys.get() if hasattr(keys, "get") else keys, dtype=np.int32).ravel()
    if counts is None:
        u, c = np.unique(keys, return_counts=True)
        return u.astype(np.int32), c.astype(np.int64)
    counts = np.asarray(counts, dtype=np.int64).ravel()
    u, inv = np.unique(keys, return_inverse=True)
    return u.astype(np.int32), _sum_int(inv.ravel(), counts, u.size)


def _sum_int(inv: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, np.int64)
    np.add.at(out, inv, counts)
    return out


def from_values(x: Any, xp: Any = np) -> Sketch:
    """The sketch of the values of `x` (all taken as valid: NaN/inf/fill excluded by the caller)."""
    if x.size == 0:
        return _EMPTY
    keys = keys_of(x, xp)
    if xp is np:
        return from_keys(keys)
    u, c = xp.unique(keys, return_counts=True)
    return np.asarray(u.get(), np.int32), np.asarray(c.get(), np.int64)


def merge_sketches(a: Sketch | None, b: Sketch | None) -> Sketch | None:
    """The sketch of the union of two sketches' values (None: no sketch)."""
    if a is None or b is None:
        return a if b is None else b
    if not a[0].size or not b[0].size:
        return b if not a[0].size else a
    keys = np.concatenate([a[0], b[0]])
    counts = np.concatenate([a[1], b[1]])
    u, inv = np.unique(keys, return_inverse=True)
    return u.astype(np.int32), _sum_int(inv.ravel(), counts, u.size)


def bucket_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bound, upper bound and midpoint of each key's bucket (by magnitude mirrored for negative keys:
    ``lower <= upper`` always; key 0 is the point 0)."""
    k = np.asarray(keys, dtype=np.int64)
    m = np.abs(k)
    e = (m >> SK_BITS) - _BIAS
    j = (m & ((1 << SK_BITS) - 1)).astype(np.float64)
    scale = 1.0 / (1 << SK_BITS)
    with np.errstate(over="ignore"):
        lo = np.ldexp(1.0 + j * scale, e)
        hi = np.ldexp(1.0 + (j + 1.0) * scale, e)  # the top bucket's upper bound is 2**1024: inf
        mid = np.ldexp(1.0 + (j + 0.5) * scale, e)
    zero = m == 0
    lo[zero] = hi[zero] = mid[zero] = 0.0
    neg = k < 0
    lo[neg], hi[neg], mid[neg] = -hi[neg], -lo[neg], -mid[neg]
    return lo, hi, mid


def _rank(n: int, q: float) -> int:
    """0-based rank of quantile `q` of `n` values, as numpy's ``method="inverted_cdf"`` computes it."""
    vi = n * q - 1
    r = math.floor(vi) + (1 if vi - math.floor(vi) > 0 else 0)
    return min(max(r, 0), n - 1)


def rank_value(sk: Sketch, r: int, vmin: float, vmax: float) -> float:
    """The sketch's estimate of the order statistic of 0-based rank `r` (see module docstring)."""
    keys, counts = sk
    n = int(counts.sum())
    if r <= 0:
        return float(vmin)
    if r >= n - 1:
        return float(vmax)
    i = int(np.searchsorted(np.cumsum(counts), r, side="right"))
    _, _, mid = bucket_bounds(keys[i:i + 1])
    return float(min(max(mid[0], vmin), vmax))


def quantile(sk: Sketch, q: float, vmin: float, vmax: float) -> float:
    """The value at quantile `q` (0 <= q <= 1) of the sketched values, whose exact extremes are `vmin`, `vmax`."""
    n = int(sk[1].sum())
    if not n:
        raise ValueError("quantile of an empty sketch")
    return rank_value(sk, _rank(n, q), vmin, vmax)


def _rank_values(sk: Sketch, ranks: list[int], vmin: float, vmax: float) -> np.ndarray:
    """:func:`rank_value` of several ranks at once (one prefix sum, one search): per profiled array, on the
    client, so it stays cheap for catalogs of many small arrays."""
    keys, counts = sk
    n = int(counts.sum())
    r = np.asarray(ranks, dtype=np.int64)
    i = np.minimum(np.searchsorted(np.cumsum(counts), r, side="right"), keys.size - 1)
    _, _, mid = bucket_bounds(keys[i])
    out = np.minimum(np.maximum(mid, vmin), vmax)
    out[r <= 0] = vmin
    out[r >= n - 1] = vmax
    return out


def quantiles(sk: Sketch | None, vmin: float, vmax: float, *, scale: float | None = None,
              offset: float | None = None) -> dict[str, float | None]:
    """The stats table's quantile columns (``p01`` ... ``p99``; with `scale`/`offset`, also ``phys_p01`` ...:
    the quantiles of the physical values ``raw * scale + offset``, which for a negative scale are the raw
    values of the mirrored ranks)."""
    n = int(sk[1].sum()) if sk is not None else 0
    packed = scale is not None or offset is not None
    if not n or sk is None:
        out: dict[str, float | None] = {name: None for name in QUANTILES}
        if packed:
            out.update({f"phys_{name}": None for name in QUANTILES})
        return out
    ranks = [_rank(n, q) for q in QUANTILES.values()]
    s, o = (1.0 if scale is None else float(scale)), (0.0 if offset is None else float(offset))
    mirrored = packed and s < 0
    values = _rank_values(sk, ranks + ([n - 1 - r for r in ranks] if mirrored else []), vmin, vmax)
    out = {name: float(v) for name, v in zip(QUANTILES, values[:len(ranks)])}
    if packed:
        raw = values[len(ranks):] if mirrored else values[:len(ranks)]
        out.update({f"phys_{name}": float(v) * s + o for name, v in zip(QUANTILES, raw)})
    return out


def histogram(sk: Sketch, bins: int, lo: float, hi: float, vmin: float, vmax: float) -> np.ndarray:
    """Equal-width histogram of the sketched values over ``[lo, hi]`` (see module docstring): int64 counts that
    add up to the sketch's count."""
    keys, counts = sk
    n = int(counts.sum())
    if not n:
        return np.zeros(bins, np.int64)
    blo, bhi, _ = bucket_bounds(keys)
    a = np.clip(blo, vmin, vmax)
    b = np.clip(bhi, vmin, vmax)
    width = b - a
    point = (width <= 0) | (keys == 0)
    step = (hi - lo) / bins
    edges = lo + step * np.arange(bins + 1, dtype=np.float64)
    w = counts.astype(np.float64)
    inner = edges[1:-1]
    cum = np.zeros(bins - 1, dtype=np.float64)
    if (~point).any():
        # buckets are disjoint and sorted by key, so by value: the mass below an edge is the prefix sum of the
        # buckets that end at or below it plus the share of the one bucket it cuts
        sa, sb, sw = a[~point], b[~point], w[~point]
        prefix = np.concatenate([[0.0], np.cumsum(sw)])
        i = np.searchsorted(sb, inner, side="right")
        cut = np.minimum(i, sa.size - 1)
        share = np.clip((inner - sa[cut]) / (sb[cut] - sa[cut]), 0.0, 1.0)
        cum += prefix[i] + np.where(i < sa.size, sw[cut] * share, 0.0)
    if point.any():
        pv, pw = a[point], w[point]
        # as numpy bins: (x - lo) / (hi - lo) * bins (bins / (hi - lo) overflows for subnormal ranges)
        idx = np.minimum(((pv - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
        idx = np.maximum(idx, 0)
        # a point mass in bin i lies below edges i+1 .. bins-1 (inner edge t is edges[t+1])
        below = idx[:, None] < np.arange(1, bins)[None, :]
        cum += (pw[:, None] * below).sum(axis=0)
    total = np.concatenate([[0.0], np.minimum(np.floor(cum + 0.5), n), [float(n)]])
    total = np.maximum.accumulate(total)
    return np.diff(total).astype(np.int64)
