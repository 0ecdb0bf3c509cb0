"""The HTML report: its numbers come from the catalog, and a real headless Chromium renders every figure
without a script error, from the file alone (no network)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metaextract_dask.report import build_report, hist_quantiles

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def profiled(sample_tree: Any, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sample tree scanned and profiled into a catalog of this module's own."""
    import metaextract_dask as mx

    root, _ = sample_tree
    cat = mx.scan([root], tmp_path_factory.mktemp("report") / "cat", client=client)
    mx.profile(cat, client=client, device="cpu")
    return cat


def _browser() -> Any:
    if CHROMIUM is None or not os.path.exists(CHROMEDRIVER):
        message = ("the report test needs Debian's chromium and chromium-driver (.ci/run installs them as root: "
                   "apt-get install chromium chromium-driver)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                # no network at all: the report must be whole in itself
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager downloads nothing
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


# Every bokeh Figure view of the page, and how many of its canvases have been drawn with a size.
_FIGURES_JS = """
const views = [...Bokeh.index.all_views()].filter(v => v.model.type === 'Figure');
return [views.length, views.filter(v => v.canvas_view && v.canvas_view.bbox.width > 0
                                        && v.canvas_view.bbox.height > 0).length];
"""


def test_hist_quantiles_match_numpy_within_a_bin() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(10, 2, 100_000)
    counts, edges = np.histogram(values, bins=64, range=(values.min(), values.max()))
    qs = hist_quantiles(counts.tolist(), float(edges[0]), float(edges[-1]))
    width = edges[1] - edges[0]
    for q, got in zip((0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), qs):
        assert got is not None and abs(got - np.quantile(values, q)) <= width
    assert hist_quantiles([0, 0], 0.0, 1.0) == [None] * 7
    assert hist_quantiles([0, 4, 0, 0], 0.0, 4.0, [0.5]) == [1.5]  # half-way through the only full bin


def test_report_content_comes_from_the_catalog(profiled: Any, sample_tree: Any, tmp_path: Path) -> None:
    _, manifest = sample_tree
    layout, n_figures = build_report(profiled)
    from bokeh.models import ColumnDataSource, Div
    from bokeh.plotting import figure

    figs = [m for m in layout.references() if isinstance(m, figure)]
    assert len(figs) == n_figures
    by_title = {f.title.text: f for f in figs}
    source = next(r.data_source for r in by_title["files by format"].renderers)
    assert isinstance(source, ColumnDataSource)
    expected: dict[str, int] = {}
    for e in manifest["files"]:
        expected[e["format"]] = expected.get(e["format"], 0) + 1
    assert dict(zip(source.data["label"], source.data["value"])) == expected
    stats = profiled.to_pandas("stats")
    ok = stats[(stats.status == "ok")]
    assert sum(1 for t in by_title if t.endswith(tuple(ok["name"]))) >= 1
    assert n_figures == 5 + len(ok) + 1 + 1  # format x2, directory x2, sizes; histograms; DICOM; FITS
    footprint = by_title["FITS sky footprints"]
    xs = next(r.data_source for r in footprint.renderers).data["xs"]
    hdus = profiled.to_pandas("hdus")
    assert len(xs) == hdus["wcs_footprint"].notna().sum() >= 1
    text = " ".join(m.text for m in layout.references() if isinstance(m, Div))
    assert "truncated.h5" in text and "OSError" in text  # the error row, with its example path
    dicom = profiled.to_pandas("dicom")
    assert f"{dicom.StudyInstanceUID.nunique()} studies, {dicom.SeriesInstanceUID.nunique()} series" in text


@pytest.mark.slow
def test_report_renders_in_headless_chromium(profiled: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "metaextract_dask.cli", "report", profiled.path, "-o", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out}" in proc.stdout
    page = out.read_text()
    n_figures = int(re.search(r'name="metaextract-figures" content="(\d+)"', page).group(1))
    assert n_figures >= 8
    assert not re.search(r"<script[^>]+src=", page)  # every script inline: nothing to fetch
    driver = _browser()
    try:
        driver.get(out.as_uri())
        deadline = time.monotonic() + 60
        rendered = (0, 0)
        while time.monotonic() < deadline:
            ready = driver.execute_script("return typeof Bokeh !== 'undefined' && Bokeh.index != null "
                                          "&& [...Bokeh.index.all_views()].length > 0")
            if ready:
                rendered = tuple(driver.execute_script(_FIGURES_JS))
                if rendered == (n_figures, n_figures):
                    break
            time.sleep(0.25)
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    assert rendered == (n_figures, n_figures), f"figures rendered / in the page: {rendered}, want {n_figures}"
    severe = [e for e in logs if e.get("level") == "SEVERE"]
    assert severe == [], severe
    assert any("document idle" in e.get("message", "") for e in logs)  # bokeh did finish its work


def test_report_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "metaextract_dask.cli", "report", str(tmp_path / "nope"),
                           "-o", str(tmp_path / "r.html")], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2
    assert "not a metaextract catalog" in proc.stderr and "Traceback" not in proc.stderr


def test_report_of_an_empty_catalog(tmp_path: Path) -> None:
    import warnings

    import metaextract_dask as mx

    (tmp_path / "in").mkdir()
    cat = mx.scan(tmp_path / "in", tmp_path / "cat")  # nothing to read: no cluster
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layout, n_figures = build_report(cat)
    assert n_figures == 4  # by format and by directory (empty); no size, array, DICOM or FITS figure
    path = cat.report(tmp_path / "r.html")
    assert 'content="4"' in Path(path).read_text() and "no file with content" in Path(path).read_text()
