"""The one-pass distribution sketch: keys, quantiles against numpy on many distributions and dtypes, merges in
any order, the histogram derived from it, and the same sketch from every path (C kernel, numba/numpy, GPU)."""

from __future__ import annotations

import math
from typing import Any

import dask.config
import numpy as np
import pytest

from helpers import assert_quantiles, assert_sketch_histogram
from metaextract_dask import sketch
from metaextract_dask.partials import merge_all, slice_partial
from metaextract_dask.stats import block_partial, finalize, sketch_histogram

RNG = np.random.default_rng(2026)


def _distributions() -> dict[str, np.ndarray]:
    n = 50_001
    heavy = RNG.standard_cauchy(n)
    return {
        "normal": RNG.normal(3, 2, n),
        "lognormal": RNG.lognormal(0, 4, n),
        "uniform": RNG.uniform(-1, 1, n),
        "negative": -RNG.lognormal(2, 1, n),
        "zeros": np.where(RNG.random(n) < 0.4, 0.0, RNG.normal(0, 1, n)),
        "signed zeros": np.where(RNG.random(n) < 0.5, -0.0, 0.0) + np.where(RNG.random(n) < 0.1, 1.5, 0.0),
        "cauchy": heavy,
        "pareto": RNG.pareto(0.7, n) * np.where(RNG.random(n) < 0.5, -1, 1),
        "constant": np.full(n, -7.25),
        "two values": np.where(RNG.random(n) < 0.3, 1e-300, 1e300),
        "subnormals": np.concatenate([RNG.uniform(-1, 1, 1000) * 2.2e-308, RNG.uniform(0, 1, 100) * 1e-320,
                                      [5e-324, -5e-324, 1e-310]]),
        "wide": np.ldexp(RNG.uniform(1, 2, n), RNG.integers(-1070, 1020, n)) * np.where(RNG.random(n) < 0.5, -1, 1),
        "single": np.array([42.0]),
        "integers": RNG.integers(-1000, 1000, n).astype(np.float64),
    }


DISTRIBUTIONS = _distributions()


def test_keys_of_c_and_numpy_agree_and_are_monotone() -> None:
    from metaextract_dask import _kernels

    x = np.concatenate(list(DISTRIBUTIONS.values()) + [np.array([np.finfo("f8").max, -np.finfo("f8").max,
                                                                  np.finfo("f8").tiny, 0.0, -0.0])])
    k = sketch.keys_of(x)
    order = np.argsort(x, kind="stable")
    assert (np.diff(k[order].astype(np.int64)) >= 0).all()  # monotone in the value
    assert np.abs(k).max() <= sketch.KMAX
    assert k[x == 0].tolist() == [0] * int((x == 0).sum())
    if _kernels is not None and hasattr(_kernels, "sketch_keys"):
        kc = np.empty(x.size, np.int32)
        _kernels.sketch_keys(x, kc)
        np.testing.assert_array_equal(kc, k)
    lo, hi, mid = sketch.bucket_bounds(k)
    inside = (lo <= x) & ((x < hi) | (hi == lo) | (x < 0))
    assert inside.all()
    nz = x != 0
    assert (np.abs(mid[nz] - x[nz]) <= 2.0 ** -8 * np.abs(x[nz])).all()  # the midpoint is within 2**-8


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_within_the_bound_of_numpys_order_statistic(name: str) -> None:
    x = DISTRIBUTIONS[name]
    p = block_partial(x)
    row = finalize(p)
    assert_quantiles(row, x, name)
    # the histogram over min..max from the same sketch: integer counts adding up to n, within the edge bound
    lo, hi = sketch_histogram(p, 64)
    assert_sketch_histogram(p.hist, x, 64, lo, hi, name)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                                   "float16", "float32", "float64", ">f8", ">i4"])
@pytest.mark.parametrize("size", [5, 1001, 70_000])
def test_every_dtype_quantiles_and_c_equals_reference(dtype: str, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every integer width and float16/32/64 (and big-endian): quantiles against numpy, and the C kernel's
    sketch equal to the numba/numpy path's (``metaextract.kernel: numba``) and to the array-function path's."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        x = RNG.normal(0, 50, size).astype(dt)
        if size > 10:
            x[::17], x[3], x[5] = np.nan, np.inf, -np.inf
    else:
        info = np.iinfo(dt)
        x = RNG.integers(info.min, info.max, size, dtype=np.int64 if dt.kind == "i" else np.uint64,
                         endpoint=True).astype(dt)
        if dt.itemsize == 8:  # values far from double precision's exact range as well
            x[:3] = [info.max, info.min, info.max - 1]
    fill = x[1] if dt.kind != "f" else None
    xf = x.astype(np.float64)
    valid = xf[np.isfinite(xf) & ((xf != float(fill)) if fill is not None else True)]
    p = block_partial(x, fill=fill)
    assert p.n == valid.size
    assert_quantiles(finalize(p), valid, dtype)
    with dask.config.set({"metaextract.kernel": "numba"}):
        q = block_partial(x, fill=fill)
    r = merge_all([slice_partial(x.astype(dt.newbyteorder("=")), np, fill, 64, None)])
    for other in (q, r):
        assert other.sketch[0].tolist() == p.sketch[0].tolist() and other.sketch[1].tolist() == p.sketch[1].tolist()


def test_nan_inf_and_fill_are_excluded() -> None:
    x = RNG.normal(10, 1, 100_000).astype("f4")
    x[::7], x[1::11], x[2::13] = np.nan, np.inf, -999.0
    x[3::101] = -np.inf
    p = block_partial(x, fill=-999.0)
    valid = x[np.isfinite(x) & (x != -999.0)].astype(np.float64)
    assert int(p.sketch[1].sum()) == valid.size == p.n
    assert_quantiles(finalize(p), valid)
    assert finalize(p)["p01"] > 5  # no fill value at the bottom


def test_merges_in_any_order_give_the_identical_sketch_and_quantiles() -> None:
    x = RNG.lognormal(1, 3, 200_000) * np.where(RNG.random(200_000) < 0.2, -1, 1)
    x[RNG.random(x.size) < 0.05] = 0.0
    parts = [block_partial(b) for b in np.array_split(x, 37)]
    whole = block_partial(x)
    expected = finalize(whole)
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(len(parts))
        merged = merge_all([parts[i] for i in order])
        assert merged.sketch[0].tolist() == whole.sketch[0].tolist()
        assert merged.sketch[1].tolist() == whole.sketch[1].tolist()
        got = finalize(merged)
        assert {k: got[k] for k in sketch.QUANTILES} == {k: expected[k] for k in sketch.QUANTILES}
        h1, h2 = merged, whole
        sketch_histogram(h1, 50)
        sketch_histogram(h2, 50)
        assert h1.hist.tolist() == h2.hist.tolist()
    assert_quantiles(expected, x)


def test_phys_quantiles_follow_scale_and_offset_with_negative_scale_mirrored() -> None:
    raw = RNG.integers(-3000, 3000, 100_000).astype("i2")
    valid = raw.astype(np.float64)
    for scale, offset in [(0.01, 1000.0), (-0.5, 3.0)]:
        row = finalize(block_partial(raw), scale=scale, offset=offset)
        assert_quantiles(row, valid)
        assert_quantiles(row, valid, prefix="phys_", scale=scale, offset=offset)
        phys = valid * scale + offset
        assert row["phys_p01"] <= row["phys_p50"] <= row["phys_p99"]
        assert row["phys_p50"] == pytest.approx(np.quantile(phys, 0.5, method="inverted_cdf"), rel=1e-2)
    assert "phys_p50" not in finalize(block_partial(raw))


def test_empty_and_all_invalid_blocks_have_no_quantiles() -> None:
    for x in (np.zeros(0, "f8"), np.full(10, np.nan), np.full(10, -9.0)):
        row = finalize(block_partial(x, fill=-9.0))
        assert row["valid_count"] == 0 and row.get("p50") is None


def test_quantiles_of_extremes_are_exact() -> None:
    x = RNG.normal(0, 1, 10_000)
    row = finalize(block_partial(x))
    # rank 0 and n - 1 are the exact min and max; the others stay inside min..max
    one = finalize(block_partial(np.array([1.0, 2.0])))
    assert (one["p01"], one["p50"], one["p99"]) == (1.0, 1.0, 2.0)
    assert x.min() <= row["p01"] <= row["p99"] <= x.max()


def test_sketch_histogram_of_a_constant_and_of_two_points() -> None:
    p = block_partial(np.full(1000, 3.5))
    lo, hi = sketch_histogram(p, 10)
    assert (lo, hi) == (3.0, 4.0) and p.hist.tolist() == [0] * 5 + [1000] + [0] * 4
    p = block_partial(np.array([0.0] * 30 + [8.0] * 70))
    sketch_histogram(p, 4)
    assert p.hist.tolist() == [30, 0, 0, 70]


@pytest.mark.gpu
def test_gpu_sketch_equals_cpu_sketch() -> None:
    """The CUDA kernels give the same keys, counts (so quantiles and sketch histograms) as the C kernel."""
    cupy = pytest.importorskip("cupy")
    from metaextract_dask import _cuda

    if not _cuda.kernels_available("float64"):
        pytest.skip("the fused CUDA kernels did not compile here")
    for name, x in DISTRIBUTIONS.items():
        for dt in ("f8", "f4", "i4", "i2", "u8"):
            if dt[0] in "iu" and not np.all(np.isfinite(x)):
                continue
            y = x.astype(dt) if dt[0] == "f" else np.clip(np.round(x), -30000, 30000).astype(dt)
            cpu = block_partial(y)
            gpu = block_partial(cupy.asarray(y))
            assert gpu.sketch[0].tolist() == cpu.sketch[0].tolist(), (name, dt)
            assert gpu.sketch[1].tolist() == cpu.sketch[1].tolist(), (name, dt)
            assert {k: v for k, v in finalize(gpu).items() if k.startswith("p")} == \
                {k: v for k, v in finalize(cpu).items() if k.startswith("p")}, (name, dt)
    assert math.isfinite(finalize(block_partial(cupy.asarray(DISTRIBUTIONS["normal"])))["p50"])


def _cuda_sketch_key_source() -> str:
    from metaextract_dask import _cuda

    src = _cuda._SOURCE
    start = src.index("__device__ __forceinline__ int sketch_key(double v)")
    end = src.index("\n}\n", start) + 3
    return src[start:end]


def test_cuda_sketch_key_equals_the_c_and_numpy_keys_on_the_host(tmp_path: Any) -> None:
    """The CUDA key function, compiled for the host (its two intrinsics replaced by their host equivalents),
    gives numpy's key for every value: the GPU sketch is the CPU's (see also the GPU test above)."""
    import ctypes
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    body = (_cuda_sketch_key_source().replace("__device__ __forceinline__ int sketch_key", "int sketch_key")
            .replace("__double_as_longlong(v)", "as_bits(v)").replace("__clzll((long long)a)", "__builtin_clzll(a)"))
    code = ("#include <stdint.h>\n#include <string.h>\n#define SK_BITS 7\ntypedef unsigned long long u64;\n"
            "static long long as_bits(double v) { long long b; memcpy(&b, &v, 8); return b; }\n" + body +
            "\nvoid keys(const double *x, int *k, long n) { for (long i = 0; i < n; i++) k[i] = sketch_key(x[i]); }\n")
    (tmp_path / "k.c").write_text(code)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp_path / "k.so"), str(tmp_path / "k.c")], check=True)
    lib = ctypes.CDLL(str(tmp_path / "k.so"))
    x = np.concatenate(list(DISTRIBUTIONS.values()) + [np.array([np.finfo("f8").max, -np.finfo("f8").tiny])])
    out = np.empty(x.size, np.int32)
    lib.keys(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_long(x.size))
    np.testing.assert_array_equal(out, sketch.keys_of(x))


@pytest.mark.slow
def test_cuda_source_compiles_with_nvcc(tmp_path: Any) -> None:
    """The fused kernels (with the sketch) compile for every dtype, as NVRTC would on a GPU worker."""
    import shutil
    import subprocess

    from metaextract_dask import _cuda

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    inst = "".join(
        f"template __global__ void pass1<{t}>(const {t}*, long long, int, {t}, u64*, double*);\n"
        f"template __global__ void pass2<{t}>(const {t}*, long long, int, {t}, double, int, double, double, double, "
        f"float, float, int, int, int, double*, u64*, u64*, int, u64*);\n" for t in sorted(set(_cuda._CTYPES.values())))
    (tmp_path / "k.cu").write_text(_cuda._SOURCE + inst)
    subprocess.run([nvcc, "-c", "--fmad=false", "-std=c++17", "-o", str(tmp_path / "k.o"), str(tmp_path / "k.cu")],
                   check=True, timeout=600)


@pytest.mark.parametrize("dtype", ["f4", "f8", "i1", "i2", "i4", "u4", "i8", "u8"])
@pytest.mark.parametrize("size", [3, 8, 9, 100_003])
def test_c_kernel_equals_numba_kernel_with_histogram_and_fill(dtype: str, size: int,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The C kernel (vector and scalar parts) against the numba kernels: counts, extremes, bins, sketch equal;
    moments to rounding; with and without a fill value and a histogram range."""
    dt = np.dtype(dtype)
    x = RNG.normal(-3, 40, size=size)
    if dt.kind == "f":
        x = x.astype(dt)
        if size > 8:
            x[::13], x[3], x[4], x[6::29] = np.nan, np.inf, -np.inf, -99
            x[7] = 100.0  # the top edge: the last bin
    else:
        x = np.clip(np.round(x), -120 if dt.kind == "i" else 0, 120).astype(dt)
        if size > 8:
            x[6::29] = 99
    for fill, rng_ in [(-99 if dt.kind == "f" else 99, (-50.0, 100.0)), (None, None), (12345.0, (-1e3, 1e3))]:
        c = block_partial(x, fill=fill, bins=24, rng=rng_)
        with dask.config.set({"metaextract.kernel": "numba"}):
            n = block_partial(x, fill=fill, bins=24, rng=rng_)
        assert (c.count, c.n, c.nan, c.inf, c.fill, c.under, c.over) == (n.count, n.n, n.nan, n.inf, n.fill,
                                                                          n.under, n.over), (fill, rng_)
        assert (c.min, c.max) == (n.min, n.max) or not c.n
        assert c.mean == pytest.approx(n.mean, rel=1e-12, abs=1e-12)
        assert c.m2 == pytest.approx(n.m2, rel=1e-10, abs=1e-10)
        assert (c.hist is None and n.hist is None) or c.hist.tolist() == n.hist.tolist()
        assert (c.sketch is None and n.sketch is None) or (c.sketch[0].tolist(), c.sketch[1].tolist()) == (
            n.sketch[0].tolist(), n.sketch[1].tolist())
