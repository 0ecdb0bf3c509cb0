"""A static, self-contained HTML report of a catalog (bokeh figures with inline resources: no network needed).

Sections: files and bytes by format and by directory, the size distribution, errors by type with example
paths, per-array histograms and quantiles from the ``stats`` table (when the catalog is profiled), DICOM
studies and series, FITS sky footprints. ``metaextract-dask report CATALOG -o report.html``,
:meth:`metaextract_dask.Catalog.report` or :func:`write_report`.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["write_report", "build_report", "hist_quantiles", "QUANTILES"]

#: Quantiles shown per profiled array (the stats table's sketch quantiles p01 ... p99; for catalogs profiled
#: before those columns existed, estimated from the histogram).
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_MAX_HISTOGRAMS = 48  # per-array histogram figures; the quantile table lists every array
_MAX_DIRECTORIES = 25
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")


def hist_quantiles(counts: Sequence[int], lo: float, hi: float, qs: Sequence[float] = QUANTILES
                   ) -> list[float | None]:
    """Quantiles of the values a histogram counts (`counts` over equal bins from `lo` to `hi`), interpolated
    linearly within the bin where the cumulative count crosses each quantile; None without counts.

    The error is at most one bin width; values outside the range (under/overflow) are not counted.
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return [None for _ in qs]
    edges = np.linspace(lo, hi, len(c) + 1)
    cum = np.concatenate([[0.0], np.cumsum(c)])
    out: list[float | None] = []
    for q in qs:
        target = q * total
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(max(i, 1), len(c))
        below, inside = cum[i - 1], c[i - 1]
        frac = (target - below) / inside if inside > 0 else 0.0
        out.append(float(edges[i - 1] + frac * (edges[i] - edges[i - 1])))
    return out


def _div(text: str, **kwargs: Any) -> Any:
    from bokeh.models import Div

    return Div(text=text, sizing_mode="stretch_width", **kwargs)


def _table_html(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"


def _bar(title: str, labels: list[str], values: list[float], *, y_label: str, horizontal: bool = False,
         width: int = 520) -> Any:
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(labels))]
    source = ColumnDataSource({"label": labels, "value": values, "color": colors})
    if horizontal:
        fig = figure(title=title, y_range=list(reversed(labels)), width=width,
                     height=max(200, 22 * len(labels) + 60), toolbar_location=None)
        fig.hbar(y="label", right="value", height=0.8, color="color", source=source)
        fig.xaxis.axis_label = y_label
    else:
        fig = figure(title=title, x_range=labels, width=width, height=300, toolbar_location=None)
        fig.vbar(x="label", top="value", width=0.8, color="color", source=source)
        fig.yaxis.axis_label = y_label
        fig.xaxis.major_label_orientation = 0.8 if len(labels) > 6 else 0
    fig.add_tools(HoverTool(tooltips=[("", "@label"), (y_label, "@value{0,0}")]))
    return fig


def _size_histogram(sizes: np.ndarray) -> Any:
    from bokeh.plotting import figure

    sizes = sizes[sizes > 0]
    fig = figure(title="file sizes", width=520, height=300, toolbar_location=None, x_axis_type="log")
    lo, hi = np.log10(sizes.min()), np.log10(sizes.max())
    edges = np.logspace(lo, hi if hi > lo else lo + 1, 31)
    counts, edges = np.histogram(sizes, bins=edges)
    fig.quad(top=counts, bottom=0, left=edges[:-1], right=edges[1:], fill_color=_PALETTE[0], line_color="white")
    fig.xaxis.axis_label = "bytes (log scale)"
    fig.yaxis.axis_label = "files"
    return fig


def _array_histogram(row: dict[str, Any]) -> Any:
    from bokeh.plotting import figure

    counts = np.asarray(row["hist_counts"], dtype=np.int64)
    edges = np.linspace(row["hist_min"], row["hist_max"], len(counts) + 1)
    title = f"{os.path.basename(row['path'])} {row['name']}"
    fig = figure(title=title[-60:], width=300, height=200, toolbar_location=None)
    fig.quad(top=counts, bottom=0, left=edges[:-1], right=edges[1:], fill_color=_PALETTE[2], line_color=None)
    fig.title.text_font_size = "9pt"
    return fig


def _footprints(hdus: pd.DataFrame) -> Any:
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    xs, ys, names = [], [], []
    for path, idx, fp in zip(hdus["path"], hdus["index"], hdus["wcs_footprint"]):
        if fp is None or len(fp) == 0:
            continue
        corners = [list(map(float, c)) for c in fp]
        xs.append([c[0] for c in corners])
        ys.append([c[1] for c in corners])
        names.append(f"{os.path.basename(str(path))} HDU{int(idx)}")
    if not xs:
        return None
    fig = figure(title="FITS sky footprints", width=520, height=400, toolbar_location=None, match_aspect=True)
    source = ColumnDataSource({"xs": xs, "ys": ys, "name": names,
                               "color": [_PALETTE[i % len(_PALETTE)] for i in range(len(xs))]})
    fig.patches("xs", "ys", source=source, fill_alpha=0.3, fill_color="color", line_color="color")
    fig.x_range.flipped = True  # right ascension grows to the east (left on the sky)
    fig.xaxis.axis_label = "RA (deg)"
    fig.yaxis.axis_label = "Dec (deg)"
    fig.add_tools(HoverTool(tooltips=[("HDU", "@name")]))
    return fig


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def build_report(catalog: Any, *, title: str | None = None) -> tuple[Any, int]:
    """The report's bokeh layout and the number of figures in it.

    Parameters
    ----------
    catalog : Catalog or path

    Returns
    -------
    (bokeh layout, int)
    """
    from bokeh.layouts import column, gridplot, row

    from metaextract_dask.catalog import Catalog
    from metaextract_dask.display import human_bytes

    if not isinstance(catalog, Catalog):
        catalog = Catalog(catalog)
    s = catalog.summary(examples=5)
    files = catalog.to_arrow("files").select(["path", "format", "status", "size_bytes"]).to_pandas()
    title = title or f"metaextract catalog {catalog.path}"
    items: list[Any] = []
    figures = 0
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    items.append(_div(f"<h1 style='margin-bottom:0'>{html.escape(title)}</h1>"
                      f"<p>{s['files']:,} files, {human_bytes(s['bytes'])}, {s['arrays']:,} arrays, "
                      f"{s['errors']:,} errors; generated {now}</p>"))

    # files and bytes by format
    fmts = list(s["by_format"])
    items.append(_div("<h2>Files by format</h2>"))
    items.append(row(_bar("files by format", fmts, [s["by_format"][f] for f in fmts], y_label="files"),
                     _bar("bytes by format", fmts, [s["bytes_by_format"][f] for f in fmts], y_label="bytes")))
    figures += 2

    # by directory (the biggest by bytes)
    items.append(_div("<h2>Files by directory</h2>"))
    files["directory"] = [os.path.dirname(p) for p in files["path"]]
    by_dir = files.groupby("directory").agg(files=("path", "size"), bytes=("size_bytes", "sum"))
    by_dir = by_dir.sort_values("bytes", ascending=False).head(_MAX_DIRECTORIES)
    prefix = os.path.commonpath(list(by_dir.index)) if len(by_dir) > 1 else ""
    labels = [os.path.relpath(d, prefix) if prefix else d for d in by_dir.index]
    if prefix:
        items.append(_div(f"<p>relative to <code>{html.escape(prefix)}</code>"
                          f"{' (the largest ' + str(_MAX_DIRECTORIES) + ')' if len(by_dir) == _MAX_DIRECTORIES else ''}"
                          "</p>"))
    items.append(row(_bar("files by directory", labels, by_dir["files"].tolist(), y_label="files", horizontal=True),
                     _bar("bytes by directory", labels, by_dir["bytes"].astype(float).tolist(), y_label="bytes",
                          horizontal=True)))
    figures += 2

    items.append(_div("<h2>Size distribution</h2>"))
    sizes = files["size_bytes"].to_numpy(dtype=np.float64)
    if (sizes > 0).any():
        items.append(_size_histogram(sizes))
        figures += 1
    else:
        items.append(_div("<p>no file with content</p>"))

    # errors with examples
    items.append(_div("<h2>Errors</h2>"))
    if s["error_types"]:
        rows = [[html.escape(t), f"{n:,}", "<br>".join(f"<code>{html.escape(p)}</code>"
                                                        for p in s["error_examples"].get(t, []))]
                for t, n in s["error_types"].items()]
        items.append(_div(_table_html(["error", "files", "examples"], rows)))
    else:
        items.append(_div("<p>no errors</p>"))

    # the profile: quantiles and histograms
    stats = catalog.to_arrow("stats").to_pylist()
    items.append(_div("<h2>Array statistics</h2>"))
    ok = [r for r in stats if r["status"] == "ok" and r.get("hist_counts") and r.get("hist_min") is not None]
    if not stats:
        items.append(_div("<p>not profiled: <code>metaextract-dask profile CATALOG</code> fills the stats table</p>"))
    else:
        qrows = []
        estimated = False
        for r in ok:
            qs = [r.get(f"p{int(q * 100):02d}") for q in QUANTILES]
            if any(q is None for q in qs):  # profiled before the sketch quantile columns
                qs = hist_quantiles(r["hist_counts"], r["hist_min"], r["hist_max"])
                estimated = True
            qrows.append([f"<code>{html.escape(os.path.basename(r['path']))}</code>", html.escape(r["name"]),
                          f"{r['valid_count']:,}", _fmt(r["min"]), *(_fmt(q) for q in qs), _fmt(r["max"]),
                          _fmt(r["mean"]), _fmt(r["std"])])
        statuses = pd.Series([r["status"] for r in stats]).value_counts().to_dict()
        items.append(_div(f"<p>{len(stats):,} arrays: " + ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))
                          + (" (some quantiles estimated from the histograms, within one bin: profiled by an older"
                             " version)" if estimated else " (quantiles within 1 % of the data's order statistics)")
                          + "</p>"))
        items.append(_div(_table_html(["file", "array", "valid", "min", *(f"q{int(q * 100)}" for q in QUANTILES),
                                       "max", "mean", "std"], qrows)))
        hists = [_array_histogram(r) for r in ok[:_MAX_HISTOGRAMS]]
        if hists:
            items.append(gridplot(hists, ncols=3, toolbar_location=None))
            figures += len(hists)

    # DICOM studies and series
    dicom = catalog.to_arrow("dicom").select(["StudyInstanceUID", "SeriesInstanceUID", "Modality",
                                              "SeriesDescription"]).to_pandas()
    if len(dicom):
        items.append(_div("<h2>DICOM</h2>"))
        series = dicom.groupby(["StudyInstanceUID", "SeriesInstanceUID"], dropna=False).agg(
            modality=("Modality", "first"), description=("SeriesDescription", "first"),
            files=("Modality", "size")).reset_index()
        items.append(_div(f"<p>{dicom['StudyInstanceUID'].nunique():,} studies, "
                          f"{dicom['SeriesInstanceUID'].nunique():,} series, {len(dicom):,} files</p>"))
        items.append(_div(_table_html(["study", "series", "modality", "description", "files"],
                                      [[f"<code>{_fmt(r.StudyInstanceUID)}</code>",
                                        f"<code>{_fmt(r.SeriesInstanceUID)}</code>", _fmt(r.modality),
                                        _fmt(r.description), f"{r.files:,}"] for r in series.itertuples()])))
        modality = series.groupby(series["modality"].fillna("?")).size()
        items.append(_bar("series by modality", [str(m) for m in modality.index], modality.tolist(),
                          y_label="series"))
        figures += 1

    # FITS sky footprints
    hdus = catalog.to_arrow("hdus").select(["path", "index", "wcs_footprint"]).to_pandas()
    if len(hdus):
        fig = _footprints(hdus)
        items.append(_div("<h2>FITS sky footprints</h2>"))
        if fig is not None:
            items.append(fig)
            figures += 1
        else:
            items.append(_div("<p>no HDU has a celestial WCS</p>"))
    return column(*items, sizing_mode="stretch_width"), figures


def write_report(catalog: Any, output: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Write the HTML report of `catalog` to `output`: one file, bokeh's JavaScript inlined (viewable offline).

    Parameters
    ----------
    catalog : Catalog or path
    output : path
        The HTML file to write (its directory must exist).
    title : str, optional
        Page title (default: the catalog's path).

    Returns
    -------
    str
        `output`, as a path string.
    """
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    layout, n_figures = build_report(catalog, title=title)
    page = file_html(layout, INLINE, title=title or "metaextract report")
    # the number of figures, for whoever checks that each rendered (the tests, in a browser)
    page = page.replace("<head>", f"<head>\n<meta name=\"metaextract-figures\" content=\"{n_figures}\">", 1)
    out = os.fspath(output)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out
