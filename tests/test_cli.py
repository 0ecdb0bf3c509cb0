"""The metaextract-dask command, through a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXE = [sys.executable, "-m", "metaextract_dask.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_sample_scan_info_end_to_end(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "cat"
    proc = run("sample-data", str(data), "--seed", "3")
    manifest = json.loads((data / "manifest.json").read_text())
    assert f"wrote {len(manifest['files'])} sample files" in proc.stdout

    proc = run("scan", str(data), "-o", str(out), "--workers", "2")
    assert "dask dashboard: http://127.0.0.1:" in proc.stderr
    assert "100%" in proc.stderr  # the progress ran to the end
    assert "\r" not in proc.stderr  # not a terminal: whole log lines, no bar fragments
    n = len(manifest["files"])  # manifest.json is not data: the sample's .metaextract-ignore leaves it out
    assert f"scanned {n} files" in proc.stdout
    assert "errors          1" in proc.stdout and "OSError: 1" in proc.stdout

    info = json.loads(run("info", str(out), "--json").stdout)
    expected: dict[str, int] = {}
    for e in manifest["files"]:
        expected[e["format"]] = expected.get(e["format"], 0) + 1
    assert info["by_format"] == dict(sorted(expected.items()))
    assert info["files"] == n and info["errors"] == 1 and info["complete"]
    text = run("info", str(out)).stdout
    assert "complete" in text and "dicom" in text


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("scan", str(tmp_path / "nope"), "-o", str(tmp_path / "cat"), check=False)
    assert proc.returncode == 2
    assert "input path does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cat").exists()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"x")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run("scan", str(tmp_path / "in.bin"), "-o", str(blocker / "cat"), check=False)
    assert proc.returncode == 2 and "cannot create output directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a non-empty directory that is not a catalog is never overwritten
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    proc = run("scan", str(tmp_path / "in.bin"), "-o", str(other), check=False)
    assert proc.returncode == 2 and "holds no catalog" in proc.stderr
    assert (other / "thesis.tex").read_text() == "keep me"


def test_info_on_non_catalog(tmp_path: Path) -> None:
    proc = run("info", str(tmp_path), check=False)
    assert proc.returncode == 2 and "not a metaextract catalog" in proc.stderr


def test_config_file_flag(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for i in range(5):
        (tmp_path / "d" / f"{i}.bin").write_bytes(b"\x00" * i)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scan:\n  batch-max-files: 1\n  batch-min-files: 1\n")
    proc = run("--config", str(cfg), "scan", str(tmp_path / "d"), "-o", str(tmp_path / "cat"), "--workers", "1",
               "--no-progress")
    assert "5 tasks" in proc.stdout
    assert "%|" not in proc.stderr  # --no-progress


def test_settings_precedence_defaults_env_file_flags(tmp_path: Path) -> None:
    """Defaults < DASK_METAEXTRACT__... environment < --config YAML < CLI flags."""
    import subprocess as sp

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"x")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scan:\n  retries: 4\n")
    env = dict(os.environ, DASK_METAEXTRACT__SCAN__RETRIES="5", DASK_METAEXTRACT__SCAN__SNIFF_BYTES="2048")

    def settings(global_args: tuple[str, ...] = (), scan_args: tuple[str, ...] = ()) -> dict:
        out = tmp_path / f"cat{len(list(tmp_path.iterdir()))}"
        sp.run([*EXE, *global_args, "scan", str(tmp_path / "d"), "-o", str(out), "--workers", "1", "--no-progress",
                *scan_args], env=env, check=True, capture_output=True, timeout=300)
        return json.loads((out / "_manifest.json").read_text())["settings"]

    s = settings()
    assert (s["retries"], s["sniff-bytes"], s["batch-max-files"]) == (5, 2048, 800)  # env over defaults
    s = settings(("--config", str(cfg)), ("--file-timeout=7",))
    assert (s["retries"], s["sniff-bytes"], s["file-timeout"]) == (4, 2048, 7)  # file over env; flag
    s = settings(("--config", str(cfg)), ("--retries=1",))
    assert s["retries"] == 1  # flag over file and env


def test_help_is_plain_text_with_an_example_per_subcommand() -> None:
    from metaextract_dask import __version__
    from metaextract_dask.cli import build_parser

    top = run("--help").stdout
    assert "``" not in top and ":func:" not in top  # no reST leaking
    assert "Metadata catalogs of HDF5, NetCDF, Zarr, FITS and DICOM" in top and "examples:" in top
    assert run("--version").stdout.strip() == f"metaextract-dask {__version__}"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    names = list(sub.choices)  # type: ignore[union-attr]
    assert {"sample-data", "scan", "profile", "info", "report"} <= set(names)
    for name in names:
        text = run(name, "--help").stdout
        assert f"example:\n  metaextract-dask {name}" in text, name
        assert "``" not in text, name
        description = sub.choices[name].description  # type: ignore[union-attr]
        assert description and description.split("\n")[0] in text, name  # shown as written


@pytest.mark.slow
def test_profile_prints_the_dashboard_and_writes_a_performance_report(sample_tree: tuple[Path, dict], tmp_path: Path
                                                                      ) -> None:
    root, manifest = sample_tree
    out = tmp_path / "cat"
    run("scan", str(root), "-o", str(out), "--workers", "2", "--include", "*.nc", "--no-progress")
    report = tmp_path / "perf.html"
    proc = run("profile", str(out), "--workers", "2", "--device", "cpu", "--performance-report", str(report))
    assert "dask dashboard: http://127.0.0.1:" in proc.stderr
    arrays = [a for e in manifest["files"] if e["path"].endswith(".nc") and e["status"] == "ok" for a in e["arrays"]]
    assert f"profiled {len(arrays)} arrays on cpu" in proc.stdout
    assert report.stat().st_size > 10_000 and "Dask Performance Report" in report.read_text()


def test_exact_histogram_flag(sample_tree: tuple[Path, dict], tmp_path: Path) -> None:
    """profile bins float data without a valid range from the sketch by default (hist_exact false, one pass);
    --exact-histogram bins it exactly in a second pass (hist_exact true, passes 2)."""
    from metaextract_dask import open_catalog

    root, _ = sample_tree
    out = tmp_path / "cat"
    run("scan", str(root / "hdf5" / "experiment.h5"), "-o", str(out), "--workers", "1", "--no-progress")
    key = "/instrument/detector/dark_current"
    assert "--exact-histogram" in run("profile", "--help").stdout
    run("profile", str(out), "--workers", "1", "--device", "cpu", "--no-progress")
    row = open_catalog(out).to_pandas("stats").set_index("name").loc[key]
    assert (row["hist_exact"], row["passes"], row["hist_range_source"]) == (False, 1, "data (sketch)")
    assert row["p01"] <= row["p50"] <= row["p99"]
    run("profile", str(out), "--workers", "1", "--device", "cpu", "--no-progress", "--exact-histogram")
    exact = open_catalog(out).to_pandas("stats").set_index("name").loc[key]
    assert (exact["hist_exact"], exact["passes"], exact["hist_range_source"]) == (True, 2, "data (second pass)")
    assert exact["p50"] == row["p50"] and sum(exact["hist_counts"]) == sum(row["hist_counts"])
