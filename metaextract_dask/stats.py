"""Single-pass content statistics: per-block partials merged with numerically stable formulas.

A partial summarises one block: element count, NaN / inf / fill counts, min, max, mean and M2 (sum of squared
deviations from the mean) of the valid values, a fixed-bin histogram over a range known before the pass, and a
distribution sketch (:mod:`metaextract_dask.sketch`). Partials merge pairwise with Chan et al.'s parallel update
(mean and M2; no naive sum of squares) and by adding sketch counts per bucket, so every block of an array is
read exactly once and the reduction is a tree of tiny merges.

The histogram's range comes from metadata (``valid_range`` / ``valid_min`` + ``valid_max``), else, for integer
data, from the dtype's limits. Floating-point data without a valid range gets its histogram over its own
min..max from the merged sketch (:func:`sketch_histogram`, approximate) or, when asked for, from a second pass
with the range set by the first pass's min and max (the profiler does that).

Blocks may be numpy or cupy arrays: the module works with whichever array module the block belongs to and
returns host (numpy / Python) values. cupy blocks go through two fused CUDA kernels (:mod:`._cuda`) where
they compile, with the same results as the CPU kernels. numpy blocks go through the C kernels where the
extension was built (``_kernels.c``: one loop per block for every integer and float dtype, AVX2 for
float32/float64/int32, :func:`_c_partial`; per-value counts for large 8/16-bit integer blocks,
:func:`_count_partial`), else numba slice kernels and a numpy sketch (:func:`_float_partial`; same results).
With the C kernels no numba kernel is compiled, so a first profile after installation costs no compilation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from metaextract_dask import config
from metaextract_dask.dispatch import summarise
from metaextract_dask.partials import Partial, f32_range, merge, merge_all, native_fill, slice_partial
from metaextract_dask.sketch import from_keys, from_values, histogram, keys_of, merge_sketches, quantiles

__all__ = ["Partial", "block_partial", "merge", "merge_all", "histogram_range", "finalize", "data_range",
           "sketch_histogram", "HAVE_NUMBA", "HAVE_C"]

# Elements per slice inside a block: the passes of one slice stay in the CPU cache.
_SLICE = 1 << 20
# Most bins for the pair-counting kernels: (bins + 6)**2 counters in 4 tables, 1 MiB at 250 bins.
_PAIR_BINS = 250
# Fewest elements for counting 8/16-bit integers per value: below, zeroing and folding the 65,536-entry
# tables costs more than the pair kernel takes.
_COUNT_MIN = 1 << 16


# Most elements per call of the C kernel (its per-lane sketch counters are 32-bit).
_C_MAX = 1 << 30

try:  # the one-pass C kernels (every numeric dtype), built at install time where a C compiler was found
    from metaextract_dask import _kernels
except ImportError:  # pragma: no cover - no compiler at install time: the numba kernels below
    _kernels = None

#: True when the C kernels were built: then no numba kernel is compiled with the default settings.
HAVE_C = _kernels is not None and hasattr(_kernels, "block_stats")

try:  # fused one-pass kernels for numpy blocks; without numba the numpy path above does the same work
    import numba

    # nnan/ninf let min/max/sums vectorise; NaN and inf are recognised by their bits instead (integer tests are
    # untouched by fastmath), and every float result computed from them is discarded by a select.
    _FAST = {"nnan", "ninf", "nsz", "reassoc", "contract", "arcp"}
    # Bin arithmetic without reassociation or contraction, so that it rounds as numpy's (x - lo) * scale does.
    _BIN_FAST = {"nnan", "ninf", "nsz"}
    _SL = 16384  # elements per slice: a slice and its bin indices stay in L2 between the passes
    _FOLD = 1 << 30  # int32 counters are folded into int64 totals before they could overflow

    @numba.njit(nogil=True, cache=True, fastmath=_BIN_FAST, inline="always")
    def _bin(x, s, fill, lo, hi, scale, top, emask, eval_, mmask, nb):  # type: ignore[no-untyped-def]
        # 0..nb-1 in range, nb below it, nb+1 above, nb+2 fill, nb+3 NaN, nb+4 +-inf.
        t = min(max((x - lo) * scale, top - top), top)
        b = np.int32(t)
        b = np.int32(nb) if x < lo else b
        b = np.int32(nb + 1) if x > hi else b
        if fill is not None:
            b = np.int32(nb + 2) if x == fill else b
        if (s & emask) == eval_:  # a float's exponent all ones (integers: eval_ is unreachable)
            b = np.int32(nb + 3) if (s & mmask) != 0 else np.int32(nb + 4)
        return b

    @numba.njit(nogil=True, cache=True, fastmath=_BIN_FAST)
    def _pass_bins(xs, ks, ku, fill, lo, hi, scale, top, emask, eval_, mmask, nb, smin, umax, idx):  # type: ignore[no-untyped-def]
        # Bins of pairs, idx[j] = (nb + 6) * bin(x[j]) + bin(x[j + half]): one counter update per two
        # elements. Also the signed min and unsigned max of the valid elements' bits (see _float_partial).
        NB = np.int32(nb + 6)
        valid_end = np.int32(nb + 2)
        half = xs.size // 2
        smin0, umax0 = smin, umax
        for j in range(half):
            b1 = _bin(xs[j], ks[j], fill, lo, hi, scale, top, emask, eval_, mmask, nb)
            b2 = _bin(xs[j + half], ks[j + half], fill, lo, hi, scale, top, emask, eval_, mmask, nb)
            smin = min(smin, ks[j] if b1 < valid_end else smin0)
            smin = min(smin, ks[j + half] if b2 < valid_end else smin0)
            umax = max(umax, ku[j] if b1 < valid_end else umax0)
            umax = max(umax, ku[j + half] if b2 < valid_end else umax0)
            idx[j] = b1 * NB + b2
        return smin, umax

    @numba.njit(nogil=True, cache=True, fastmath=_FAST)
    def _pass_sums(xs, ks, c, fill, emask, eval_, smax, track_max):  # type: ignore[no-untyped-def]
        # Sums of (x - c) and (x - c)**2 over the valid elements, in float64, with c a data value (see
        # _float_partial). The signed max of the bits too unless track_max is None (a compile-time choice).
        s1 = 0.0
        s2 = 0.0
        smax0 = smax
        for i in range(xs.size):
            x = xs[i]
            s = ks[i]
            ok = (s & emask) != eval_
            if fill is not None:
                ok = ok & (x != fill)
            d = np.float64(x) - c
            d = d if ok else 0.0
            s1 += d
            s2 += d * d
            if track_max is not None:
                smax = max(smax, s if ok else smax0)
        return s1, s2, smax

    @numba.njit(nogil=True, cache=True)
    def _scatter(idx, n, tables):  # type: ignore[no-untyped-def]
        # Four tables in turn, so that repeated values do not wait on each other's counter store.
        n4 = n - n % 4
        for i in range(0, n4, 4):
            tables[0, idx[i]] += 1
            tables[1, idx[i + 1]] += 1
            tables[2, idx[i + 2]] += 1
            tables[3, idx[i + 3]] += 1
        for i in range(n4, n):
            tables[0, idx[i]] += 1

    @numba.njit(nogil=True, cache=True)
    def _fold_pairs(tables, NB, out):  # type: ignore[no-untyped-def]
        t = tables.sum(axis=0)
        for a in range(NB):
            for b in range(NB):
                v = t[a * NB + b]
                out[a] += v
                out[b] += v
        tables[:] = 0

    @numba.njit(nogil=True, cache=True)
    def _float_kernel(xs, ks, ku, fill, lo, hi, scale, top, emask, eval_, mmask, nb, smin0, smax0, umax0, counts):  # type: ignore[no-untyped-def]
        # Per slice: the bins pass, the counter updates, the sums pass. Returns the sums around c and the
        # raw-bit extremes; counts gets the per-bin totals (nb bins + below/above/fill/NaN/inf + "none").
        NB = nb + 6
        none = np.int32(nb + 5)
        tables = np.zeros((4, NB * NB), np.int32)
        idx = np.empty(_SL // 2, np.int32)
        size = xs.size
        c = 0.0
        for i in range(size):  # the shift: the first valid value (any value near the data will do)
            b = _bin(xs[i], ks[i], fill, lo, hi, scale, top, emask, eval_, mmask, nb)
            if b < nb + 2:
                c = np.float64(xs[i])
                break
        s1 = 0.0
        s2 = 0.0
        smin, smax, umax = smin0, smax0, umax0
        since_fold = 0
        for start in range(0, size, _SL):
            stop = min(start + _SL, size)
            even = stop - (stop - start) % 2
            sl_min, sl_umax = _pass_bins(xs[start:even], ks[start:even], ku[start:even], fill, lo, hi, scale, top,
                                         emask, eval_, mmask, nb, smin0, umax0, idx)
            _scatter(idx, (even - start) // 2, tables)
            since_fold += stop - start
            if since_fold >= _FOLD:
                _fold_pairs(tables, NB, counts)
                since_fold = 0
            if even < stop:  # an odd element out (last slice only): paired with "none"
                b = _bin(xs[even], ks[even], fill, lo, hi, scale, top, emask, eval_, mmask, nb)
                tables[0, b * NB + none] += 1
                if b < nb + 2:
                    sl_min = min(sl_min, ks[even])
                    sl_umax = max(sl_umax, ku[even])
            if sl_min == smin0 and sl_umax == umax0:
                continue  # no valid value in this slice
            smin = min(smin, sl_min)
            umax = max(umax, sl_umax)
            if sl_min >= 0:  # no negative value: the bits' max is the unsigned max, already known
                a, q, _ = _pass_sums(xs[start:stop], ks[start:stop], c, fill, emask, eval_, smax0, None)
                smax = max(smax, ks.dtype.type(sl_umax))
            else:
                a, q, sl_max = _pass_sums(xs[start:stop], ks[start:stop], c, fill, emask, eval_, smax0, True)
                smax = max(smax, sl_max)
            s1 += a
            s2 += q
        _fold_pairs(tables, NB, counts)
        return c, s1, s2, smin, smax, umax

    @numba.njit(nogil=True, cache=True)
    def _resum(xs, ks, c, fill, emask, eval_):  # type: ignore[no-untyped-def]
        s1 = 0.0
        s2 = 0.0
        for start in range(0, xs.size, _SL):
            stop = min(start + _SL, xs.size)
            a, q, _ = _pass_sums(xs[start:stop], ks[start:stop], c, fill, emask, eval_, ks[0], None)
            s1 += a
            s2 += q
        return s1, s2

    @numba.njit(nogil=True, cache=True)
    def _count_values(u, tables, out):  # type: ignore[no-untyped-def]
        # How often each value occurs (u: the data's unsigned view), four counters updated in turn (tables
        # 0..3 for 8-bit data; for 16-bit data, two 256 KiB tables, used 0,1,0,1, to stay in L2) so that
        # runs of one value do not wait on each other's counter store.
        two = tables.shape[0] == 2
        for start in range(0, u.size, _FOLD):
            stop = min(start + _FOLD, u.size)
            n4 = start + (stop - start) // 4 * 4
            for i in range(start, n4, 4):
                tables[0, u[i]] += 1
                tables[1, u[i + 1]] += 1
                tables[0 if two else 2, u[i + 2]] += 1
                tables[1 if two else 3, u[i + 3]] += 1
            for i in range(n4, stop):
                tables[0, u[i]] += 1
            for t in range(tables.shape[0]):
                for v in range(tables.shape[1]):
                    out[v] += tables[t, v]
            tables[:] = 0

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency; kept optional for odd platforms
    HAVE_NUMBA = False


def _float_partial(flat: np.ndarray, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    """Partial of a float or 32/64-bit integer block with the slice kernels.

    Min and max come from integer reductions of the raw bits, which vectorise where float ones do not:
    non-negative floats order like their bits as signed integers, negative ones like their bits as unsigned
    integers, so the signed min, signed max and unsigned max of the valid elements' bits give both extremes.
    Mean and M2 come from float64 sums of (x - c) and (x - c)**2 with c a data value: exact in real
    arithmetic, and while the mean is within ~1000 standard deviations of c the rounding is that of a
    two-pass computation; further off, the sums are recomputed around the mean.
    """
    dt = flat.dtype
    it, ut = np.dtype(f"i{dt.itemsize}"), np.dtype(f"u{dt.itemsize}")
    if dt.kind == "f":
        ks, ku = flat.view(it), flat.view(ut)
        mbits = 52 if dt.itemsize == 8 else 23
        emask = it.type(((1 << (dt.itemsize * 8 - 1 - mbits)) - 1) << mbits)
        eval_, mmask = emask, it.type((1 << mbits) - 1)
    else:  # integers are their own keys and are never NaN/inf: (s & 0) == 1 never holds
        ks, ku, it = flat, flat.view(ut), dt
        emask, eval_, mmask = dt.type(0), dt.type(1), dt.type(0)
    lo, hi = rng if rng is not None else (0.0, 0.0)
    lo_w: Any
    hi_w: Any
    scale: Any
    top: Any
    if dt == np.float32:  # float32 arithmetic for float32 data: twice the vector width
        lo_w, hi_w, scale = f32_range(lo, hi, bins)
        top = np.float32(bins - 1)
    else:
        lo_w, hi_w, scale, top = float(lo), float(hi), (bins / (hi - lo) if hi > lo else 0.0), float(bins - 1)
    counts = np.zeros(bins + 6, dtype=np.int64)
    f = native_fill(dt, fill)
    done = None
    if _kernels is not None and dt == np.float32 and config.get("kernel", "auto") != "numba":
        # the one-loop AVX2 kernel (it returns None where the CPU has no AVX2)
        c = _shift(flat, f)
        done = _kernels.f32_block(flat, float(lo_w), float(hi_w), float(scale), float(top), bins,
                                  None if f is None else float(f), c, counts)
    if done is None:
        smin0, smax0 = it.type(np.iinfo(it).max), it.type(np.iinfo(it).min)
        c, s1, s2, smin, smax, umax = _float_kernel(flat, ks, ku, f, lo_w, hi_w, scale, top, emask, eval_, mmask,
                                                    bins, smin0, smax0, ut.type(0), counts)
    else:
        s1, s2, vmin, vmax = done
    p = Partial(count=int(flat.size), fill=int(counts[bins + 2]), nan=int(counts[bins + 3]), inf=int(counts[bins + 4]))
    p.n = p.count - p.fill - p.nan - p.inf
    if rng is not None:
        p.hist, p.under, p.over = counts[:bins].copy(), int(counts[bins]), int(counts[bins + 1])
    if not p.n:
        return p
    m2 = s2 - s1 * s1 / p.n
    if s1 * s1 / p.n > 1e6 * max(m2, 0.0):  # c far from the mean (relative to the spread): sum around the mean
        c += s1 / p.n
        s1, s2 = _resum(flat, ks, c, f, emask, eval_)
        m2 = s2 - s1 * s1 / p.n
    p.mean, p.m2 = c + s1 / p.n, max(m2, 0.0)
    p.sketch = _valid_sketch(flat, f)
    if done is not None:
        p.min, p.max = vmin, vmax
    elif dt.kind == "f":
        lo_bits, hi_bits = (smin, umax) if smin >= 0 else (umax, smax if smax >= 0 else smin)
        p.min = float(np.array(lo_bits, dtype=ut if smin < 0 else it).view(dt))
        p.max = float(np.array(hi_bits, dtype=ut if smin >= 0 else it).view(dt))
    else:
        p.min, p.max = float(smin), float(smax)
    return p


def _valid_sketch(flat: np.ndarray, fill: Any) -> Any:
    """The sketch of the valid values of `flat` with numpy (the numba path's; the C kernel counts its own)."""
    sk = None
    for start in range(0, flat.size, _SLICE):
        x = flat[start:start + _SLICE]
        ok = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, bool)
        if fill is not None:
            ok &= x != fill
        sk = merge_sketches(sk, from_values(x[ok]))
    return sk


def _use_c() -> bool:
    return config.get("kernel", "auto") != "numba" and _kernels is not None and hasattr(_kernels, "block_stats")


def _c_partial(flat: np.ndarray, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    """Partial of an integer or float32/64 block with the C kernel: one loop over the block computes the counts,
    extremes, shifted sums (as :func:`_float_partial`), the histogram over a known range (float32 binned in
    float32 over bounds rounded inwards, everything else in float64, as the other paths) and the sketch."""
    dt = flat.dtype
    f = native_fill(dt, fill)
    fill_arg = None if f is None else float(f)
    nb, lo, hi, scale, top = 0, 0.0, 0.0, 0.0, 0.0
    lo32 = hi32 = scale32 = np.float32(0)
    counts = None
    if rng is not None:
        nb, (lo, hi) = bins, rng
        scale, top = (bins / (hi - lo) if hi > lo else 0.0), float(bins - 1)
        lo32, hi32, scale32 = f32_range(lo, hi, bins)
        counts = np.zeros(bins + 6, dtype=np.int64)
    c = _shift(flat, f)
    p = Partial(count=int(flat.size))
    s1 = s2 = 0.0
    for start in range(0, max(flat.size, 1), _C_MAX):
        piece = flat[start:start + _C_MAX]
        n, nan, inf, nfill, a, q, vmin, vmax, kb, cb = _kernels.block_stats(
            piece, dt.char, fill_arg, c, nb, lo, hi, scale, top, float(lo32), float(hi32), float(scale32),
            float(bins - 1), counts)
        p.n, p.nan, p.inf, p.fill = p.n + n, p.nan + nan, p.inf + inf, p.fill + nfill
        s1, s2 = s1 + a, s2 + q
        if n:
            p.min, p.max = min(p.min, vmin), max(p.max, vmax)
            p.sketch = merge_sketches(p.sketch, (np.frombuffer(kb, np.int32), np.frombuffer(cb, np.int64)))
    if counts is not None:
        p.hist, p.under, p.over = counts[:bins].copy(), int(counts[bins]), int(counts[bins + 1])
    if not p.n:
        p.min, p.max = math.inf, -math.inf
        return p
    m2 = s2 - s1 * s1 / p.n
    # c more than 10 standard deviations from the mean: sum again around the mean (a pass over memory, rare;
    # the C kernel's eight partial sums round more than numba's reassociated ones, hence 10 and not 1000)
    if s1 * s1 / p.n > 100 * max(m2, 0.0):
        c += s1 / p.n
        s1 = s2 = 0.0
        for start in range(0, flat.size, _C_MAX):
            out = _kernels.block_stats(flat[start:start + _C_MAX], dt.char, fill_arg, c, 0, 0.0, 0.0, 0.0, 0.0,
                                       0.0, 0.0, 0.0, 0.0, None)
            s1, s2 = s1 + out[4], s2 + out[5]
        m2 = s2 - s1 * s1 / p.n
    p.mean, p.m2 = c + s1 / p.n, max(m2, 0.0)
    return p


def _shift(flat: np.ndarray, fill: Any) -> float:
    """The first valid value of `flat` (finite, not `fill`), or 0.0: the shift of the kernels' sums."""
    step = 4096
    for start in range(0, flat.size, step):
        head = flat[start:start + step]
        ok = np.isfinite(head)
        if fill is not None:
            ok &= head != fill
        hit = np.flatnonzero(ok)
        if hit.size:
            return float(head[hit[0]])
        step = min(step * 4, 1 << 22)
    return 0.0


def _count_partial(flat: np.ndarray, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    """Partial of an 8/16-bit integer block from how often each value occurs: one counter update per element,
    then every statistic exactly from at most 65,536 (value, count) pairs."""
    dt = flat.dtype
    ut = np.dtype(f"u{dt.itemsize}")
    width = 1 << (8 * dt.itemsize)
    occ = np.zeros(width, dtype=np.int64)
    if _use_c():
        _kernels.count_values(flat.view(ut), dt.itemsize, occ)
    else:
        tables = np.zeros((4 if dt.itemsize == 1 else 2, width), dtype=np.int32)
        _count_values(flat.view(ut), tables, occ)
    values = np.arange(width, dtype=np.int64).astype(ut).view(dt).astype(np.int64)
    p = Partial(count=int(flat.size))
    f = native_fill(dt, fill)
    if f is not None:
        at = int(np.asarray(f, dtype=dt).view(ut))
        p.fill, occ[at] = int(occ[at]), 0
    seen = np.nonzero(occ)[0]
    p.n = int(occ.sum())
    if rng is not None:
        p.hist = np.zeros(bins, dtype=np.int64)
    if not p.n:
        return p
    v, k = values[seen], occ[seen]
    p.min, p.max = float(v.min()), float(v.max())
    p.sketch = from_keys(keys_of(v), k)  # each distinct value's key, weighted by its count
    total = int((v * k).sum())  # exact: at most 2**31 * 2**16 per block
    p.mean = total / p.n
    p.m2 = float((k * (v - p.mean) ** 2).sum())
    if rng is not None:
        p.hist, p.under, p.over = _bin_counts(v.astype(np.float64), k, bins, rng)
    return p


def _bin_counts(v: np.ndarray, k: np.ndarray, bins: int, rng: tuple[float, float]) -> tuple[np.ndarray, int, int]:
    """Histogram of values `v` occurring `k` times each, with the same bin arithmetic as _slice_partial."""
    lo, hi = rng
    under, over = int(k[v < lo].sum()), int(k[v > hi].sum())
    inside = (v >= lo) & (v <= hi)
    t = (v[inside] - lo) * (bins / (hi - lo) if hi > lo else 0.0)
    idx = np.minimum(t.astype(np.intp), bins - 1)
    return np.bincount(idx, weights=k[inside], minlength=bins).astype(np.int64), under, over


def _fused_partial(flat: np.ndarray, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    dt = flat.dtype  # integer or float: block_partial sends booleans and complex numbers the generic way
    if dt.kind == "f" and dt.itemsize == 2:
        flat, dt = flat.astype(np.float32), np.dtype(np.float32)
    if not dt.isnative:
        flat, dt = flat.astype(dt.newbyteorder("=")), dt.newbyteorder("=")
    if dt.kind in "iu" and dt.itemsize <= 2 and flat.size >= _COUNT_MIN:
        return _count_partial(flat, fill, bins, rng)
    if _use_c():
        return _c_partial(flat, fill, bins, rng)
    if bins > _PAIR_BINS:  # pair tables grow with bins squared: the generic slices instead
        return merge_all([slice_partial(flat[i:i + _SLICE], np, fill, bins, rng)
                          for i in range(0, max(flat.size, 1), _SLICE)])
    return _float_partial(flat, fill, bins, rng)


def block_partial(block: Any, fill: Any = None, bins: int = 64, rng: tuple[float, float] | None = None) -> Partial:
    """Partial statistics of one block (numpy, or any array library registered with
    :data:`metaextract_dask.dispatch.summarise`: cupy on first use).

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
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, not {bins!r}")
    flat = block.reshape(-1)
    if flat.dtype.kind not in "biufc":
        raise TypeError(f"cannot profile dtype {flat.dtype}")
    return summarise(flat, fill, int(bins), rng)


@summarise.register(np.ndarray)
def _summarise_numpy(flat: np.ndarray, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    """numpy blocks: the compiled kernels where they apply, else array functions in cache-sized slices."""
    if (HAVE_C or HAVE_NUMBA) and flat.dtype.kind in "iuf":
        return _fused_partial(np.ascontiguousarray(flat), fill, bins, rng)
    if flat.dtype.kind == "c":  # complex: statistics of the magnitude
        flat = np.abs(flat)
    return merge_all([slice_partial(flat[i:i + _SLICE], np, fill, bins, rng)
                      for i in range(0, max(flat.size, 1), _SLICE)])


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


def data_range(p: Partial) -> tuple[float, float]:
    """The histogram range of data without a known range: its min and max (one value: a unit-wide range)."""
    lo, hi = p.min, p.max
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def sketch_histogram(p: Partial, bins: int) -> tuple[float, float]:
    """Give `p` (a merged partial without a histogram) the equal-width histogram over its data range derived
    from its sketch (:func:`metaextract_dask.sketch.histogram`: approximate, ``hist_exact`` False); returns
    the range."""
    lo, hi = data_range(p)
    if p.sketch is None:
        raise ValueError("partial has no sketch")
    p.hist, p.under, p.over = histogram(p.sketch, bins, lo, hi, p.min, p.max), 0, 0
    return lo, hi


def finalize(p: Partial, *, scale: float | None = None, offset: float | None = None,
             hist_exact: bool = True) -> dict[str, Any]:
    """Columns of the ``stats`` table from a merged partial (raw units, plus physical units when packed).

    `hist_exact` says how the partial's histogram was made: binned value by value (True) or derived from the
    sketch (False); it is null without a histogram. The quantile columns come from the sketch.
    """
    std = math.sqrt(p.m2 / p.n) if p.n else None
    out: dict[str, Any] = {
        "count": p.count, "valid_count": p.n, "nan_count": p.nan, "inf_count": p.inf, "fill_count": p.fill,
        "min": p.min if p.n else None, "max": p.max if p.n else None,
        "mean": p.mean if p.n else None, "std": std,
        "hist_counts": p.hist.tolist() if p.hist is not None else None,
        "hist_underflow": p.under if p.hist is not None else None,
        "hist_overflow": p.over if p.hist is not None else None,
        "hist_exact": bool(hist_exact) if p.hist is not None else None,
    }
    packed = scale is not None or offset is not None
    if p.n and p.sketch is not None:
        out.update(quantiles(p.sketch, p.min, p.max, scale=scale if packed else None,
                             offset=offset if packed else None))
    if packed and p.n:
        s, o = (1.0 if scale is None else float(scale)), (0.0 if offset is None else float(offset))
        lo, hi = p.min * s + o, p.max * s + o
        out.update(phys_min=min(lo, hi), phys_max=max(lo, hi), phys_mean=p.mean * s + o,
                   phys_std=std * abs(s) if std is not None else None)
    return out
