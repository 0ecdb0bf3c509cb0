"""De-identification throughput: ``metaextract-dask deid`` on 2 workers against dicognito, in one run,
interleaved, every timed run writing a fresh output directory (checked to hold every file).

Sides, each timed `--repeat` times in turn (best and median files/s reported):

* **deid (warm cluster)**: ``metaextract_dask.deid.run.deidentify`` on an already started 2-worker
  ``LocalCluster`` (as in a notebook or a long-running pipeline);
* **deid CLI (cold)**: ``metaextract-dask deid`` as a command, starting its own embedded cluster each time;
* **dicognito**: ``python -m dicognito --output-directory OUT SRC`` as it runs (single process).

The inputs: small CT objects (16x16 pixels) written by pydicom, with fictitious identifiers at the top level,
in nested sequences and in a private block (``sample._dicom_write(..., phi=True)``).

    python benchmarks/bench_deid.py [--files 5000] [--workers 2] [--repeat 3] [--data bench-data/deid]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(root: Path, n: int) -> Path:
    from metaextract_dask.sample import _CT_STORAGE, _dicom_write

    marker = root / f".complete-{n}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        tags = {"PatientName": f"Bench^Patient{i % 97}", "PatientID": f"FAKE-B{i % 97:04d}",
                "PatientBirthDate": "19700101", "StudyInstanceUID": f"1.2.826.0.1.3680043.10.1.{i // 50}",
                "SeriesInstanceUID": f"1.2.826.0.1.3680043.10.2.{i // 10}", "StudyDate": "20240115",
                "StudyTime": "093000", "AccessionNumber": f"ACC-{i // 50:06d}", "Modality": "CT",
                "InstitutionName": "Fictitious General Hospital", "ReferringPhysicianName": "Example^Referrer",
                "StudyDescription": "CT CHEST", "InstanceNumber": i % 10 + 1, "PixelSpacing": [0.7, 0.7],
                "ImagePositionPatient": [0.0, 0.0, float(i % 10) * 2.5], "Rows": 16, "Columns": 16}
        _dicom_write(root / f"s{i // 500:03d}" / f"f{i:06d}.dcm", sop_class=_CT_STORAGE,
                     sop_instance=f"1.2.826.0.1.3680043.10.3.{i}", tags=tags,
                     pixels=rng.integers(0, 2000, (16, 16), dtype=np.int16), phi=True)
    marker.touch()
    return root


def count(out: Path) -> int:
    return sum(1 for p in out.rglob("*") if p.is_file() and ".metaextract-deid" not in p.parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="bench-data/deid")
    args = ap.parse_args()

    from metaextract_dask.cluster import connect
    from metaextract_dask.deid import keygen
    from metaextract_dask.deid.run import deidentify

    data = make_data(Path(args.data), args.files)
    for p in data.rglob("*.dcm"):  # warm the page cache: both sides read from memory
        p.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    key = keygen(tmp / "bench.key")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    times: dict[str, list[float]] = {"deid (warm cluster)": [], "deid CLI (cold)": [], "dicognito": []}
    with connect(n_workers=args.workers) as client:
        client.run(lambda: __import__("pydicom"))  # imports are not part of the work
        for r in range(args.repeat):
            for side in times:
                out = tmp / f"{side.split()[0]}-{side.count('c')}-{r}"
                t0 = time.perf_counter()
                if side == "deid (warm cluster)":
                    deidentify([data], out, key=key, client=client)
                elif side == "deid CLI (cold)":
                    subprocess.run([sys.executable, "-m", "metaextract_dask.cli", "deid", str(data), "-o", str(out),
                                    "--key-file", str(key), "--workers", str(args.workers), "--no-progress"],
                                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                else:
                    subprocess.run([sys.executable, "-m", "dicognito", "--output-directory", str(out), "--quiet",
                                    str(data)], check=True, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                seconds = time.perf_counter() - t0
                n = count(out)
                if n != args.files:
                    raise SystemExit(f"{side}: wrote {n} files, expected {args.files}")
                times[side].append(seconds)
                print(f"run {r + 1} {side:<20} {seconds:7.2f} s  {args.files / seconds:7.0f} files/s", flush=True)
                shutil.rmtree(out)
    print(f"\n{args.files} DICOM files, {args.workers} workers, {os.cpu_count()} cores, best / median of "
          f"{args.repeat}:")
    ref = min(times["dicognito"])
    for side, ts in times.items():
        print(f"  {side:<20} {args.files / min(ts):7.0f} / {args.files / statistics.median(ts):7.0f} files/s"
              f"   {ref / min(ts):5.2f}x dicognito (best)")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
