"""Compressed single files: recognised by content, catalogued as the format inside, read (and profiled)
through decompression; bombs and truncated streams become error rows.

Third-party files: astropy's own test data ``dist_lookup.fits.gz`` and ``dss.14.29.56-62.41.05.fits.gz``
(installed with astropy), compared with what ``astropy.io.fits.open`` reads from them.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaextract_dask import open_catalog, scan
from metaextract_dask.compression import sniff_compression
from metaextract_dask.discover import discover
from metaextract_dask.extract import extract_batch


def _astropy_data() -> Path:
    import astropy.wcs

    return Path(astropy.wcs.__file__).parent / "tests" / "data"


ASTROPY_GZ = ("dist_lookup.fits.gz", "dss.14.29.56-62.41.05.fits.gz")


def _compress(data: bytes, kind: str) -> bytes:
    import zstandard

    return {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
            "zst": zstandard.ZstdCompressor().compress}[kind](data)


@pytest.fixture()
def packed(sample_tree: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, Path]:
    """Plain copies of sample files and compressed copies of the same files (one codec each)."""
    root, _ = sample_tree
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir()
    packed.mkdir()
    for rel, kind in (("hdf5/experiment.h5", "xz"), ("netcdf/climate_cf.nc", "bz2"),
                      ("netcdf/stations_classic.nc", "zst"), ("fits/field_image.fits", "gz"),
                      ("dicom/mr_brain.dcm", "gz")):
        data = (root / rel).read_bytes()
        name = rel.split("/")[-1]
        (plain / name).write_bytes(data)
        (packed / f"{name}.{kind}").write_bytes(_compress(data, kind))
    for name in ASTROPY_GZ:
        shutil.copy(_astropy_data() / name, packed / name)
    return plain, packed


def test_sniffing_is_by_content() -> None:
    assert sniff_compression(gzip.compress(b"x")) == "gzip"
    assert sniff_compression(bz2.compress(b"x")) == "bz2"
    assert sniff_compression(bz2.compress(b"")) == "bz2"
    assert sniff_compression(lzma.compress(b"x")) == "xz"
    assert sniff_compression(_compress(b"x", "zst")) == "zstd"
    assert sniff_compression(b"BZh9 not really") is None
    assert sniff_compression(b"\x89HDF\r\n\x1a\n") is None


def test_astropy_gzipped_fits_are_catalogued_as_fits(packed: tuple[Path, Path]) -> None:
    from astropy.io import fits

    _, root = packed
    tables = extract_batch(discover([root / n for n in ASTROPY_GZ]))
    files = tables["files"].to_pandas().set_index("path")
    hdus = tables["hdus"].to_pandas()
    for name in ASTROPY_GZ:
        path = str(root / name)
        row = files.loc[path]
        assert row["format"] == "fits" and row["status"] == "ok" and row["compression"] == "gzip"
        assert row["size_bytes"] == os.path.getsize(path)
        with gzip.open(path) as f:
            assert row["uncompressed_bytes"] == len(f.read())
        with fits.open(path) as hdul:  # what astropy itself reads from the compressed file
            mine = hdus[hdus["path"] == path].sort_values("index")
            assert len(mine) == len(hdul)
            for (_, h), theirs in zip(mine.iterrows(), hdul):
                n = theirs.header.get("NAXIS", 0)
                assert list(h["naxis"]) == [theirs.header[f"NAXIS{i}"] for i in range(1, n + 1)]
                assert h["bitpix"] == theirs.header["BITPIX"] and h["hdu_type"] == type(theirs).__name__
                if theirs.name not in ("", "PRIMARY"):
                    assert h["extname"] == theirs.name


def test_compressed_copies_give_the_rows_of_the_plain_files(packed: tuple[Path, Path]) -> None:
    plain_dir, packed_dir = packed
    plain = extract_batch(discover([plain_dir]))
    comp = extract_batch(discover([p for p in packed_dir.iterdir() if not p.name.startswith(ASTROPY_GZ)]))

    def by_name(table: pa.Table, strip: bool) -> pd.DataFrame:
        df = table.to_pandas()
        df["path"] = [os.path.basename(p).rsplit(".", 1)[0] if strip else os.path.basename(p) for p in df["path"]]
        keys = [k for k in ("path", "name", "index") if k in df]
        return df.sort_values(keys).reset_index(drop=True)

    cf, pf = by_name(comp["files"], True), by_name(plain["files"], False)
    expected = {"experiment.h5": "xz", "climate_cf.nc": "bz2", "stations_classic.nc": "zstd",
                "field_image.fits": "gzip", "mr_brain.dcm": "gzip"}
    assert dict(zip(cf["path"], cf["compression"])) == expected
    assert list(cf["uncompressed_bytes"]) == list(pf["size_bytes"])
    assert (cf["size_bytes"] < pf["size_bytes"]).all()
    same = ["path", "format", "format_version", "status", "n_arrays", "attrs", "groups"]
    pd.testing.assert_frame_equal(cf[same], pf[same])
    assert pf["compression"].isna().all() and pf["uncompressed_bytes"].isna().all()
    for name in ("arrays", "hdus", "dicom"):
        pd.testing.assert_frame_equal(by_name(comp[name], True), by_name(plain[name], False), obj=name)


def test_bombs_and_truncated_streams_are_error_rows(tmp_path: Path, sample_tree: tuple[Path, dict[str, Any]]
                                                     ) -> None:
    root, _ = sample_tree
    bomb = tmp_path / "bomb.fits.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:  # 64 MiB of zeros in ~64 KiB
        for _ in range(64):
            f.write(bytes(1 << 20))
    data = gzip.compress((root / "fits" / "field_image.fits").read_bytes())
    (tmp_path / "truncated.fits.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.h5.bz2").write_bytes(b"BZh91AY&SY" + os.urandom(300))
    (tmp_path / "lying.nc.gz").write_bytes((root / "netcdf" / "stations_classic.nc").read_bytes())  # not gzip
    (tmp_path / "empty.gz").write_bytes(gzip.compress(b""))
    with dask.config.set({"metaextract.scan.max-decompressed-bytes": "8MiB"}):
        tables = extract_batch(discover([tmp_path]))
    files = tables["files"].to_pandas().set_index("path")
    row = files.loc[str(bomb)]
    assert (row["status"], row["error_type"], row["compression"]) == ("error", "too_large", "gzip")
    assert "max-decompressed-bytes" in row["error_message"]
    row = files.loc[str(tmp_path / "truncated.fits.gz")]
    assert (row["status"], row["error_type"], row["format"]) == ("error", "EOFError", "fits")
    row = files.loc[str(tmp_path / "garbage.h5.bz2")]
    assert row["status"] == "error" and row["compression"] == "bz2"
    row = files.loc[str(tmp_path / "lying.nc.gz")]  # the name says gzip, the content is netCDF-3
    assert (row["status"], row["format"]) == ("ok", "netcdf3") and pd.isna(row["compression"])
    row = files.loc[str(tmp_path / "empty.gz")]
    assert (row["status"], row["format"], row["compression"], row["uncompressed_bytes"]) == ("ok", "binary",
                                                                                             "gzip", 0)
    assert not list((Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metaextract-dask"
                     / "tmp").glob("decompressed-*"))  # temporaries are removed


def test_compressed_files_scan_and_profile_on_the_cluster(packed: tuple[Path, Path], client: Any, tmp_path: Path
                                                          ) -> None:
    from metaextract_dask.profiler import profile

    plain_dir, packed_dir = packed
    with dask.config.set({"metaextract.remote.cache-dir": str(tmp_path / "cache")}):
        cat = scan([packed_dir], tmp_path / "cat", client=client)
        files = cat.to_pandas("files")
        assert (files["status"] == "ok").all() and files["compression"].notna().all()
        stats = profile(cat, client=client)
        ref = profile(scan([plain_dir], tmp_path / "plaincat", client=client), client=client)
    got = stats[~stats["path"].str.contains("dist_lookup|dss")].copy()
    got["path"] = [os.path.basename(p).rsplit(".", 1)[0] for p in got["path"]]
    ref = ref.copy()
    ref["path"] = [os.path.basename(p) for p in ref["path"]]
    cols = ["path", "name", "status", "count", "valid_count", "min", "max", "mean"]
    a = got[cols].sort_values(["path", "name"]).reset_index(drop=True)
    b = ref[cols].sort_values(["path", "name"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert (a["status"] == "ok").sum() >= 10
    dss = stats[stats["path"].str.endswith("dss.14.29.56-62.41.05.fits.gz")]
    from astropy.io import fits

    with fits.open(packed_dir / "dss.14.29.56-62.41.05.fits.gz", do_not_scale_image_data=True) as hdul:
        data = hdul[0].data
    row = dss[dss["name"] == "HDU0"].iloc[0]
    assert row["status"] == "ok" and row["min"] == data.min() and row["max"] == data.max()


def test_open_array_reads_through_decompression(packed: tuple[Path, Path], tmp_path: Path) -> None:
    import metaextract_dask as mx

    plain_dir, packed_dir = packed
    with dask.config.set({"metaextract.remote.cache-dir": str(tmp_path / "cache")}):
        a = mx.open_array(packed_dir / "climate_cf.nc.bz2", "/tas")
        b = mx.open_array(plain_dir / "climate_cf.nc", "/tas")
        assert a.to_dataset(name="t").identical(b.to_dataset(name="t"))
        img = mx.open_array(packed_dir / "dist_lookup.fits.gz", "HDU1")
    from astropy.io import fits

    with fits.open(packed_dir / "dist_lookup.fits.gz") as hdul:
        np.testing.assert_array_equal(img.values, hdul[1].data)


def test_catalogs_without_the_new_columns_still_open_and_rescan(sample_tree: tuple[Path, dict[str, Any]],
                                                                 tmp_path: Path, client: Any) -> None:
    """A catalog written before `compression`, `uncompressed_bytes` and `remote_version` existed."""
    root, _ = sample_tree
    out = tmp_path / "cat"
    scan([root / "netcdf"], out, client=client)
    for part in (out / "files").glob("part-*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["compression", "uncompressed_bytes", "remote_version"]), part)
    cat = open_catalog(out)
    files = cat.to_pandas("files")
    assert len(files) == 2 and files["compression"].isna().all() and files["remote_version"].isna().all()
    again = scan([root / "netcdf"], out, client=client)
    assert again.scan_summary["read"] == 0 and again.scan_summary["unchanged"] == 2


def test_sql_catalogs_without_the_new_columns_get_them(sample_tree: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                       client: Any) -> None:
    """An SQLite catalog created before the new `files` columns: the next scan adds them (nullable)."""
    import sqlite3

    root, _ = sample_tree
    db = tmp_path / "cat.db"
    scan([root / "netcdf"], f"sqlite:///{db}", client=client)
    with sqlite3.connect(db) as conn:
        for col in ("compression", "uncompressed_bytes", "remote_version"):
            conn.execute(f'ALTER TABLE files DROP COLUMN "{col}"')
    again = scan([root / "netcdf"], f"sqlite:///{db}", client=client)
    assert again.scan_summary["read"] == 0 and again.scan_summary["unchanged"] == 2
    with sqlite3.connect(db) as conn:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(files)")}
    assert {"compression", "uncompressed_bytes", "remote_version"} <= cols
    files = again.to_pandas("files")
    assert len(files) == 2 and files["compression"].isna().all()
