"""HTML summaries for Jupyter (``_repr_html_``) of a catalog, a scan summary and a profile result.

Plain HTML tables, no scripts: they render the same in JupyterLab, classic notebooks, VS Code and nbviewer.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = ["catalog_html", "scan_summary_html", "profile_html", "dashboard_link", "human_bytes"]

_STYLE = "border-collapse:collapse;margin:2px 0 6px 0"
_CELL = "padding:1px 8px;text-align:left"


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as ``du --si``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"  # pragma: no cover  (the loop returns)


def dashboard_link() -> str | None:
    """The dashboard of the current dask client, while one is live (None otherwise)."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    if getattr(client, "status", "") != "running":
        return None
    try:
        return str(client.dashboard_link)
    except Exception:  # a client without a dashboard (no bokeh on the scheduler)
        return None


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th style='{_CELL}'>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='{_STYLE}'><tr>{head}</tr>{body}</table>"


def _dashboard_line() -> str:
    link = dashboard_link()
    if link is None:
        return ""
    return f"<div>dask dashboard: <a href='{_e(link)}' target='_blank'>{_e(link)}</a></div>"


def _errors_table(error_types: Mapping[str, int], examples: Mapping[str, list[str]] | None) -> str:
    if not error_types:
        return "<div>no errors</div>"
    rows = [[_e(t), f"{n:,}", "<br>".join(f"<code>{_e(p)}</code>" for p in (examples or {}).get(t, []))]
            for t, n in sorted(error_types.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return _table(["error", "files", "examples"], rows)


def scan_summary_html(summary: Mapping[str, Any]) -> str:
    """A scan summary (:class:`~metaextract_dask.scan.ScanSummary`) as an HTML block."""
    s = summary
    line = (f"{s.get('files', 0):,} files ({human_bytes(s.get('bytes', 0))}) in {s.get('seconds', 0.0):.1f} s: "
            f"{s.get('read', 0):,} read ({s.get('files_per_second', 0.0):,.0f} files/s), "
            f"{s.get('unchanged', 0):,} unchanged, {s.get('reused', 0):,} reused, {s.get('removed', 0):,} removed")
    if s.get("read"):
        line += f"; {s.get('batches', 0)} tasks on {s.get('threads', 0)} worker threads"
        if s.get("startup_seconds", 0) >= 0.05:
            line += f", cluster start {s['startup_seconds']:.1f} s"
    formats = _table(["format", "files"], [[_e(k), f"{v:,}"] for k, v in sorted(s.get("by_format", {}).items())])
    special = s.get("special") or {}
    extra = ""
    if special:
        extra += "<div>special files (not read): " + _e(", ".join(f"{k} {n}" for k, n in sorted(special.items())))
        extra += "</div>"
    if s.get("kept"):
        extra += f"<div>kept {s['kept']:,} rows below directories that could not be listed</div>"
    if s.get("retries"):
        extra += f"<div>{s['retries']:,} retries after transient I/O errors ({s.get('retried_files', 0)} files)</div>"
    errors = _errors_table(s.get("error_types", {}), s.get("error_examples"))
    return (f"<div><b>metaextract scan</b><div>{_e(line)}</div>{formats}{extra}{errors}"
            f"{_dashboard_line()}</div>")


def catalog_html(catalog: Any) -> str:
    """A :class:`~metaextract_dask.catalog.Catalog` as an HTML block: files and bytes by format, errors by type
    with example paths, tables, the last scan's timing, whether it is profiled, the live dashboard."""
    s = catalog.summary()
    manifest = catalog.manifest
    state = "complete" if manifest.get("complete") else "INCOMPLETE (a scan is running or was interrupted)"
    rows = [[_e(fmt), f"{n:,}", human_bytes(s["bytes_by_format"].get(fmt, 0))] for fmt, n in s["by_format"].items()]
    rows.append(["<b>total</b>", f"<b>{s['files']:,}</b>", f"<b>{human_bytes(s['bytes'])}</b>"])
    tables = ", ".join(f"{name} {n:,}" for name, n in s["rows"].items() if n)
    scan = manifest.get("summary") or {}
    timing = ""
    if scan:
        timing = (f"<div>last scan: {scan.get('read', 0):,} files read in {scan.get('seconds', 0.0):.1f} s, "
                  f"{scan.get('unchanged', 0):,} unchanged, {scan.get('removed', 0):,} removed</div>")
    profile = manifest.get("tables", {}).get("stats")
    if profile:
        prof = (f"<div>profiled: {profile.get('arrays', 0):,} arrays ({_e(profile.get('strategy'))}, "
                f"{_e(profile.get('device'))}) in {profile.get('seconds', 0.0):.1f} s</div>")
    else:
        prof = "<div>not profiled (<code>mx.profile(catalog)</code> fills the stats table)</div>"
    return (f"<div><b>metaextract catalog</b> <code>{_e(catalog.path)}</code> ({_e(state)})"
            f"{_table(['format', 'files', 'bytes'], rows)}<div>rows: {_e(tables)}</div>{timing}{prof}"
            f"{_errors_table(s['error_types'], s['error_examples'])}{_dashboard_line()}</div>")


def profile_html(result: Any) -> str:
    """A profile result (:class:`~metaextract_dask.profiler.ProfileResult`) as an HTML block above its table."""
    s = result.summary()
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(s["status"].items()))
    head = (f"<div><b>metaextract profile</b>: {s['arrays']:,} arrays ({_e(counts)}) on {_e(s['device'])}, "
            f"{_e(s['strategy'])}, {s['elements']:,} elements read")
    if s.get("seconds") is not None:
        head += f" in {s['seconds']:.1f} s"
    head += "</div>"
    formats = _table(["format", "arrays", "errors", "elements"],
                     [[_e(f), f"{v['arrays']:,}", f"{v['errors']:,}", f"{v['elements']:,}"]
                      for f, v in s["by_format"].items()])
    errors = _errors_table(s["error_types"], s["error_examples"])
    return f"<div>{head}{formats}{errors}{_dashboard_line()}</div>"
