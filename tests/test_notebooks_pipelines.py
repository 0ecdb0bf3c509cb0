"""The notebooks run top to bottom, and the pipelines produce what their config asks for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


NOTEBOOKS = ROOT / "notebooks"


def _execute(name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """Run one notebook top to bottom (as committed: no outputs); its outputs, and their text joined."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:  # committed without outputs
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs committed"
    monkeypatch.setenv("METAEXTRACT_NOTEBOOK_DIR", str(workdir))
    # the kernel imports this checkout, whatever the cwd (the kernel runs in `workdir`)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0].get("traceback") if errors else None
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "\r" not in stderr and "Warning" not in stderr, stderr  # no tqdm fragments, no IProgress warning
    text = "\n".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in outputs)
    text += "\n".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    return outputs, text


def _images(outputs: list[Any]) -> int:
    return sum(1 for o in outputs if "image/png" in o.get("data", {}))


def test_notebooks_are_the_expected_set() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["01-quickstart.ipynb", "02-profiles.ipynb",
                                                                "03-dicom.ipynb"]


@pytest.mark.slow
def test_quickstart_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xarray as xr

    outputs, text = _execute("01-quickstart.ipynb", tmp_path, monkeypatch)
    assert "dashboard: http://127.0.0.1:" in text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # progress widget
    assert "metaextract catalog" in text and "metaextract scan" in text  # the HTML reprs
    assert "SYNTH-CCD-A" in text  # the HIERARCH keyword came out of duckdb's JSON query
    assert "truncated" in text  # the error row is shown
    assert _images(outputs) >= 1  # the preview image and the histogram
    with xr.open_dataset(tmp_path / "data" / "netcdf" / "climate_cf.nc") as ds:  # xarray's own decoding
        assert f"tas mean {round(float(ds['tas'].mean()), 3)}" in text


@pytest.mark.slow
def test_profiles_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, text = _execute("02-profiles.ipynb", tmp_path, monkeypatch)
    assert "metaextract profile" in text  # the result's HTML summary
    assert "tas histogram 150.0 .. 350.0 from valid_range" in text  # the range from the CF valid_range
    assert _images(outputs) >= 1
    assert "chunk-target 16KiB -> dask" in text
    assert "auto resolves to" in text
    # the GPU switch: a clear error without a GPU, a GPU profile with one
    assert ("device=gpu: device 'gpu' asked for, but cupy cannot see a CUDA device" in text
            or "profiled on the GPU:" in text)


@pytest.mark.slow
def test_dicom_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    outputs, text = _execute("03-dicom.ipynb", tmp_path, monkeypatch)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((tmp_path / "data").rglob("*.dcm"))]
    studies = {h.StudyInstanceUID for h in headers}
    series: dict[str, list[Any]] = {}
    for h in headers:
        series.setdefault(h.SeriesInstanceUID, []).append(h)
    assert f"{len(studies)} studies, {len(series)} series" in text
    largest = max(series.values(), key=len)
    assert f"('slice', 'row', 'column') ({len(largest)}, {largest[0].Rows}, {largest[0].Columns})" in text
    assert _images(outputs) >= 1
    # the de-identification cells: copies of all but the flagged secondary capture, no leak, a safe catalog
    assert f"de-identified {len(headers) - 1} of {len(headers)} files" in text
    assert "no leak" in text and "FAKE-0002" in text and "ANON^" in text
    copies = sorted((tmp_path / "deid").rglob("*.dcm"))
    assert len(copies) == len(headers) - 1
    assert all(pydicom.dcmread(p, stop_before_pixels=True).PatientIdentityRemoved == "YES" for p in copies)


@pytest.mark.slow
@pytest.mark.parametrize("sink", ["directory", "sqlite"])
def test_catalog_tree_pipeline(sample_tree: Any, tmp_path: Path, sink: str) -> None:
    root, manifest = sample_tree
    out = tmp_path / "cat" if sink == "directory" else f"sqlite:///{tmp_path / 'cat.db'}"  # an SQL catalog too
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "catalog_tree.py"), str(ROOT / "conf" / "catalog_tree.yaml"),
         "--set", f"pipeline.inputs=[{root}]", "--set", f"pipeline.output={out}",
         "--set", f"pipeline.report={report}", "--set", "metaextract.scan.batch-max-files=3",
         "--set", "pipeline.profile={strategy: full, device: cpu}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    by_format = pd.read_parquet(report / "by_format.parquet")
    expected = pd.Series([e["format"] for e in manifest["files"]]).value_counts()
    assert by_format["files"].to_dict() == expected.to_dict()
    assert by_format.loc["hdf5", "errors"] == 1 and by_format["errors"].sum() == 1
    arrays = {f: sum(len(e["arrays"]) for e in manifest["files"] if e["format"] == f) for f in expected.index}
    assert by_format["arrays"].to_dict() == arrays
    by_dir = pd.read_parquet(report / "by_directory.parquet")
    assert by_dir.loc[str(root / "dicom" / "ct_series"), "files"] == 5
    assert by_dir["bytes"].sum() == by_format["bytes"].sum()
    from metaextract_dask import open_catalog

    assert open_catalog(out).manifest["summary"]["batches"] >= 6  # the metaextract section was applied
    # pipeline.profile: the stats table of every numeric array, summarised per format
    prof = pd.read_parquet(report / "profile_by_format.parquet")
    numeric = {f: [a for e in manifest["files"] if e["format"] == f for a in e["arrays"] if a.get("stats")]
               for f in expected.index}
    numeric = {f: arrs for f, arrs in numeric.items() if arrs}
    assert prof["arrays"].to_dict() == {f: len(arrs) for f, arrs in numeric.items()}
    assert prof["errors"].sum() == 0
    assert prof["elements"].to_dict() == {f: sum(int(np.prod(a["shape"])) for a in arrs)
                                          for f, arrs in numeric.items()}


def _job_folders(tmp_path: Path) -> tuple[Path, Path]:
    """``jobs/`` (with the local cluster preset on a free dashboard port) and an unrelated working folder."""
    import yaml

    jobs, elsewhere = tmp_path / "jobs", tmp_path / "elsewhere"
    (jobs / "cluster").mkdir(parents=True)
    elsewhere.mkdir()
    preset = yaml.safe_load((ROOT / "conf" / "cluster" / "local.yaml").read_text())
    (jobs / "cluster" / "local.yaml").write_text(yaml.safe_dump({**preset, "dashboard-address": "127.0.0.1:0"}))
    return jobs, elsewhere


def _pipeline(name: str, job: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # run from another folder than the job's: relative paths must follow the job file, not the cwd
    return subprocess.run([sys.executable, "-m", f"pipelines.{name}", "--config", str(job), *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.slow
def test_catalog_profile_report_pipelines_end_to_end(sample_tree: Any, tmp_path: Path) -> None:
    import yaml

    from metaextract_dask import open_catalog

    root, manifest = sample_tree
    jobs, elsewhere = _job_folders(tmp_path)
    os.symlink(root, tmp_path / "data")
    catalog_job = yaml.safe_load((ROOT / "conf" / "catalog.yaml").read_text())
    catalog_job.update(inputs=["../data/"], output="../out/cat", exclude=["misfits"])
    (jobs / "catalog.yaml").write_text(yaml.safe_dump(catalog_job))
    proc = _pipeline("catalog", jobs / "catalog.yaml", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "dask dashboard: http://127.0.0.1:" in proc.stdout
    kept = [e for e in manifest["files"] if not e["path"].startswith("misfits/")]
    assert f"scanned {len(kept)} files" in proc.stdout and f"catalog: {tmp_path / 'out' / 'cat'}" in proc.stdout
    cat = open_catalog(tmp_path / "out" / "cat")
    assert len(cat.to_pandas("files")) == len(kept)

    profile_job = yaml.safe_load((ROOT / "conf" / "profile.yaml").read_text())
    profile_job.update(catalog="../out/cat", device="cpu", **{"performance-report": "../out/perf.html"})
    (jobs / "profile.yaml").write_text(yaml.safe_dump(profile_job))
    proc = _pipeline("profile", jobs / "profile.yaml", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    numeric = sum(1 for e in kept for a in e["arrays"] if a.get("stats"))
    stats = cat.to_pandas("stats")
    assert (stats.status == "ok").sum() == numeric
    assert f"profiled {len(stats)} arrays (ok {numeric}" in proc.stdout and "dask dashboard:" in proc.stdout
    assert (tmp_path / "out" / "perf.html").stat().st_size > 10_000  # Dask's performance report

    report_job = yaml.safe_load((ROOT / "conf" / "report.yaml").read_text())
    report_job.update(catalog="../out/cat", output="../out/html/report.html", title="pipeline test")
    (jobs / "report.yaml").write_text(yaml.safe_dump(report_job))
    proc = _pipeline("report", jobs / "report.yaml", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "out" / "html" / "report.html").read_text()
    assert "<title>pipeline test</title>" in page and f"{len(stats)} arrays profiled" in proc.stdout


@pytest.mark.slow
def test_deid_pipeline_end_to_end(sample_tree: Any, tmp_path: Path) -> None:
    import pydicom
    import yaml

    from metaextract_dask.deid import keygen

    root, _ = sample_tree
    jobs, elsewhere = _job_folders(tmp_path)
    os.symlink(root / "dicom", tmp_path / "dicom")
    keygen(tmp_path / "deid.key")
    job = yaml.safe_load((ROOT / "conf" / "deid.yaml").read_text())
    job.update(inputs=["../dicom"], output="../out", **{"key-file": "../deid.key", "map-file": "../map.parquet",
                                                         "catalog": "../deid-cat"})
    (jobs / "deid.yaml").write_text(yaml.safe_dump(job))
    proc = _pipeline("deid", jobs / "deid.yaml", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "dask dashboard: http://127.0.0.1:" in proc.stdout and "de-identified 6 of 7 files" in proc.stdout
    assert "no leak" in proc.stdout and (tmp_path / "map.parquet").exists()
    ds = pydicom.dcmread(tmp_path / "out" / "mr_brain.dcm")
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED" and ds.PatientID != "FAKE-0002"
    assert len(open_catalog_rows(tmp_path / "deid-cat")) == 6
    # A leak put into an output is found: exit status 1.
    (tmp_path / "out" / "leak.txt").write_text("FAKE-0002")
    proc = _pipeline("deid", jobs / "deid.yaml", cwd=elsewhere)
    assert proc.returncode == 1 and "1 leaks" in proc.stdout, proc.stdout
    job["key-file"] = "../missing.key"
    (jobs / "deid.yaml").write_text(yaml.safe_dump(job))
    proc = _pipeline("deid", jobs / "deid.yaml", cwd=elsewhere)
    assert proc.returncode == 2 and "missing.key" in proc.stderr and "Traceback" not in proc.stderr


def open_catalog_rows(path: Path) -> Any:
    from metaextract_dask import open_catalog

    return open_catalog(path).to_pandas("dicom")


@pytest.mark.parametrize("job, message", [
    ({"input": ["d"], "output": "c"}, "unknown key 'input' (did you mean 'inputs'?)"),
    ({"output": "c"}, "missing key 'inputs'"),
    ({"inputs": "d", "output": "c"}, "inputs must be a list, not 'd'"),
    ({"inputs": ["d"], "output": "c", "full": "yes please"}, "full must be true/false"),
    ({"inputs": ["nowhere"], "output": "c"}, "inputs: nowhere does not exist"),
    ({"inputs": ["d"], "output": "c", "cluster": {"worker": 2}}, "unknown key 'worker' (did you mean 'workers'?)"),
    ({"inputs": ["d"], "output": "c", "cluster": "missing.yaml"}, "cluster: missing.yaml does not exist"),
    ({"inputs": ["d"], "output": "c", "metaextract": {"scan": {"retries": -1}}}, "metaextract.scan.retries must be"),
    ({"inputs": ["d"], "output": "c", "device": "tpu"}, "device must be one of auto, cpu, gpu"),
])
def test_pipeline_job_mistakes_are_one_line_errors(tmp_path: Path, job: dict[str, Any], message: str) -> None:
    import yaml

    (tmp_path / "d").mkdir()
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    proc = _pipeline("catalog", tmp_path / "job.yaml", cwd=ROOT)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()  # found before anything ran


def test_pipeline_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("inputs: [d\noutput: c\n")
    proc = _pipeline("catalog", tmp_path / "job.yaml", cwd=ROOT)
    assert proc.returncode == 2 and "is not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
