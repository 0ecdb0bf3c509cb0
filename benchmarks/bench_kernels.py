"""Per-block statistics kernels against numpy doing the same statistics, per dtype, in one process.

    python benchmarks/bench_kernels.py [--mib 128] [--repeat 3]

For each dtype, one in-memory block of --mib MiB (normal values, 0.1% NaN for floats, a fill value and a
valid range that leaves some values outside): metaextract's `block_partial` (the kernel `profile` runs per
block) against the numpy baseline computing the same things on the same block (count of NaN and fill,
min, max, mean, std, histogram with under/overflow). Prints GB/s of both and the ratio (best of --repeat).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from metaextract_dask.stats import _kernels, block_partial


def numpy_baseline(x: np.ndarray, fill: float, bins: int, rng: tuple[float, float]) -> tuple[float, ...]:
    xf = x.astype(np.float64)
    valid = xf[np.isfinite(xf) & (xf != fill)]
    inside = valid[(valid >= rng[0]) & (valid <= rng[1])]
    hist = np.histogram(inside, bins=bins, range=rng)[0]
    return (int(np.isnan(xf).sum()), valid.min(), valid.max(), valid.mean(), valid.std(), hist.sum())


def make(dtype: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        x = rng.normal(280.0, 15.0, size=n).astype(dtype)
        x[::1000] = np.nan
    elif np.dtype(dtype).kind == "u":
        x = rng.normal(1000, 300, size=n).clip(0, None).astype(dtype)
    else:
        x = rng.normal(0, 300, size=n).astype(dtype)
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    avx2 = _kernels is not None and _kernels.f32_block(np.zeros(8, "f4"), 0.0, 1.0, 1.0, 0.0, 1, None, 0.0,
                                                       np.zeros(7, np.int64)) is not None
    print(f"block {args.mib} MiB, best of {args.repeat}; float32 kernel: {'AVX2 C' if avx2 else 'numba'}")
    print(f"{'dtype':6s} {'metaextract':>12s} {'numpy':>10s} {'ratio':>7s}")
    for dtype in ("f4", "f8", "i2", "u2", "u1", "i4"):
        itemsize = np.dtype(dtype).itemsize
        x = make(dtype, (args.mib << 20) // itemsize)
        info_rng = (200.0, 350.0) if x.dtype.kind == "f" else (float(np.percentile(x[:10000], 1)),
                                                                float(np.percentile(x[:10000], 99)))
        fill = -999.0
        block_partial(x[:1000], fill=fill, bins=64, rng=info_rng)  # compile
        ours, base = [], []
        for _ in range(args.repeat):  # interleaved: machine noise hits both sides alike
            t0 = time.perf_counter()
            block_partial(x, fill=fill, bins=64, rng=info_rng)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            numpy_baseline(x, fill, 64, info_rng)
            base.append(time.perf_counter() - t0)
        gb = x.nbytes / 1e9
        print(f"{dtype:6s} {gb / min(ours):9.2f} GB/s {gb / min(base):7.2f} GB/s {min(base) / min(ours):6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
