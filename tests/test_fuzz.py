"""Fuzz: the sample tree plus truncated, bit-flipped and zero-filled copies of every file and of every Zarr
chunk, scanned and profiled by the CLI in one run. Every input is exactly one row, nothing hangs past the
file timeout, and the run exits 0."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

_DAMAGES = ("truncated", "flipped", "zeroed")


def _damage(data: bytes, how: str, rng: random.Random) -> bytes:
    if not data:
        return data
    if how == "truncated":
        return data[: rng.randrange(len(data))]
    if how == "zeroed":  # a run of zeros, as a block lost on disk
        start = rng.randrange(len(data))
        length = min(len(data) - start, max(1, len(data) // 4))
        return data[:start] + bytes(length) + data[start + length:]
    out = bytearray(data)
    for _ in range(max(1, len(data) // 500)):
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def _is_chunk(store: Path, path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "zarr.json"


def _fuzz_tree(src: Path, dst: Path) -> list[str]:
    """Copy `src` with damaged variants next to each input; return every input (file or Zarr store)."""
    rng = random.Random(20261201)
    inputs: list[str] = []
    shutil.copytree(src, dst / "orig")
    (dst / "orig" / ".metaextract-ignore").unlink(missing_ok=True)  # every file is input here, manifest too
    for entry in sorted((dst / "orig").rglob("*")):
        rel = entry.relative_to(dst / "orig")
        if any(part.endswith(".zarr") for part in rel.parts[:-1]):
            continue  # inside a store: handled with the store
        if entry.is_dir() and entry.name.endswith(".zarr"):
            inputs.append(str(entry))
            for how in _DAMAGES:
                copy = dst / how / rel
                shutil.copytree(entry, copy)
                for chunk in sorted(p for p in copy.rglob("*") if p.is_file() and _is_chunk(copy, p)):
                    chunk.write_bytes(_damage(chunk.read_bytes(), how, rng))
                inputs.append(str(copy))
        elif entry.is_file():
            inputs.append(str(entry))
            data = entry.read_bytes()
            for how in _DAMAGES:
                copy = dst / how / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(_damage(data, how, rng))
                inputs.append(str(copy))
    return inputs


def test_fuzzed_tree_scans_and_profiles(sample_tree: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    import pandas as pd

    root, _ = sample_tree
    inputs = _fuzz_tree(root, tmp_path / "fuzz")
    catalog = tmp_path / "cat"
    timeout = 20
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "metaextract_dask.cli", "scan", str(tmp_path / "fuzz"), "-o", str(catalog),
         "--profile", "--workers", "2", "--file-timeout", str(timeout), "--no-progress",
         "--dashboard-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = pd.read_parquet(catalog / "files")
    assert files["path"].is_unique
    assert sorted(files["path"]) == sorted(inputs)
    assert set(files["status"]) <= {"ok", "error"}
    stats = pd.read_parquet(catalog / "stats")
    arrays = pd.read_parquet(catalog / "arrays")
    ok_paths = set(files.loc[files["status"] == "ok", "path"])
    described = arrays[arrays["path"].isin(ok_paths)]
    assert len(stats) == len(described)  # one stats row per catalogued array: ok, error or skipped
    assert set(stats["status"]) <= {"ok", "error", "skipped"}
    assert (stats.loc[stats["status"] == "error", "error_type"].notna()).all()
    # the originals are intact, so their arrays profile as before
    originals = stats[stats["path"].str.startswith(str(tmp_path / "fuzz" / "orig"))]
    assert (originals["status"] != "error").all(), originals[originals["status"] == "error"]
    assert elapsed < 300
