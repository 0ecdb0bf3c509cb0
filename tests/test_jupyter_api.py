"""What a Jupyter or scripting user touches: lazy extraction, progress, table dtypes, reprs, include/exclude."""

from __future__ import annotations

import io
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import dask
import pandas as pd
import pytest

import metaextract_dask as mx
from metaextract_dask.discover import IGNORE_FILE, PathFilter, discover
from metaextract_dask.progress import Progress

COMPARE = ["path", "format", "format_version", "size_bytes", "status", "error_type", "n_arrays", "attrs"]


def _rel(paths: Any, root: Path) -> list[str]:
    return sorted(os.path.relpath(p, root) for p in paths)


def test_module_dir_lists_the_lazy_names() -> None:
    names = dir(mx)
    for name in ("open_array", "open_arrays", "open_dicom_series", "open_catalog", "profile", "extract",
                 "write_report", "start_client", "ProfileResult"):
        assert name in names and name in mx.__all__
        assert callable(getattr(mx, name))
    assert mx.extract.__module__ == "metaextract_dask.lazy"  # the function, not the worker module


def test_package_imports_its_api_lazily_and_keeps_function_names() -> None:
    """`import metaextract_dask` loads neither dask nor pandas nor pyarrow (the CLI's --help pays for argparse
    only); importing the submodules named like functions (scan, extract)
    leaves mx.scan / mx.extract the functions."""
    import subprocess
    import sys

    code = ("import sys, metaextract_dask as mx; "
            "print(sorted(m for m in ('dask', 'pandas', 'pyarrow', 'distributed', 'h5py', 'xarray') "
            "if m in sys.modules)); "
            "import metaextract_dask.scan, metaextract_dask.extract, dask.config; "
            "print(mx.scan.__module__, mx.extract.__module__, type(mx.ScanSummary).__name__, "
            "dask.config.get('metaextract.scan.batch-max-files'), mx.config.get('scan.batch-max-files'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "metaextract_dask.scan metaextract_dask.lazy type 800 800"
    # dask imported first: the defaults are there as soon as the package is imported
    code = "import dask.config, metaextract_dask; print(dask.config.get('metaextract.scan.batch-max-files'))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "800"
    from metaextract_dask.discover import Batch, FileEntry
    import pickle

    batch = Batch([FileEntry("/a", 1, 2, False, "")])
    assert not isinstance(batch, (list, tuple))  # dask does not walk it looking for futures
    again = pickle.loads(pickle.dumps(batch))
    assert list(again) == list(batch) and len(again) == 1 and again[0].path == "/a"


def test_extract_is_lazy_and_equals_the_scanned_catalog(sample_tree: Any, catalog: Any, client: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # (`import metaextract_dask.extract as m` would give mx.extract, the lazy API's function)
    worker_module = sys.modules["metaextract_dask.extract"]
    root, _ = sample_tree
    calls: list[int] = []
    real = worker_module.extract_batch

    def counting(entries: Any, settings: Any = None, deidentify: Any = None, progress_interval: Any = None) -> Any:
        calls.append(len(entries))
        return real(entries, settings, deidentify, progress_interval)

    monkeypatch.setattr(worker_module, "extract_batch", counting)
    with dask.config.set({"metaextract.scan.batch-min-files": 2, "metaextract.scan.batch-max-files": 4}):
        ex = mx.extract(root, n_threads=2)
    assert calls == []  # building the frames read nothing
    assert set(ex) >= {"files", "arrays", "hdus", "dicom"} and ex.files is ex["files"]
    assert ex.files.npartitions == len(ex.batches) > 1  # one partition per batch
    assert sum(len(b) for b in ex.batches) == len(catalog.to_pandas("files"))
    files = ex.files.compute(scheduler="sync")  # in this process: the counter sees every batch
    assert sorted(calls) == sorted(len(b) for b in ex.batches)

    want = catalog.to_pandas("files")[COMPARE].sort_values("path").reset_index(drop=True)
    got = files[COMPARE].sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert str(files["n_arrays"].dtype) == "int32[pyarrow]"

    # on the distributed cluster too, composed with other dask work
    arrays = client.compute(ex.arrays[["path", "name", "dtype", "nbytes"]], sync=True)
    want_arrays = catalog.to_pandas("arrays")[["path", "name", "dtype", "nbytes"]]
    key = ["path", "name"]
    pd.testing.assert_frame_equal(arrays.sort_values(key).reset_index(drop=True),
                                  want_arrays.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_integer_columns_stay_integers_and_head_does_not_warn(catalog: Any) -> None:
    files = catalog.to_pandas("files")
    assert str(files["n_arrays"].dtype) == "int32[pyarrow]"
    errors = files[files.status == "error"]
    assert len(errors) and errors["n_arrays"].isna().all()  # a null stays a null, not NaN in a float column
    ok = files[files.status == "ok"]
    assert all(isinstance(v, int) for v in ok["n_arrays"].tolist())
    assert catalog.files.npartitions == 1  # many small parts, one partition (metaextract.catalog.partition-rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = catalog.files.head()
    assert len(head) == 5
    arrays = catalog.arrays.compute(scheduler="sync")
    shapes = dict(zip(arrays["name"], arrays["shape"]))
    assert isinstance(next(iter(shapes.values())), list)  # lists stay lists in dask frames, not their text
    with dask.config.set({"metaextract.catalog.partition-rows": 3}):
        assert catalog.table("files").npartitions > 1
        assert len(catalog.table("files").compute(scheduler="sync")) == len(files)


def test_scan_summary_after_reopening_formats_and_renders(catalog: Any) -> None:
    reopened = mx.open_catalog(catalog.path)
    summary = reopened.scan_summary
    assert isinstance(summary, mx.ScanSummary)
    assert f"scanned {summary['files']} files" in summary.format()
    page = summary._repr_html_()
    assert "metaextract scan" in page and "OSError" in page and "truncated.h5" in page


def test_catalog_repr_html_has_formats_bytes_errors_and_live_dashboard(catalog: Any, sample_tree: Any,
                                                                       client: Any) -> None:
    from distributed import Client

    _, manifest = sample_tree
    s = catalog.summary()
    expected: dict[str, int] = {}
    for e in manifest["files"]:
        expected[e["format"]] = expected.get(e["format"], 0) + 1
    assert s["by_format"] == expected
    assert s["bytes"] == sum(s["bytes_by_format"].values()) == int(catalog.to_pandas("files")["size_bytes"].sum())
    assert s["error_types"] == {"OSError": 1} and s["error_examples"]["OSError"][0].endswith("truncated.h5")
    page = catalog._repr_html_()
    assert "metaextract catalog" in page and "truncated.h5" in page and "not profiled" in page
    assert f"<td style='padding:1px 8px;text-align:left'>{expected['dicom']}</td>" in page
    assert "dask dashboard" not in page  # no current client
    with Client(client.scheduler.address, security=client.security, set_as_default=True) as c:
        assert c.dashboard_link in catalog._repr_html_()


def test_profile_result_summary_and_repr(catalog: Any, client: Any, tmp_path: Path) -> None:
    cat = mx.open_catalog(shutil.copytree(catalog.path, tmp_path / "cat"))
    stats = mx.profile(cat, client=client, device="cpu")
    assert isinstance(stats, mx.ProfileResult)
    assert list(stats.columns[:3]) == ["path", "format", "name"]
    files = cat.to_pandas("files").set_index("path")["format"]
    assert (stats["format"] == files.loc[stats["path"]].to_numpy()).all()
    s = stats.summary()
    assert s["arrays"] == len(stats) and s["status"]["ok"] == (stats.status == "ok").sum()
    assert s["elements"] == int(stats["count"].fillna(0).sum())
    page = stats._repr_html_()
    assert "metaextract profile" in page and "<table" in page
    assert type(stats[stats.status == "ok"]) is pd.DataFrame  # derived frames are plain
    assert "profiled:" in cat._repr_html_()


def test_progress_log_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with dask.config.set({"metaextract.progress.log-interval": 0}):
        bar = Progress(4, True, stream=out)
        assert bar.mode == "log"
        for _ in range(4):
            bar.update(1)
        bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("scan: 1/4 files (25%)") and lines[-1].startswith("scan: 4/4 files (100%)")
    assert len(lines) == 4  # 1/4, 2/4, 3/4 and the final line
    bar = Progress(4, True, stream=io.StringIO())  # the default interval: only the final line
    bar.update(2)
    bar.close()


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    with Progress(3, True, stream=out) as bar:
        assert bar.mode == "bar"
        bar.update(1)
        bar.set(3)
    assert "3/3" in out.getvalue()


def test_scan_progress_moves_per_file_within_a_batch(sample_tree: Any, client: Any, tmp_path: Path) -> None:
    root, manifest = sample_tree
    seen: list[tuple[int, int]] = []
    settings = {"metaextract.scan.batch-min-files": 100, "metaextract.scan.batch-max-files": 100,
                "metaextract.progress.worker-interval": 0.001}
    with dask.config.set(settings):
        cat = mx.scan([root], tmp_path / "cat", client=client, progress=lambda done, total: seen.append((done, total)))
    n = len(manifest["files"])
    assert cat.scan_summary["batches"] == 1
    assert seen[-1] == (n, n)
    inside = {d for d, _ in seen if 0 < d < n}
    assert len(inside) >= 2, seen  # files reported while the one batch ran
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never backwards


def test_include_exclude_and_ignore_file(tmp_path: Path) -> None:
    for rel in ("a/x.nc", "a/y.h5", "a/tmp/z.nc", "b/w.nc", "b/skip.nc", "top.tmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "b" / IGNORE_FILE).write_text("# comment\nskip.*\n")

    def found(**kw: Any) -> list[str]:
        return _rel([e.path for e in discover([tmp_path], patterns=PathFilter(**kw))], tmp_path)

    assert found() == ["a/tmp/z.nc", "a/x.nc", "a/y.h5", "b/w.nc", "top.tmp"]  # the ignore file and its names out
    assert found(include=["*.nc"]) == ["a/tmp/z.nc", "a/x.nc", "b/w.nc"]
    assert found(exclude=["tmp", "*.tmp"]) == ["a/x.nc", "a/y.h5", "b/w.nc"]  # a directory excluded is not walked
    assert found(include=["a/*.nc"]) == ["a/tmp/z.nc", "a/x.nc"]  # with a '/': the relative path
    assert found(include=["*.nc"], exclude=["a/tmp/*"]) == ["a/x.nc", "b/w.nc"]
    # a path named explicitly is always scanned; config keys are the defaults
    assert _rel([e.path for e in discover([tmp_path / "top.tmp"], patterns=PathFilter(exclude=["*.tmp"]))],
                tmp_path) == ["top.tmp"]
    with dask.config.set({"metaextract.scan.exclude": ["*.h5", "b"]}):
        assert found() == ["a/tmp/z.nc", "a/x.nc", "top.tmp"]
    with pytest.raises(ValueError, match="metaextract.scan.include must be a list of glob patterns"):
        mx.config.validate({"scan": {"include": [3]}})


def test_scan_include_exclude(sample_tree: Any, client: Any, tmp_path: Path) -> None:
    root, manifest = sample_tree
    cat = mx.scan([root], tmp_path / "cat", client=client, include=["*.dcm"], exclude=["mr_*"])
    want = sorted(e["path"] for e in manifest["files"]
                  if e["path"].endswith(".dcm") and not os.path.basename(e["path"]).startswith("mr_"))
    assert _rel(cat.to_pandas("files")["path"], root) == want and want
    # a second scan with other patterns drops what they leave out
    cat = mx.scan([root], tmp_path / "cat", client=client, include=["CT_*"])
    assert all(os.path.basename(p).startswith("CT_") for p in cat.to_pandas("files")["path"])
    assert cat.scan_summary["removed"] == len(want) - len(cat.to_pandas("files"))
