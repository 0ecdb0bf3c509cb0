"""Where one block's time goes on the GPU path, in one process: host read, host-to-device copy, reduction.

    python benchmarks/bench_gpu_block.py [--mib 128] [--repeat 5] [--threads 8]

For one float32 block of --mib MiB (normal values, 0.1% NaN, a fill value, a valid range): (1) a host
memcpy of the block (what reading it from the page cache costs), (2) `cupy.asarray` from pageable host
memory and (3) from pinned memory, (4) through the profile's pinned staging buffers (`_cuda.to_device`), then
pageable and staged copies from --threads threads at once (per block), (5) `block_partial` on the device
array with the fused CUDA kernels and with cupy's array-module path (every statistic, synchronised to the
host), (6) `block_partial` on the host array (the CPU kernel, one thread). Prints GB/s of each (best
of --repeat) and checks that the device and host partials agree. Needs cupy and a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from metaextract_dask import _cuda
from metaextract_dask._cuda import thread_stream, to_device
from metaextract_dask.stats import block_partial, finalize


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    import cupy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    n = args.mib * 2**20 // 4
    x = np.random.default_rng(0).normal(280, 15, size=n).astype("f4")
    x[::1000] = np.nan
    x[7::5000] = -999
    kw = {"fill": -999.0, "bins": 64, "rng": (200.0, 350.0)}
    host = np.empty_like(x)
    pinned_mem = cupy.cuda.alloc_pinned_memory(x.nbytes)
    pinned = np.frombuffer(pinned_mem, dtype=x.dtype, count=n)
    pinned[:] = x
    dev = cupy.asarray(x)
    def generic(d):  # cupy's array-module path, as before the fused kernels
        _cuda.FUSED = False
        try:
            return block_partial(d, **kw)
        finally:
            _cuda.FUSED = True

    cpu_p, gpu_p = finalize(block_partial(x, **kw)), finalize(block_partial(dev, **kw))
    for key in ("valid_count", "nan_count", "fill_count", "min", "max", "hist_counts"):
        assert cpu_p[key] == gpu_p[key], key
    assert abs(cpu_p["std"] - gpu_p["std"]) <= 1e-9 * cpu_p["std"]

    def h2d(src: np.ndarray) -> None:
        dev.set(src)
        cupy.cuda.Device().synchronize()

    def staged() -> None:
        with thread_stream():
            to_device([x], x.nbytes, x.dtype)
            thread_stream().synchronize()

    def threads(fn, k: int) -> float:  # k threads at once, each doing fn on its own: seconds per block
        t = best(lambda: list(ThreadPoolExecutor(k).map(lambda _: fn(), range(k))), args.repeat)
        return t / k

    rows = [
        ("host memcpy (page-cache read)", best(lambda: np.copyto(host, x), args.repeat)),
        ("H2D copy, pageable", best(lambda: h2d(x), args.repeat)),
        ("H2D copy, pinned", best(lambda: h2d(pinned), args.repeat)),
        ("H2D via pinned staging (to_device)", best(staged, args.repeat)),
        (f"H2D pageable, {args.threads} threads", threads(lambda: cupy.asarray(x), args.threads)),
        (f"H2D staged, {args.threads} threads", threads(staged, args.threads)),
        ("block_partial on GPU (fused kernels)", best(lambda: block_partial(dev, **kw), args.repeat)),
        ("block_partial on GPU (array module)", best(lambda: generic(dev), args.repeat)),
        ("block_partial on CPU (1 thread)", best(lambda: block_partial(x, **kw), args.repeat)),
    ]
    gb = x.nbytes / 1e9
    print(f"block: {args.mib} MiB float32 on {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}; "
          f"best of {args.repeat}")
    for label, t in rows:
        print(f"{label:34s}: {gb / t:7.2f} GB/s  ({t * 1e3:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
