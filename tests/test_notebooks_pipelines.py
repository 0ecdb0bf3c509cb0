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


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("METAEXTRACT_NOTEBOOK_DIR", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: c.get("outputs", []) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    assert all(o.get("output_type") != "error" for outs in outputs.values() for o in outs)
    text = "\n".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for outs in outputs.values()
                     for o in outs)
    assert "dashboard: http://127.0.0.1:" in text
    assert "SYNTH-CCD-A" in text  # the HIERARCH keyword came out of duckdb's JSON query
    assert "truncated" in text  # the error row is shown
    assert "tas histogram 150.0 .. 350.0" in text  # the profile section: range from the CF valid_range


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
    expected = pd.Series([e["format"] for e in manifest["files"]] + ["binary"]).value_counts()
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
