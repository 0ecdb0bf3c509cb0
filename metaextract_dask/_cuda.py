"""Fused CUDA kernels for the statistics of one block already in GPU memory (cupy).

Two kernels, two passes over device memory (cheap next to the host-to-device copy that brought the block):
the first counts fill / NaN / inf / valid elements and takes the sum, min and max of the valid ones; the
second, given the mean, takes the sum of squared deviations (the exact two-pass variance), the histogram
(per-thread-block counters in shared memory) and the distribution sketch (:mod:`metaextract_dask.sketch`:
global counters over the key range of the block's min..max, known from the first pass). No temporaries the size of the block are allocated, where the
array-module path (:func:`metaextract_dask.partials.slice_partial`) makes several float64 copies, and the host
waits on the device twice per block instead of a dozen times.

Values are classified and binned exactly as the CPU paths do: the fill value as :func:`partials.native_fill`
gives it, float32 data binned in float32 over bounds rounded inwards (:func:`partials.f32_range`), everything
else in float64, and no fused multiply-add (``--fmad=false``), so counts, min, max and histograms equal the
CPU's bit for bit and the moments agree to rounding. The sketch key (``sketch_key`` below) is the C kernel's
function line for line: integer arithmetic on the bits of the value converted to double (``(double)v`` rounds
to nearest on both sides), so GPU and CPU sketches, quantiles and sketch histograms are equal.

Importing this module registers :func:`summarise_cupy` for cupy arrays with
:data:`metaextract_dask.dispatch.summarise` (the dispatcher imports it on the first cupy block).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from metaextract_dask.dispatch import summarise
from metaextract_dask.partials import Partial, f32_range, merge_all, native_fill, slice_partial
from metaextract_dask.sketch import keys_of

__all__ = ["fused_partial", "summarise_cupy", "kernels_available", "to_device", "thread_stream", "release",
           "FUSED"]

#: cupy blocks go through the fused kernels where they compile (False: the array-module path, as tests compare).
FUSED = True

_STAGE = 8 << 20  # bytes per pinned staging buffer (two per thread)
_NT = 256  # threads per block (a multiple of the warp size; the reductions below assume it)
_SHARED_BINS = 8192  # at most this many bins are counted in shared memory (32 KiB); more go to global atomics

_CTYPES = {
    np.dtype("int8"): "signed char", np.dtype("uint8"): "unsigned char",
    np.dtype("int16"): "short", np.dtype("uint16"): "unsigned short",
    np.dtype("int32"): "int", np.dtype("uint32"): "unsigned int",
    np.dtype("int64"): "long long", np.dtype("uint64"): "unsigned long long",
    np.dtype("float32"): "float", np.dtype("float64"): "double",
}

_SOURCE = r"""
#define NT 256
#define SK_BITS 7
typedef unsigned long long u64;

// The sketch key of a finite double (as _kernels.c sketch_key and sketch.keys_of): 0 for +-0; else the
// exponent field and top SK_BITS mantissa bits, shifted by 52 << SK_BITS (subnormals normalised by their
// leading bit); negated for negative values.
__device__ __forceinline__ int sketch_key(double v) {
    u64 b = (u64)__double_as_longlong(v);
    u64 a = b & 0x7fffffffffffffffULL;
    int k;
    if (a >= 0x0010000000000000ULL) {
        k = (int)(a >> (52 - SK_BITS)) + (52 << SK_BITS);
    } else if (a == 0) {
        return 0;
    } else {
        int p = 63 - __clzll((long long)a);  // leading bit, 0..51
        u64 f = (a << (52 - p)) & 0x000fffffffffffffULL;
        k = ((p + 1) << SK_BITS) | (int)(f >> (52 - SK_BITS));
    }
    int sg = -(int)(b >> 63);
    return (k ^ sg) - sg;
}

__device__ __forceinline__ double inf_d() { return __longlong_as_double(0x7ff0000000000000LL); }

// Block-wide reduction with `op`: warp shuffles, then the first warp over the warps' results
// (blockDim.x == NT). The result is valid in thread 0.
struct Sum { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Min { __device__ double operator()(double a, double b) const { return fmin(a, b); } };
struct Max { __device__ double operator()(double a, double b) const { return fmax(a, b); } };

template <typename T, typename Op>
__device__ T block_reduce(T v, T identity, T* sh, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    v = threadIdx.x < NT / 32 ? sh[threadIdx.x] : identity;
    if (threadIdx.x < 32) for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    __syncthreads();  // `sh` is free for the next reduction
    return v;
}

// Pass 1: per thread block, counts {nan, inf, fill, valid} and {sum, min, max} of the valid values.
template <typename T>
__global__ void __launch_bounds__(NT) pass1(const T* __restrict__ x, long long size, int has_fill, T fill,
                                            u64* __restrict__ counts, double* __restrict__ sums) {
    __shared__ double shd[NT / 32];
    __shared__ u64 shu[NT / 32];
    u64 nnan = 0, ninf = 0, nfill = 0, nvalid = 0;
    double s = 0.0, mn = inf_d(), mx = -inf_d();
    for (long long i = (long long)blockIdx.x * NT + threadIdx.x; i < size; i += (long long)gridDim.x * NT) {
        T v = x[i];
        if (has_fill && v == fill) { nfill++; continue; }
        double d = (double)v;
        if (!isfinite(d)) { if (isnan(d)) nnan++; else ninf++; continue; }
        nvalid++;
        s += d;
        mn = fmin(mn, d);
        mx = fmax(mx, d);
    }
    nnan = block_reduce(nnan, 0ull, shu, Sum());
    ninf = block_reduce(ninf, 0ull, shu, Sum());
    nfill = block_reduce(nfill, 0ull, shu, Sum());
    nvalid = block_reduce(nvalid, 0ull, shu, Sum());
    s = block_reduce(s, 0.0, shd, Sum());
    mn = block_reduce(mn, inf_d(), shd, Min());
    mx = block_reduce(mx, -inf_d(), shd, Max());
    if (threadIdx.x == 0) {
        u64* c = counts + 4 * blockIdx.x;
        c[0] = nnan; c[1] = ninf; c[2] = nfill; c[3] = nvalid;
        double* r = sums + 3 * blockIdx.x;
        r[0] = s; r[1] = mn; r[2] = mx;
    }
}

// Pass 2: per thread block, the sum of squared deviations from `mean` and {under, over}; the histogram is
// added to `hist` (shared-memory counters when `shared_bins`, else global atomics). Binning as numpy's
// (x - lo) * scale truncated, float32 data in float32 arithmetic (`f32`).
template <typename T>
__global__ void __launch_bounds__(NT) pass2(const T* __restrict__ x, long long size, int has_fill, T fill,
                                            double mean, int has_rng, double lo, double hi, double scale,
                                            float lo32, float scale32, int f32, int bins, int shared_bins,
                                            double* __restrict__ m2, u64* __restrict__ outside,
                                            u64* __restrict__ hist, int kmin, u64* __restrict__ sk) {
    extern __shared__ unsigned int shh[];
    __shared__ double shd[NT / 32];
    __shared__ u64 shu[NT / 32];
    if (shared_bins) {
        for (int k = threadIdx.x; k < bins; k += NT) shh[k] = 0u;
        __syncthreads();
    }
    double acc = 0.0;
    u64 under = 0, over = 0;
    for (long long i = (long long)blockIdx.x * NT + threadIdx.x; i < size; i += (long long)gridDim.x * NT) {
        T v = x[i];
        if (has_fill && v == fill) continue;
        double d = (double)v;
        if (!isfinite(d)) continue;
        double dev = d - mean;
        acc += dev * dev;
        atomicAdd(&sk[sketch_key(d) - kmin], 1ull);  // keys of min..max: kmin .. kmin + span - 1
        if (!has_rng) continue;
        if (d < lo) { under++; continue; }
        if (d > hi) { over++; continue; }
        long long k;
        if (f32) {
            float t = ((float)v - lo32) * scale32;
            t = fminf(fmaxf(t, 0.0f), (float)(bins - 1));
            k = (long long)t;
        } else {
            k = (long long)((d - lo) * scale);
        }
        if (k > bins - 1) k = bins - 1;
        if (shared_bins) atomicAdd(&shh[k], 1u);
        else atomicAdd(&hist[k], 1ull);
    }
    acc = block_reduce(acc, 0.0, shd, Sum());
    under = block_reduce(under, 0ull, shu, Sum());
    over = block_reduce(over, 0ull, shu, Sum());
    if (threadIdx.x == 0) {
        m2[blockIdx.x] = acc;
        outside[2 * blockIdx.x] = under;
        outside[2 * blockIdx.x + 1] = over;
    }
    if (shared_bins) {
        __syncthreads();
        for (int k = threadIdx.x; k < bins; k += NT)
            if (shh[k]) atomicAdd(&hist[k], (u64)shh[k]);
    }
}
"""

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


def _module(ctype: str = "float") -> Any:
    """The kernels for C type `ctype`, compiled on first use in this process (cupy also caches the binary on
    disk), or None if NVRTC failed; then the array-module path is used."""
    with _LOCK:
        if ctype not in _STATE:
            import cupy

            names = [f"pass1<{ctype}>", f"pass2<{ctype}>"]
            try:
                mod = cupy.RawModule(code=_SOURCE, options=("--fmad=false", "-std=c++17"), name_expressions=names)
                mod.get_function(names[0])  # compiles now, so a failure shows here, once
                props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
                _STATE["grid"] = 4 * int(props["multiProcessorCount"])
                _STATE[ctype] = mod
            except Exception as exc:  # no NVRTC, or an unsupported device
                _STATE[ctype], _STATE["error"] = None, f"{type(exc).__name__}: {exc}"
                logging.getLogger(__name__).warning(
                    "fused CUDA kernels for %s unavailable (%s); cupy's array functions are used instead",
                    ctype, _STATE["error"])
        return _STATE[ctype]


def kernels_available(dtype: Any = "float32") -> bool:
    """True when the fused kernels for `dtype` compiled for this process's current GPU."""
    dt = np.dtype(dtype)
    return dt in _CTYPES and _module(_CTYPES[dt]) is not None


def fused_partial(flat: Any, fill: Any, bins: int, rng: tuple[float, float] | None) -> Any:
    """The :class:`~metaextract_dask.partials.Partial` of a contiguous 1-D cupy array of a dtype in
    ``_CTYPES``, or None when the kernels are unavailable (the caller then uses the array-module path)."""
    import cupy


    dt = np.dtype(flat.dtype)
    mod = _module(_CTYPES[dt]) if dt in _CTYPES else None
    if mod is None:
        return None
    ctype, size = _CTYPES[dt], int(flat.size)
    p = Partial(count=size)
    if not size:
        return p
    native = native_fill(dt, fill)
    fill_arg = native if native is not None else dt.type(0)
    has_fill = np.int32(native is not None)
    grid = max(1, min(_STATE["grid"], -(-size // _NT)))
    counts = cupy.empty(4 * grid, dtype=np.uint64)
    sums = cupy.empty(3 * grid, dtype=np.float64)
    mod.get_function(f"pass1<{ctype}>")((grid,), (_NT,), (flat, np.int64(size), has_fill, fill_arg, counts, sums))
    c = counts.get().reshape(grid, 4).sum(axis=0, dtype=np.uint64)
    r = sums.get().reshape(grid, 3)
    p.nan, p.inf, p.fill, p.n = (int(v) for v in c)
    if not p.n:
        return p
    p.min, p.max = float(r[:, 1].min()), float(r[:, 2].max())
    p.mean = float(r[:, 0].sum()) / p.n
    lo, hi = rng if rng is not None else (0.0, 0.0)
    lo32, _, scale32 = f32_range(lo, hi, bins)
    shared = bins <= _SHARED_BINS
    m2 = cupy.empty(grid, dtype=np.float64)
    outside = cupy.empty(2 * grid, dtype=np.uint64)
    hist = cupy.zeros(max(bins, 1), dtype=np.uint64)
    kmin, kmax = (int(k) for k in keys_of(np.array([p.min, p.max])))  # keys are monotone: every key in between
    sk = cupy.zeros(kmax - kmin + 1, dtype=np.uint64)
    args = (flat, np.int64(size), has_fill, fill_arg, np.float64(p.mean), np.int32(rng is not None),
            np.float64(lo), np.float64(hi), np.float64(bins / (hi - lo) if hi > lo else 0.0), lo32, scale32,
            np.int32(dt == np.float32), np.int32(bins), np.int32(shared), m2, outside, hist, np.int32(kmin), sk)
    mod.get_function(f"pass2<{ctype}>")((grid,), (_NT,), args, shared_mem=4 * bins if shared else 0)
    p.m2 = float(m2.get().sum())
    nz = cupy.flatnonzero(sk)
    p.sketch = ((nz.get() + kmin).astype(np.int32), sk[nz].get().astype(np.int64))
    if rng is not None:
        o = outside.get().reshape(grid, 2).sum(axis=0, dtype=np.uint64)
        p.under, p.over = int(o[0]), int(o[1])
        p.hist = hist.get().astype(np.int64)
    return p


def summarise_cupy(flat: Any, fill: Any, bins: int, rng: tuple[float, float] | None) -> Partial:
    """The partial of a 1-D cupy block: the fused kernels where they compiled, else cupy's array functions on
    the whole block at once (kernel launches and host syncs per slice would cost more than they save)."""
    import cupy

    if flat.dtype.kind == "c":  # complex: statistics of the magnitude
        flat = cupy.abs(flat)
    if FUSED:
        # bool counts as 0/1 and float16 is binned in float64 on every path
        wide = {"b": np.uint8, "f": np.float64}.get(flat.dtype.kind) if flat.dtype.itemsize < 4 else None
        p = fused_partial(cupy.ascontiguousarray(flat.astype(wide) if wide else flat), fill, bins, rng)
        if p is not None:
            return p
    return merge_all([slice_partial(flat, cupy, fill, bins, rng)])


def _register() -> None:
    try:
        import cupy
    except ImportError:  # importable without cupy (to ask kernels_available, say); nothing to register
        return
    summarise.register(cupy.ndarray, summarise_cupy)


_register()


# Per worker thread: a CUDA stream (so that one thread's copies overlap another's kernels) and two pinned
# staging buffers. A copy from pageable memory is staged by the driver through its own buffer and runs at
# a fraction of the bus speed; here the thread copies into page-locked memory (a plain memcpy that runs in
# parallel across threads) while the previous slice crosses the bus.
_THREADS: dict[int, dict[str, Any]] = {}


def _thread_state() -> dict[str, Any]:
    import cupy

    key = threading.get_ident()
    with _LOCK:
        st = _THREADS.get(key)
    if st is None:
        bufs = [cupy.cuda.alloc_pinned_memory(_STAGE) for _ in range(2)]
        st = {"stream": cupy.cuda.Stream(non_blocking=True), "pinned": bufs,
              "views": [np.frombuffer(b, dtype=np.uint8, count=_STAGE) for b in bufs],
              "events": [None, None]}
        with _LOCK:
            _THREADS[key] = st
    return st


def thread_stream() -> Any:
    """This thread's CUDA stream (use it as a context: kernels and copies of the block go on it)."""
    return _thread_state()["stream"]


def to_device(pieces: Any, nbytes: int, dtype: np.dtype) -> Any:
    """Copy host arrays (`pieces`, consumed in order, each used only until the next is asked for) into one
    new flat device array of `dtype`, through this thread's pinned buffers on this thread's stream."""
    import cupy

    st = _thread_state()
    stream, views, events = st["stream"], st["views"], st["events"]
    out = cupy.empty(nbytes, dtype=np.uint8)
    pos, turn = 0, 0
    for piece in pieces:
        src = np.ascontiguousarray(piece).reshape(-1).view(np.uint8)
        for start in range(0, src.size, _STAGE):
            part = src[start:start + _STAGE]
            if events[turn] is not None:
                events[turn].synchronize()  # the copy that last used this buffer has left it
            np.copyto(views[turn][:part.size], part)
            (out.data + pos).copy_from_host_async(views[turn].ctypes.data, part.size, stream)
            ev = cupy.cuda.Event(block=False, disable_timing=True)
            ev.record(stream)
            events[turn] = ev
            pos += part.size
            turn ^= 1
    if cupy.cuda.get_current_stream().ptr != stream.ptr:
        stream.synchronize()  # the caller's kernels would not be ordered after these copies
    if pos != nbytes:
        out = out[:pos]
    return out.view(dtype)


def release() -> None:
    """Free this process's staging buffers, streams and cached device memory (after a profile)."""
    import cupy

    with _LOCK:
        states = list(_THREADS.values())
        _THREADS.clear()
    for st in states:
        st["stream"].synchronize()
    states.clear()
    cupy.get_default_memory_pool().free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()
